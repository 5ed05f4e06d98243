/*
 * instr fast tier: the aggregation runtime.
 *
 * Compiled by Frida's CModule (TinyCC) in the target, followed by the code
 * instr/ctier/emit.py generates for each fast-tier probe. TinyCC does not
 * inline, so the hot atomics are macros.
 *
 * A table holds one aggregation. Header (64 bytes), then `cap` rows of
 * 1 + nkeys + nvals 64-bit words: state, keys, values. values[0] is the
 * count; then, by function: sum/avg [1] = sum; min/max [1]; stddev [1] = sum,
 * [2..3] = sum of squares (128-bit, lo/hi); quantize/lquantize/llquantize:
 * buckets. llquantize keeps its factor in lq_low, its steps in lq_step, its
 * low magnitude in lq_n and its high magnitude in lq_high.
 * Rows are claimed lock-free (EMPTY -> CLAIMING -> READY) and never freed;
 * every update is an atomic add or compare-and-swap, so totals are exact
 * under any number of threads. At most max_keys rows are claimed; updates
 * for further keys are counted in `overflow`.
 *
 * Memory is allocated and zeroed by the agent (CModule globals cannot be
 * written), which also writes the headers.
 */
#include <glib.h>
#include <gum/guminterceptor.h>
#include <gum/gumtls.h>

typedef struct
{
  guint32 nkeys, nvals, cap, max_keys;
  volatile gint used, overflow;
  guint32 func, is_signed;
  gint64 lq_low, lq_step;
  guint32 lq_n, lq_high;
  guint64 reserved[2];
} AggTable;

typedef struct
{
  GumTlsKey tid_key;
  guint32 pid, pad;
  volatile gint lock_next, lock_serving;
} AggState;

typedef struct
{
  gint64 sec, nsec;
} AggTimeSpec;

extern AggState agg_state;
/* libc's clock_gettime and gettid, bound under these names by the agent */
extern int agg_clock_gettime (int clk, AggTimeSpec * ts);
extern int agg_gettid (void);

/* Replacements (Interceptor.replaceFast) take and pass on the integer
 * argument registers of the platform's C ABI. */
#if defined(__aarch64__)
#define AGG_PARAMS guint64 a0, guint64 a1, guint64 a2, guint64 a3, \
    guint64 a4, guint64 a5, guint64 a6, guint64 a7
#define AGG_ARGS a0, a1, a2, a3, a4, a5, a6, a7
#elif defined(_WIN64)
#define AGG_PARAMS guint64 a0, guint64 a1, guint64 a2, guint64 a3
#define AGG_ARGS a0, a1, a2, a3
#else
#define AGG_PARAMS guint64 a0, guint64 a1, guint64 a2, guint64 a3, guint64 a4, guint64 a5
#define AGG_ARGS a0, a1, a2, a3, a4, a5
#endif
typedef guint64 (* AggOrig) (AGG_PARAMS);
#define AGG_CALL_ORIG(f) ((AggOrig) (f)) (AGG_ARGS)

/* Whether the calling thread is the tool's (Frida's, the agent's): a
 * replacement runs on every thread, and those calls are not the program's.
 * The agent defines it (agents/src/core/toolthread.ts); nothing is the
 * tool's where it does not (the host's unit tests of this file). */
#ifndef AGG_TOOL_THREAD
#define AGG_TOOL_THREAD() 0
#endif

#define AGG_EMPTY 0
#define AGG_CLAIMING 1
#define AGG_READY 2
#define AGG_ROWS(t) ((volatile guint64 *) ((guint8 *) (t) + 64))

enum { F_COUNT, F_SUM, F_MIN, F_MAX, F_AVG, F_STDDEV, F_QUANTIZE, F_LQUANTIZE, F_LLQUANTIZE };

#if defined(__x86_64__) && !defined(INSTR_PORTABLE_ATOMICS)
#define AGG_ADD(p, v) \
  __asm__ __volatile__ ("lock addq %1, %0" : "+m" (*(p)) : "r" ((guint64) (v)) : "memory")
#define AGG_BARRIER() __asm__ __volatile__ ("" ::: "memory")

static guint64
agg_xadd (volatile guint64 * p, guint64 v)
{
  __asm__ __volatile__ ("lock xaddq %0, %1" : "+r" (v), "+m" (*p) : : "memory");
  return v;
}

static int
agg_cas (volatile guint64 * p, guint64 old, guint64 nv)
{
  guint64 prev;
  __asm__ __volatile__ ("lock cmpxchgq %2, %1"
      : "=a" (prev), "+m" (*p) : "r" (nv), "0" (old) : "memory");
  return prev == old;
}
#else
/* Portable: pointer-sized atomic adds from glib, and a ticket lock (from the
 * only other atomic CModule's glib has, g_atomic_int_add) for the rest. */
#define AGG_ADD(p, v) g_atomic_pointer_add ((gssize *) (p), (gssize) (v))
#define AGG_BARRIER() g_atomic_int_add (&agg_state.lock_serving, 0)

static void
agg_lock (void)
{
  gint ticket = g_atomic_int_add (&agg_state.lock_next, 1);
  while (g_atomic_int_add (&agg_state.lock_serving, 0) != ticket)
    ;
}

static void
agg_unlock (void)
{
  g_atomic_int_add (&agg_state.lock_serving, 1);
}

static guint64
agg_xadd (volatile guint64 * p, guint64 v)
{
  return (guint64) g_atomic_pointer_add ((gssize *) p, (gssize) v);
}

static int
agg_cas (volatile guint64 * p, guint64 old, guint64 nv)
{
  int ok;
  agg_lock ();
  ok = *p == old;
  if (ok)
    *p = nv;
  agg_unlock ();
  return ok;
}
#endif

guint64
agg_now (void)
{
  AggTimeSpec t;
  agg_clock_gettime (1, &t);
  return (guint64) t.sec * 1000000000ULL + (guint64) t.nsec;
}

/* gum_invocation_context_get_thread_id() is a syscall per call; cache it. */
guint64
agg_tid (void)
{
  gpointer v = gum_tls_key_get_value (agg_state.tid_key);
  if (v == NULL)
  {
    v = GSIZE_TO_POINTER ((gsize) agg_gettid ());
    gum_tls_key_set_value (agg_state.tid_key, v);
  }
  return (guint64) GPOINTER_TO_SIZE (v);
}

void
agg_setup (void)
{
  agg_state.tid_key = gum_tls_key_new ();
}

static guint64
agg_hash (const guint64 * k, guint32 n)
{
  guint64 h = 0x9E3779B97F4A7C15ULL;
  guint32 i;
  for (i = 0; i < n; i++)
  {
    h = (h ^ k[i]) * 0xBF58476D1CE4E5B9ULL;
    h ^= h >> 31;
  }
  return h;
}

static void
agg_init_row (AggTable * t, volatile guint64 * v)
{
  if (t->func == F_MIN)
    v[1] = t->is_signed ? 0x7fffffffffffffffULL : 0xffffffffffffffffULL;
  else if (t->func == F_MAX)
    v[1] = t->is_signed ? 0x8000000000000000ULL : 0;
}

/* The values of the row for keys k (claimed if new), or NULL when the table
 * is full (counted in overflow). */
volatile guint64 *
agg_row (AggTable * t, const guint64 * k)
{
  guint32 nk = t->nkeys;
  guint32 stride = 1 + nk + t->nvals;
  guint32 mask = t->cap - 1;
  guint32 i = (guint32) (agg_hash (k, nk) >> 32) & mask;
  guint32 probes, j;
  int reserved = 0;
  volatile guint64 * rows = AGG_ROWS (t);

  for (probes = 0; probes < t->cap; probes++, i = (i + 1) & mask)
  {
    volatile guint64 * r = rows + (gsize) i * stride;
    for (;;)
    {
      guint64 s = r[0];
      if (s == AGG_READY)
      {
        AGG_BARRIER ();
        for (j = 0; j < nk && r[1 + j] == k[j]; j++)
          ;
        if (j == nk)
        {
          if (reserved)
            g_atomic_int_add (&t->used, -1);
          return r + 1 + nk;
        }
        break;
      }
      if (s == AGG_CLAIMING)
        continue; /* another thread is writing this row's keys */
      if (!reserved)
      {
        if (g_atomic_int_add (&t->used, 1) >= (gint) t->max_keys)
        {
          g_atomic_int_add (&t->used, -1);
          g_atomic_int_add (&t->overflow, 1);
          return NULL;
        }
        reserved = 1;
      }
      if (agg_cas (&r[0], AGG_EMPTY, AGG_CLAIMING))
      {
        for (j = 0; j < nk; j++)
          r[1 + j] = k[j];
        agg_init_row (t, r + 1 + nk);
        AGG_BARRIER ();
        r[0] = AGG_READY;
        return r + 1 + nk;
      }
    }
  }
  if (reserved)
    g_atomic_int_add (&t->used, -1);
  g_atomic_int_add (&t->overflow, 1);
  return NULL;
}

/* One key: the first probe inline, the general path otherwise. */
volatile guint64 *
agg_row1 (AggTable * t, guint64 k0)
{
  guint64 h = ((0x9E3779B97F4A7C15ULL ^ k0) * 0xBF58476D1CE4E5B9ULL);
  guint32 i = (guint32) ((h ^ (h >> 31)) >> 32) & (t->cap - 1);
  volatile guint64 * r = AGG_ROWS (t) + (gsize) i * (2 + t->nvals);
  if (r[0] == AGG_READY && r[1] == k0)
    return r + 2;
  return agg_row (t, &k0);
}

/* The single row of an unkeyed table (agg_table_ready claims it). */
#define AGG_ROW0(t) (AGG_ROWS (t) + 1)

void
agg_table_ready (AggTable * t)
{
  volatile guint64 * r = AGG_ROWS (t);
  if (t->nkeys != 0)
    return;
  agg_init_row (t, r + 1);
  r[0] = AGG_READY;
}

static int
agg_less (AggTable * t, guint64 a, guint64 b)
{
  return t->is_signed ? (gint64) a < (gint64) b : a < b;
}

void
agg_min (AggTable * t, volatile guint64 * p, guint64 x)
{
  guint64 cur = *p;
  while (agg_less (t, x, cur))
  {
    if (agg_cas (p, cur, x))
      return;
    cur = *p;
  }
}

void
agg_max (AggTable * t, volatile guint64 * p, guint64 x)
{
  guint64 cur = *p;
  while (agg_less (t, cur, x))
  {
    if (agg_cas (p, cur, x))
      return;
    cur = *p;
  }
}

/* Adds x*x (|x| for signed values) to the 128-bit sum at p[0] (lo), p[1] (hi). */
void
agg_sumsq (AggTable * t, volatile guint64 * p, guint64 x)
{
  guint64 u = (t->is_signed && (gint64) x < 0) ? (guint64) 0 - x : x;
  guint64 a = u >> 32, b = u & 0xffffffffULL;
  guint64 p0 = b * b, p1 = a * b, p2 = a * a;
  guint64 lo = p0 + (p1 << 33);
  guint64 hi = p2 + (p1 >> 31) + (lo < p0 ? 1 : 0);
  guint64 old = agg_xadd (&p[0], lo);
  if (old + lo < old)
    hi++;
  if (hi != 0)
    AGG_ADD (&p[1], hi);
}

static guint32
agg_log2 (guint64 u)
{
  guint32 n = 0;
  if (u >> 32) { u >>= 32; n += 32; }
  if (u >> 16) { u >>= 16; n += 16; }
  if (u >> 8) { u >>= 8; n += 8; }
  if (u >> 4) { u >>= 4; n += 4; }
  if (u >> 2) { u >>= 2; n += 2; }
  if (u >> 1) { n += 1; }
  return n;
}

/* quantize: 129 buckets. 64 holds 0; 65 + j holds [2^j, 2^(j+1));
 * 63 - j holds the negative values with |v| in [2^j, 2^(j+1)). */
#if defined(__x86_64__)
static guint32
agg_log2_fast (guint64 u)
{
  guint64 r;
  __asm__ ("bsrq %1, %0" : "=r" (r) : "r" (u));
  return (guint32) r;
}
#define agg_log2 agg_log2_fast
#endif

guint32
agg_qbucket (AggTable * t, guint64 x)
{
  if (t->is_signed && (gint64) x < 0)
    return 63 - agg_log2 ((guint64) 0 - x);
  if (x == 0)
    return 64;
  return 65 + agg_log2 (x);
}

/* lquantize: 0 is below low, 1..n the steps, n + 1 from high up. */
guint32
agg_lqbucket (AggTable * t, guint64 x)
{
  gint64 v = (gint64) x;
  guint64 off;
  if (!t->is_signed && (gint64) x < 0)
    return t->lq_n + 1; /* an unsigned value above G_MAXINT64 */
  if (v < t->lq_low)
    return 0;
  off = (guint64) (v - t->lq_low) / (guint64) t->lq_step;
  return off >= t->lq_n ? t->lq_n + 1 : 1 + (guint32) off;
}

/* llquantize: DTrace's log-linear buckets (instr/aggregate/llq.py). 0 is
 * below factor^low; each magnitude [factor^m, factor^(m+1)) for m from low
 * to high adds its linear steps, factor^(m+1) / steps wide (1 while
 * factor^(m+1) <= steps); the last bucket is from factor^(high+1) up. The
 * host checked that factor^(high+1) fits in a gint64. */
guint32
agg_llqbucket (AggTable * t, guint64 x)
{
  gint64 factor = t->lq_low, steps = t->lq_step, v = (gint64) x;
  gint64 this = 1, last, nb;
  guint32 base = 1, order;
  int top = !t->is_signed && v < 0; /* an unsigned value above G_MAXINT64 */
  for (order = 0; order < t->lq_n; order++)
    this *= factor;
  if (!top && v < this)
    return 0;
  last = this;
  this *= factor;
  for (; order <= t->lq_high; order++)
  {
    nb = this > steps ? steps : this;
    if (!top && v < this)
      return base + (guint32) ((v - last) / (this / nb));
    base += (guint32) (nb - nb / factor);
    last = this;
    if (order < t->lq_high)
      this *= factor;
  }
  return base;
}

/* Everything one update does, by function: the JS tier's entry point, and
 * what emitted code calls for all but count and sum. */
void
agg_apply (AggTable * t, volatile guint64 * v, guint64 x)
{
  /* histograms keep no count word: it is the sum of the buckets */
  if (t->func != F_QUANTIZE && t->func != F_LQUANTIZE && t->func != F_LLQUANTIZE)
    AGG_ADD (&v[0], 1);
  switch (t->func)
  {
    case F_SUM:
    case F_AVG:
      AGG_ADD (&v[1], x);
      break;
    case F_MIN:
      agg_min (t, &v[1], x);
      break;
    case F_MAX:
      agg_max (t, &v[1], x);
      break;
    case F_STDDEV:
      AGG_ADD (&v[1], x);
      agg_sumsq (t, &v[2], x);
      break;
    case F_QUANTIZE:
      AGG_ADD (&v[1 + agg_qbucket (t, x)], 1);
      break;
    case F_LQUANTIZE:
      AGG_ADD (&v[1 + agg_lqbucket (t, x)], 1);
      break;
    case F_LLQUANTIZE:
      AGG_ADD (&v[1 + agg_llqbucket (t, x)], 1);
      break;
    default:
      break;
  }
}

/* The JS tier: keys already reduced to 64-bit words. */
void
agg_update (AggTable * t, const guint64 * keys, guint64 x)
{
  volatile guint64 * v = t->nkeys == 0 ? AGG_ROW0 (t) : agg_row (t, keys);
  if (v != NULL)
    agg_apply (t, v, x);
}

/* The JS tier's staged updates: records of 32-bit words
 * [agg id, nkeys, (key lo, key hi) * nkeys, value lo, value hi]. */
void
agg_apply_staged (AggTable ** tables, const guint32 * w, guint32 n)
{
  guint64 keys[16];
  guint32 i = 0, j, nk;
  while (i + 4 <= n)
  {
    AggTable * t = tables[w[i]];
    nk = w[i + 1];
    i += 2;
    for (j = 0; j < nk && j < 16; j++, i += 2)
      keys[j] = (guint64) w[i] | ((guint64) w[i + 1] << 32);
    agg_update (t, keys, (guint64) w[i] | ((guint64) w[i + 1] << 32));
    i += 2;
  }
}

/* Copies the ready rows (keys and values, no state) to out; returns how many. */
gint
agg_compact (AggTable * t, guint64 * out)
{
  guint32 stride = 1 + t->nkeys + t->nvals;
  guint32 i, j, n = 0;
  volatile guint64 * rows = AGG_ROWS (t);
  for (i = 0; i < t->cap; i++)
  {
    volatile guint64 * r = rows + (gsize) i * stride;
    if (r[0] != AGG_READY)
      continue;
    AGG_BARRIER ();
    for (j = 1; j < stride; j++)
      *out++ = r[j];
    n++;
  }
  return (gint) n;
}

/* Signed floor division and modulo by a non-zero constant (predicates). */
gint64
agg_floordiv (gint64 a, gint64 b)
{
  gint64 q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0)))
    q--;
  return q;
}

gint64
agg_floormod (gint64 a, gint64 b)
{
  gint64 r = a % b;
  if (r != 0 && ((r < 0) != (b < 0)))
    r += b;
  return r;
}

/* ---- generated probe code follows ---- */
