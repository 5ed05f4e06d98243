"""The fast tier's runtime and generated code, compiled with gcc and run by 4
threads outside Frida: exact totals with the x86-64 atomics and with the
portable ones (the path other architectures take), decoded by the host's
decoder. GumInvocationContext and the glib calls are small stand-ins here;
in the target they are Frida's."""

from __future__ import annotations

import shutil
import struct
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from test_llquantize import dtrace_llq_bucket

from instr.aggregate.decode import AggDecoder, quantize_bucket
from instr.aggregate.llq import bucket as llq_bucket
from instr.ctier.cast import unit
from instr.ctier.emit import FUNC_CODES, is_signed, probe_source, runtime_source
from instr.events import RunContext
from instr.probes import load_text

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")

THREADS, N = 4, 20000

SET = """
version: 1
sets:
  s:
    probes:
      - function: "x!f"
        capture: {a: arg0:long, r: retval:long}
        where: "a != 7"
        aggregate:
          n: count() by caller
          s: sum(a)
          lo: min(a)
          hi: max(a)
          sd: stddev(a)
          q: quantize(a)
          lq: lquantize(a, 0, 100, 10)
          llq: llquantize(a, 4, 1, 2, 16)
          rs: sum(r) by a
"""

SHIM_GLIB = r"""
#include <stdint.h>
#include <stddef.h>
typedef int gint; typedef unsigned int guint; typedef int gboolean;
typedef int8_t gint8; typedef uint8_t guint8; typedef int16_t gint16; typedef uint16_t guint16;
typedef int32_t gint32; typedef uint32_t guint32; typedef int64_t gint64; typedef uint64_t guint64;
typedef size_t gsize; typedef ptrdiff_t gssize; typedef void * gpointer;
#define GSIZE_TO_POINTER(s) ((gpointer) (gsize) (s))
#define GPOINTER_TO_SIZE(p) ((gsize) (p))
static inline gint g_atomic_int_add (volatile gint * p, gint v)
{ return __atomic_fetch_add (p, v, __ATOMIC_SEQ_CST); }
static inline gssize g_atomic_pointer_add (volatile void * p, gssize v)
{ return __atomic_fetch_add ((volatile gssize *) p, v, __ATOMIC_SEQ_CST); }
"""

SHIM_TLS = r"""
#include <pthread.h>
typedef pthread_key_t GumTlsKey;
static inline GumTlsKey gum_tls_key_new (void) { pthread_key_t k; pthread_key_create (&k, 0); return k; }
static inline void * gum_tls_key_get_value (GumTlsKey k) { return pthread_getspecific (k); }
static inline void gum_tls_key_set_value (GumTlsKey k, void * v) { pthread_setspecific (k, v); }
"""

SHIM_INTERCEPTOR = r"""
#ifndef SHIM_IC
#define SHIM_IC
#include <stdint.h>
typedef struct { uint64_t args[8]; uint64_t retval; uint64_t ra; void * fdata; uint64_t inv[32]; }
    GumInvocationContext;
#define gum_invocation_context_get_nth_argument(ic, n) ((void *) (ic)->args[n])
#define gum_invocation_context_get_return_value(ic) ((void *) (ic)->retval)
#define gum_invocation_context_get_return_address(ic) ((void *) (ic)->ra)
#define gum_invocation_context_get_listener_function_data(ic) ((ic)->fdata)
#define gum_invocation_context_get_listener_invocation_data(ic, size) ((void *) (ic)->inv)
#endif
"""


def _cap(max_keys: int, nkeys: int) -> int:
    if nkeys == 0:
        return 1
    c = 1
    while c < 2 * max_keys:
        c *= 2
    return c


def harness(table, fns) -> str:
    (probe,) = table.probes.values()
    decls, inits, dumps = [], [], []
    for a in probe.aggregations:
        nk, nv = len(a.keys), a.value_words()
        cap = _cap(a.max_keys, nk)
        size = 64 + cap * (1 + nk + nv) * 8
        signed = 0
        if a.arg is not None:
            signed = int(is_signed(probe.capture_ref(a.arg)[2]))
        low, high, step = a.lquantize or (0, 0, 1)
        lq_n = (high - low + step - 1) // step if a.lquantize else 0
        lq_high = 0
        if a.llquantize is not None:  # as agents/src/aggregate/agg.ts writes it
            low, lq_n, lq_high, step = a.llquantize
        decls.append(f"unsigned char agg_t{a.id}[{size}] __attribute__ ((aligned (64)));")
        inits.append(
            f"init (agg_t{a.id}, {nk}, {nv}, {cap}, {a.max_keys}, {FUNC_CODES[a.func]}, "
            f"{signed}, {low}, {step}, {lq_n}, {lq_high});"
        )
        dumps.append(f"dump (out, agg_t{a.id}, {a.id}, {cap * (nk + nv)});")
    leave = fns["leave"]
    return "\n".join(
        [
            "#define _GNU_SOURCE",
            "#include <pthread.h>",
            "#include <stdio.h>",
            "#include <time.h>",
            "#include <unistd.h>",
            "#include <stdlib.h>",
            "#include <string.h>",
            '#include "gum/guminterceptor.h"',
            "unsigned char agg_state[64] __attribute__ ((aligned (64)));",
            *decls,
            "void agg_setup (void); void agg_table_ready (void *); int agg_compact (void *, uint64_t *);",
            "int agg_clock_gettime (int c, struct timespec * t) { return clock_gettime (c, t); }",
            "int agg_gettid (void) { return gettid (); }",
            f"void {fns['enter']} (GumInvocationContext *);",
            f"void {leave} (GumInvocationContext *);" if leave else "",
            "static void init (unsigned char * t, uint32_t nk, uint32_t nv, uint32_t cap,",
            "    uint32_t mk, uint32_t fn, uint32_t sg, int64_t low, int64_t step, uint32_t n,",
            "    uint32_t hi)",
            "{ uint32_t h[4] = { nk, nv, cap, mk }; memcpy (t, h, 16);",
            "  memcpy (t + 24, &fn, 4); memcpy (t + 28, &sg, 4); memcpy (t + 32, &low, 8);",
            "  memcpy (t + 40, &step, 8); memcpy (t + 48, &n, 4); memcpy (t + 52, &hi, 4); }",
            "static void dump (FILE * f, unsigned char * t, int id, size_t words)",
            "{ uint64_t * buf = calloc (words + 1, 8); int n = agg_compact (t, buf);",
            "  int ov; memcpy (&ov, t + 20, 4);",
            '  fprintf (f, "%d %d %d\\n", id, n, ov); fwrite (buf, 8, words, f); free (buf); }',
            "static void * worker (void * arg)",
            "{ long t = (long) arg; GumInvocationContext ic; memset (&ic, 0, sizeof ic);",
            f"  for (long k = 0; k < {N}; k++) {{",
            "    long a = k % 300 - 100 + t;",
            "    ic.args[0] = (uint64_t) a; ic.ra = 0x1000 + (uint64_t) (k % 3);",
            f"    {fns['enter']} (&ic);",
            f"    ic.retval = (uint64_t) (2 * a); {leave} (&ic);" if leave else "",
            "  }",
            "  return NULL; }",
            "int main (int argc, char ** argv)",
            '{ pthread_t th[8]; FILE * out = fopen (argv[1], "wb");',
            *inits,
            "  agg_setup ();",
            *[f"  agg_table_ready (agg_t{a.id});" for a in probe.aggregations],
            f"  for (long i = 0; i < {THREADS}; i++) pthread_create (&th[i], NULL, worker, (void *) i);",
            f"  for (long i = 0; i < {THREADS}; i++) pthread_join (th[i], NULL);",
            *dumps,
            "  fclose (out); return 0; }",
        ]
    )


@pytest.mark.parametrize("portable", [False, True], ids=["x86-64-atomics", "portable-atomics"])
def test_runtime_exact_under_threads(tmp_path: Path, portable: bool):
    table = load_text(SET).compile(["s"])
    (probe,) = table.probes.values()
    items, fns = probe_source(probe)
    inc = tmp_path / "inc"
    (inc / "gum").mkdir(parents=True)
    (inc / "glib.h").write_text(SHIM_GLIB)
    (inc / "gum" / "gumtls.h").write_text(SHIM_TLS)
    (inc / "gum" / "guminterceptor.h").write_text(SHIM_INTERCEPTOR)
    gen = tmp_path / "gen.c"
    gen.write_text(runtime_source() + "\n" + unit(items))
    main = tmp_path / "main.c"
    main.write_text(harness(table, fns))
    exe = tmp_path / "h"
    defs = ["-DINSTR_PORTABLE_ATOMICS"] if portable else []
    build = subprocess.run(
        # tables are declared as their 64-byte header, their rows follow it
        ["gcc", "-O1", "-Wall", "-Werror", "-Wno-unused-function", "-Wno-stringop-overflow",
         "-Wno-array-bounds", "-fno-strict-aliasing", "-pthread", *defs,
         "-I", str(inc), str(gen), str(main), "-o", str(exe)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    out = tmp_path / "rows.bin"
    subprocess.run([str(exe), str(out)], check=True, timeout=60)

    raw = out.read_bytes()
    tables, data, off = [], b"", 0
    for a in probe.aggregations:
        end = raw.index(b"\n", off)
        tid, rows, overflow = map(int, raw[off:end].split())
        assert tid == a.id
        words = _cap(a.max_keys, len(a.keys)) * (len(a.keys) + a.value_words())
        body = raw[end + 1 : end + 1 + 8 * words]
        stride = len(a.keys) + a.value_words()
        data += body[: 8 * rows * stride]
        tables.append({"id": a.id, "rows": rows, "overflow": overflow})
        off = end + 1 + 8 * words
    snap = AggDecoder(table, RunContext(table)).decode(
        {"tables": tables, "ts": "0", "seq": 0, "final": True, "execname": "h"}, data
    )
    got = {t.name: t for t in snap.tables}

    values = [k % 300 - 100 + t for t in range(THREADS) for k in range(N)]
    vals = [v for v in values if v != 7]
    callers = Counter(
        0x1000 + k % 3 for t in range(THREADS) for k in range(N) if k % 300 - 100 + t != 7
    )
    assert {r.keys[0]: r.count for r in got["s/n"].rows} == {hex(a): n for a, n in callers.items()}
    (s,) = got["s/s"].rows
    assert (s.count, s.total) == (len(vals), sum(vals))
    assert (got["s/lo"].rows[0].min, got["s/hi"].rows[0].max) == (min(vals), max(vals))
    (sd,) = got["s/sd"].rows
    assert (sd.count, sd.total, sd.sumsq) == (len(vals), sum(vals), sum(v * v for v in vals))
    (q,) = got["s/q"].rows
    want: dict[int, int] = {}
    for v in vals:
        i = 64 if v == 0 else 65 + v.bit_length() - 1 if v > 0 else 63 - ((-v).bit_length() - 1)
        want[i] = want.get(i, 0) + 1
    assert [(b.lo, b.hi, b.count) for b in q.buckets] == [
        (quantize_bucket(i).lo, quantize_bucket(i).hi, want[i]) for i in sorted(want)
    ]
    (lq,) = got["s/lq"].rows
    under = sum(1 for v in vals if v < 0)
    over = sum(1 for v in vals if v >= 100)
    assert lq.buckets[0].lo is None and lq.buckets[0].count == under
    assert lq.buckets[-1].hi is None and lq.buckets[-1].count == over
    assert lq.count == len(vals)
    (llq,) = got["s/llq"].rows
    want = dict(Counter(dtrace_llq_bucket(4, 1, 2, 16, v) for v in vals))
    assert [(b.lo, b.hi, b.count) for b in llq.buckets] == [
        (llq_bucket(i, (4, 1, 2, 16)).lo, llq_bucket(i, (4, 1, 2, 16)).hi, want[i])
        for i in sorted(want)
    ]
    rs = {r.keys[0]: (r.count, r.total) for r in got["s/rs"].rows}
    counts = Counter(vals)
    assert rs == {v: (n, 2 * v * n) for v, n in counts.items()}
    assert all(t.overflow == 0 for t in snap.tables)
    assert struct.calcsize("<Q") == 8
