"""What runs in the child of ``instr syscalls`` on a static program: install
the seccomp filter, then exec the program. A script run by a fresh
interpreter (``python -I -S seccomp_child.py ...``, see ``seccomp.spawn``),
not code after ``fork()`` in instr's process, which has Frida's threads: it
imports the standard library only.

    python -I -S seccomp_child.py ARCH REPORT_FD FILTER_HEX PATH ARGV0 [ARGS...]

On failure it writes ``STEP:ERRNO`` to REPORT_FD and exits with 127.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import struct
import sys

SECCOMP_SET_MODE_FILTER = 1
FLAG_NEW_LISTENER = 1 << 3
FLAG_WAIT_KILLABLE_RECV = 1 << 5  # Linux 6.0: once received, only SIGKILL interrupts
PR_SET_NO_NEW_PRIVS = 38
SYS_SECCOMP = {"x86_64": 317, "arm64": 277}


def install(code: bytes, arch: str) -> None:
    """seccomp(SET_MODE_FILTER, NEW_LISTENER) with the packed BPF ``code``.
    With CAP_SYS_ADMIN (root) no_new_privs is not set, so setuid programs the
    target runs behave as without instr; without it (EACCES) it is set first."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    raw = ctypes.create_string_buffer(code, len(code))
    fprog = ctypes.create_string_buffer(16)  # struct sock_fprog {u16 len; filter *ptr}
    struct.pack_into("<HxxxxxxQ", fprog, 0, len(code) // 8, ctypes.addressof(raw))
    flags = FLAG_NEW_LISTENER | FLAG_WAIT_KILLABLE_RECV
    nnp = False
    while True:
        r = libc.syscall(
            ctypes.c_long(SYS_SECCOMP[arch]),
            ctypes.c_long(SECCOMP_SET_MODE_FILTER),
            ctypes.c_long(flags),
            ctypes.c_void_p(ctypes.addressof(fprog)),
        )
        if r >= 0:
            return
        e = ctypes.get_errno()
        if e == errno.EINVAL and flags & FLAG_WAIT_KILLABLE_RECV:
            flags &= ~FLAG_WAIT_KILLABLE_RECV  # Linux < 6.0
        elif e == errno.EACCES and not nnp:
            if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
            nnp = True
        else:
            raise OSError(e, os.strerror(e))


def main(args: list[str]) -> None:
    arch, report, code, path, argv = (
        args[0],
        int(args[1]),
        bytes.fromhex(args[2]),
        args[3],
        args[4:],
    )
    step = "seccomp(SECCOMP_SET_MODE_FILTER)"
    try:
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):  # Python ignores them; exec keeps that
            signal.signal(sig, signal.SIG_DFL)
        install(code, arch)
        # From here every selected call waits for instr; execve always does.
        step = "execve"
        os.execve(path, argv, os.environ)
    except OSError as e:
        os.write(report, f"{step}:{e.errno}".encode())
    os._exit(127)


if __name__ == "__main__":
    main(sys.argv[1:])
