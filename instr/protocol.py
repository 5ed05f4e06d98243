"""The wire protocol between the host and the agent, version 4.

This module and ``agents/src/protocol.ts`` are the two halves of one contract;
change both together and bump ``PROTOCOL_VERSION`` when the layout changes.

Control plane: Frida RPC (``hello``, ``configure``, ``flush``, ``snapshot``,
``dispose``, ``symbolize``).  Data plane: ``send(envelope, data)`` where
``envelope`` is a small JSON object with ``v`` (protocol version) and ``type``,
and ``data`` carries binary records for ``batch`` messages and aggregation
table rows for ``aggs`` messages (decoded by ``instr.aggregate.decode``).

Binary record layout (little-endian, every record 8-byte aligned)::

    offset size field
    0      2    size    total record size in bytes, header included
    2      1    phase   0 = entry, 1 = exit
    3      1    flags   FLAG_* bits
    4      4    probe   probe id (from the plan)
    8      4    site    site id (one probe glob may arm many functions)
    12     4    tid     thread id
    16     8    ts      monotonic timestamp, nanoseconds
    24     ...  slots, one per capture of this phase, in plan order

Slots:

* scalar captures (integers, pointers, bool, retval, caller, duration) take
  8 bytes holding the raw 64-bit value; the host applies width and sign;
* ``cstr`` and ``bytes`` take a 4-byte length, a 4-byte status (``STATUS_*``)
  and the bytes, padded to a multiple of 8;
* ``backtrace`` takes a 4-byte frame count, 4 bytes of padding and one 8-byte
  return address per frame.
"""

from __future__ import annotations

import struct
from typing import Final, Literal

# 2: credit-based flow control; 3: aggregations (plan, snapshot, aggs); 4: fds message
PROTOCOL_VERSION: Final = 4

HEADER: Final = struct.Struct("<HBBIIIQ")
HEADER_SIZE: Final = HEADER.size  # 24
SLOT: Final = struct.Struct("<Q")
VAR_HEADER: Final = struct.Struct("<II")  # length, status

PHASE_ENTRY: Final = 0
PHASE_EXIT: Final = 1
PHASE_NAMES: Final = ("entry", "exit")

# The exit record of a call whose entry was not seen (attached mid-call):
# duration is unknown and reported as None.
FLAG_NO_ENTRY: Final = 0x01

STATUS_OK: Final = 0
STATUS_TRUNCATED: Final = 1  # longer than the capture's max; the prefix is kept
STATUS_NULL: Final = 2  # the pointer was NULL
STATUS_UNREADABLE: Final = 3  # reading the memory faulted

MessageType = Literal[
    "batch",  # binary records; fields: seq, records, drops (cumulative per probe id)
    "status",  # per-probe arming result; fields: probe, state, reason, sites
    "sites",  # newly armed functions; fields: probe, sites=[{site, address, module, symbol}]
    "symbols",  # address -> [module, symbol, offset]; fields: map
    "modules",  # modules loaded after configure; fields: loaded=[{name, base, size, path}]
    "error",  # an exception inside the agent; fields: probe (or None), message, stack
    "ending",  # the target is ending; fields: reason, code, signal, address, symbol, token
    "aggs",  # aggregation snapshot; fields: seq, ts, final, execname, tables, strings, stacks
    # syscall monitor: fields: seq, counters=[[nr, calls, errors, ticks]], drops, head,
    # tick_ns, clock=[ticks, monotonic ns]; data: records (instr/syscalls/records.py)
    "syscalls",
    # the outcome of separating the program's fd table at its next hooked call
    # (agents/src/syscalls/fdtable.ts); fields: separate, reason (when not), closed
    "fds",
]

ProbeState = Literal["armed", "pending", "failed"]
EndingReason = Literal["exit", "exec", "crash", "detach"]


def pad8(n: int) -> int:
    """Round ``n`` up to the next multiple of 8."""
    return (n + 7) & ~7


def credit(seq: int) -> dict[str, object]:
    """The message the host posts when it has finished with batch ``seq``.

    The agent keeps at most a few batches unacknowledged; without credit it stops
    draining and the in-target buffer's ``on_full`` policy applies (block or drop).
    """
    return {"type": "credit", "seq": seq}


def ack(token: int) -> dict[str, object]:
    """The message the host posts to release an agent blocked in a flush."""
    return {"type": "ack", "token": token}
