"""Functions whose C signature is known to use only integer registers.

``Interceptor.replaceFast`` needs a replacement that takes and passes on the
arguments exactly. The fast tier's replacement forwards the integer argument
registers, which is exact for functions whose arguments are all integers or
pointers (at most four, the smallest register count of the ABIs Frida runs
on) and whose result is an integer, a pointer or void. Anything else is
hooked with ``Interceptor.attach`` instead.
"""

from __future__ import annotations

import re

from instr.probes.ir import FunctionPoint, Probe

# name -> number of arguments (libc, POSIX, C++ allocation operators)
INT_SIGNATURES: dict[str, int] = {
    "malloc": 1,
    "free": 1,
    "calloc": 2,
    "realloc": 2,
    "reallocarray": 3,
    "posix_memalign": 3,
    "aligned_alloc": 2,
    "memalign": 2,
    "valloc": 1,
    "pvalloc": 1,
    "malloc_usable_size": 1,
    "_Znwm": 1,
    "_Znam": 1,
    "_ZdlPv": 1,
    "_ZdaPv": 1,
    "_ZdlPvm": 2,
    "_ZdaPvm": 2,
    "read": 3,
    "write": 3,
    "pread64": 4,
    "pwrite64": 4,
    "close": 1,
    "dup": 1,
    "dup2": 2,
    "lseek": 3,
    "fsync": 1,
    "munmap": 2,
    "mprotect": 3,
    "madvise": 3,
    "brk": 1,
    "sbrk": 1,
    "strlen": 1,
    "strnlen": 2,
    "strcmp": 2,
    "strncmp": 3,
    "strchr": 2,
    "strrchr": 2,
    "strdup": 1,
    "strndup": 2,
    "memcpy": 3,
    "memmove": 3,
    "memset": 3,
    "memcmp": 3,
    "memchr": 3,
    "getpid": 0,
    "gettid": 0,
    "socket": 3,
    "connect": 3,
    "accept": 3,
    "bind": 3,
    "listen": 2,
    "send": 4,
    "recv": 4,
    "pthread_mutex_lock": 1,
    "pthread_mutex_unlock": 1,
    "pthread_mutex_trylock": 1,
    "pthread_cond_signal": 1,
    "pthread_cond_broadcast": 1,
    "pthread_cond_wait": 2,
    "fopen": 2,
    "fclose": 1,
    "fflush": 1,
    "fwrite": 4,
    "fread": 4,
    "fputs": 2,
    "puts": 1,
}
MAX_REPLACE_ARGS = 4
_GLOB = re.compile(r"[*?\[]")


def replace_ok(probe: Probe) -> bool:
    """Whether the fast tier may replace this probe's function (replaceFast)."""
    point = probe.point
    if not isinstance(point, FunctionPoint) or _GLOB.search(point.symbol):
        return False
    arity = INT_SIGNATURES.get(point.symbol)
    if arity is None or arity > MAX_REPLACE_ARGS:
        return False
    args = [c.index for ph in ("entry", "exit") for c in probe.captures(ph) if c.src == "arg"]
    return all(i < arity for i in args)
