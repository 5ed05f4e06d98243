// The syscall monitor's C source, compiled once per session by CModule
// (TinyCC). Static text: what differs per site (syscall number, flags, the
// original function) is data in `sys->sites[i]`, filled in by syscalls.ts.
//
// Default mode: each libc wrapper that issues a system call is replaced
// (Interceptor.replaceFast) by one of the fixed `r<i>` functions below, which
// call the original and account the call: per syscall number a count, an
// error count (errno set by the wrapper) and the total time in the wrapper.
// In trace mode each call also writes one record into a two-half ring that
// JS drains (same producer/consumer protocol as native_c.ts's ring).
//
// Nesting: a wrapper that calls another hooked wrapper (fstat -> fstatat)
// issued no system call of its own; per thread, a depth and a bit per level
// say whether an inner call was accounted, and then the outer one is not.
// Frida's own threads (cloaked) are never accounted.

export const SYS_C_SOURCE = `
#include <glib.h>
#include <gum/gumtls.h>
#include <gum/guminterceptor.h>

#define NR_MAX 1024
#define SITES 512 /* also in syscalls.ts; Site is 32 bytes */
#define F_INDIRECT 1
#define F_ENTER 2
#define F_FORK 4
#define MK_NONE 0
#define MK_CSTR 1
#define MK_BUF_ARG 2
#define MK_BUF_RET 3
#define MK_SOCK_ARG 4
#define MK_SOCK_PTR 5
#define REC_HEAD 88
#define RF_ENTRY 1
#define RF_RESUMED 2
#define RF_ERROR 4

typedef gint64 (* Fn) (gint64, gint64, gint64, gint64, gint64, gint64);

typedef struct {
  Fn orig;
  gint32 nr;
  gint32 flags;
  gint64 pre_value; /* inserted as the first syscall argument when pre != 0 */
  gint32 pre;
  gint32 arity; /* the wrapper arguments that are syscall arguments; the rest are 0 */
} Site;

typedef struct {
  volatile gint count;
  volatile gint errors;
  volatile gint64 ns;
} Counter;

typedef struct {
  volatile gint epoch;
  volatile gint reserved[2];
  volatile gint inflight[2];
  volatile gint drops;
  gint cap;
  gint trace;
  gint strmax;
  gint bufmax;
  GumTlsKey key;
  guint8 * buf[2];
  gint out_len;
  gint active;
  guint8 * kinds;
  guint8 * lens;
  guint8 * selected;
  GumTlsKey tid_key;
  gsize agent_lo;
  gsize agent_hi;
  Counter counters[NR_MAX];
  Site sites[SITES];
} Sys;

typedef struct {
  gint64 sec;
  gint64 nsec;
} TimeSpec;

extern Sys sys;
extern int clock_gettime (int clk, TimeSpec * ts);
extern int gettid (void); /* the original, not a replaced one */
extern int * errno_location (void);
extern gint32 agent_tids[64]; /* Frida's threads when the monitor was armed; 0 ends */

static gboolean
is_agent_thread (gint32 tid)
{
  guint i;
  for (i = 0; i != 64 && agent_tids[i] != 0; i++)
    if (agent_tids[i] == tid)
      return TRUE;
  return FALSE;
}

static guint64
now_ns (void)
{
  TimeSpec t;
  clock_gettime (1, &t);
  return (guint64) t.sec * 1000000000ULL + (guint64) t.nsec;
}

static void
add64 (volatile gint64 * p, gint64 v)
{
#if defined (__x86_64__)
  __asm__ __volatile__ ("lock; addq %1, %0" : "+m" (*p) : "r" (v) : "memory");
#else
  *p += v;
#endif
}

#define ST_INIT 1ULL
#define ST_IGNORE 2ULL
#define DEPTH(st) ((guint) (((st) >> 2) & 63))
#define INNER(d) (1ULL << (8 + (d)))

static guint32
my_tid (void)
{
  gpointer v = gum_tls_key_get_value (sys.tid_key);
  if (v == NULL)
  {
    v = GSIZE_TO_POINTER ((gsize) gettid ());
    gum_tls_key_set_value (sys.tid_key, v);
  }
  return (guint32) GPOINTER_TO_SIZE (v);
}

static guint64
thread_state (void)
{
  guint64 st = (guint64) GPOINTER_TO_SIZE (gum_tls_key_get_value (sys.key));
  if (st == 0)
  {
    st = ST_INIT;
    if (is_agent_thread (my_tid ()))
      st |= ST_IGNORE;
    gum_tls_key_set_value (sys.key, GSIZE_TO_POINTER ((gsize) st));
  }
  return st;
}

static void
set_state (guint64 st)
{
  gum_tls_key_set_value (sys.key, GSIZE_TO_POINTER ((gsize) st));
}

static gsize
bounded_strlen (const guint8 * s, gsize max)
{
  gsize n = 0;
  while (n < max && s[n] != 0)
    n++;
  return n;
}

/* Reserve SIZE bytes in the ring's current half; NULL when full (counted). */
static guint8 *
reserve (gint size, gint * half)
{
  for (;;)
  {
    gint e = sys.epoch;
    gint b = e & 1;
    g_atomic_int_add (&sys.inflight[b], 1);
    if (sys.epoch != e)
    {
      g_atomic_int_add (&sys.inflight[b], -1);
      continue;
    }
    if (sys.reserved[b] <= sys.cap - size)
    {
      gint off = g_atomic_int_add (&sys.reserved[b], size);
      if (off <= sys.cap - size)
      {
        *half = b;
        return sys.buf[b] + off;
      }
      if (off <= sys.cap - 2)
        *(guint16 *) (sys.buf[b] + off) = 0;
    }
    g_atomic_int_add (&sys.inflight[b], -1);
    g_atomic_int_add (&sys.drops, 1);
    return NULL;
  }
}

/* How many bytes argument i's memory takes, and where it is (0: nothing). */
static gssize
mem_len (guint nr, guint i, gint64 * a, gint64 ret, gint err, const guint8 ** where)
{
  guint k = sys.kinds[nr * 6 + i];
  guint j = sys.lens[nr * 6 + i];
  const guint8 * p = (const guint8 *) GSIZE_TO_POINTER ((gsize) a[i]);
  gsize n = 0;
  *where = p;
  /* Only memory the kernel accepted is read: a path unless the call failed
   * with EFAULT, anything else only after success. */
  if (k == MK_NONE || p == NULL || err == 14 /* EFAULT */ || (k != MK_CSTR && err != 0))
    return -1;
  if (k == MK_CSTR)
    n = bounded_strlen (p, sys.strmax);
  else if (k == MK_BUF_ARG)
    n = (gsize) a[j];
  else if (k == MK_BUF_RET)
    n = (err == 0 && ret > 0) ? (gsize) ret : 0;
  else if (k == MK_SOCK_ARG)
    n = (gsize) (guint32) a[j];
  else if (k == MK_SOCK_PTR)
  {
    const gint32 * lp = (const gint32 *) GSIZE_TO_POINTER ((gsize) a[j]);
    n = (err == 0 && lp != NULL) ? (gsize) *lp : 0;
  }
  if (k != MK_CSTR && n > (gsize) sys.bufmax)
    n = sys.bufmax;
  if (k == MK_SOCK_ARG || k == MK_SOCK_PTR)
    n = n > 128 ? 128 : n;
  return (gssize) n;
}

/* Record: u16 size, u16 nr, u8 flags, u8 nmem, u16 pad, u32 tid, i32 errno,
 * u64 ts, u64 dur, i64 ret, u64 args[6]; then per memory argument u8 index,
 * u8 pad, u16 pad, u32 len, bytes padded to 8. */
static void
record (guint nr, guint flags, guint64 ts, guint64 dur, gint64 * a, gint64 ret, gint err)
{
  const guint8 * where[6];
  gssize lens[6];
  gint size = REC_HEAD, half, i, nmem = 0;
  guint8 * p;
  if (nr >= NR_MAX)
    return;
  for (i = 0; i != 6; i++)
  {
    lens[i] = (flags & RF_ENTRY) && sys.kinds[nr * 6 + i] != MK_CSTR ? -1 : mem_len (nr, i, a, ret, err, &where[i]);
    if (lens[i] >= 0)
    {
      size += 8 + ((lens[i] + 7) & ~7);
      nmem++;
    }
  }
  if (size > 60000)
    return;
  p = reserve (size, &half);
  if (p == NULL)
    return;
  *(guint16 *) p = (guint16) size;
  *(guint16 *) (p + 2) = (guint16) nr;
  p[4] = (guint8) flags;
  p[5] = (guint8) nmem;
  *(guint16 *) (p + 6) = 0;
  *(guint32 *) (p + 8) = my_tid ();
  *(gint32 *) (p + 12) = err;
  *(guint64 *) (p + 16) = ts;
  *(guint64 *) (p + 24) = dur;
  *(gint64 *) (p + 32) = ret;
  for (i = 0; i != 6; i++)
    *(gint64 *) (p + 40 + 8 * i) = a[i];
  {
    guint8 * q = p + REC_HEAD;
    for (i = 0; i != 6; i++)
    {
      if (lens[i] < 0)
        continue;
      q[0] = (guint8) i;
      q[1] = 0;
      *(guint16 *) (q + 2) = 0;
      *(guint32 *) (q + 4) = (guint32) lens[i];
      { gssize m; for (m = 0; m != lens[i]; m++) q[8 + m] = where[i][m]; }
      q += 8 + ((lens[i] + 7) & ~7);
    }
  }
  g_atomic_int_add (&sys.inflight[half], -1);
}

static gint64
call (guint i, gsize ra, gint64 a0, gint64 a1, gint64 a2, gint64 a3, gint64 a4, gint64 a5)
{
  Site * s = &sys.sites[i];
  guint64 st = thread_state ();
  guint64 t0, t1;
  gint64 r, args[6];
  gint nr, err, saved, flags = s->flags;
  guint d;
  int * ep;

  /* Frida's threads, and Frida's own code running on the target's threads. */
  if ((st & ST_IGNORE) != 0 || !sys.active || (ra >= sys.agent_lo && ra < sys.agent_hi))
    return s->orig (a0, a1, a2, a3, a4, a5);
  nr = s->nr;
  {
    /* The syscall's arguments from the wrapper's: syscall(nr, ...) shifts them
     * left; open(path, ...) is openat(AT_FDCWD, path, ...); a wrapper with
     * fewer arguments than its syscall leaves the rest 0, never garbage that
     * would be read as a pointer. */
    gint64 w[6];
    gint k, j = 0, from = 0;
    w[0] = a0; w[1] = a1; w[2] = a2; w[3] = a3; w[4] = a4; w[5] = a5;
    if (flags & F_INDIRECT)
    {
      nr = (gint) a0;
      from = 1;
    }
    if (s->pre)
      args[j++] = s->pre_value;
    for (k = 0; k != s->arity && from + k < 6 && j < 6; k++)
      args[j++] = w[from + k];
    while (j < 6)
      args[j++] = 0;
  }
  if (nr < 0 || nr >= NR_MAX || !sys.selected[nr])
    return s->orig (a0, a1, a2, a3, a4, a5);
  d = DEPTH (st) + 1;
  if (d > 55)
    return s->orig (a0, a1, a2, a3, a4, a5);
  set_state ((st & ~(63ULL << 2) & ~INNER (d)) | ((guint64) d << 2));
  ep = errno_location ();
  saved = *ep;
  t0 = now_ns ();
  /* execve, exit_group (F_ENTER) do not return on success: the exit and exec
   * hooks flush before this replacement runs, so the host counts those calls
   * from the ending it is told about; a failed call returns and is counted here. */
  *ep = 0;
  r = s->orig (a0, a1, a2, a3, a4, a5);
  t1 = now_ns ();
  err = *ep;
  if (err == 0)
    *ep = saved;
  st = thread_state ();
  if ((st & INNER (d)) == 0)
  {
    if (flags & F_ENTER)
    {
      g_atomic_int_add (&sys.counters[nr].count, 1);
      if (err != 0)
        g_atomic_int_add (&sys.counters[nr].errors, 1);
      add64 (&sys.counters[nr].ns, (gint64) (t1 - t0));
      if (sys.trace)
        record (nr, err ? RF_ERROR : 0, t0, t1 - t0, args, r, err);
    }
    else if (!((flags & F_FORK) && r == 0))
    {
      g_atomic_int_add (&sys.counters[nr].count, 1);
      if (err != 0)
        g_atomic_int_add (&sys.counters[nr].errors, 1);
      add64 (&sys.counters[nr].ns, (gint64) (t1 - t0));
      if (sys.trace)
        record (nr, err ? RF_ERROR : 0, t0, t1 - t0, args, r, err);
    }
  }
  /* Leave this level; tell the parent level that a call was accounted below it. */
  set_state ((st & ~(63ULL << 2) & ~INNER (d)) | ((guint64) (d - 1) << 2) | INNER (d - 1));
  return r;
}

/* r<ooo>: site 0ooo (octal), 512 of them. */
#define R(i) gint64 r##i (gint64 a, gint64 b, gint64 c, gint64 d, gint64 e, gint64 f) { return call (0##i, (gsize) __builtin_return_address (0), a, b, c, d, e, f); }
#define R8(i) R(i##0) R(i##1) R(i##2) R(i##3) R(i##4) R(i##5) R(i##6) R(i##7)
#define R64(i) R8(i##0) R8(i##1) R8(i##2) R8(i##3) R8(i##4) R8(i##5) R8(i##6) R8(i##7)
R64(1) R64(2) R64(3) R64(4) R64(5) R64(6) R64(7) R64(0)

/* Listener tier, for wrappers that cannot be replaced (vfork: its child
 * shares the stack, so only the entry is seen and counted). */
void
on_enter_only (GumInvocationContext * ic)
{
  guint i = GPOINTER_TO_UINT (gum_invocation_context_get_listener_function_data (ic));
  Site * s = &sys.sites[i];
  guint64 st = thread_state ();
  gint64 args[6];
  gint k;
  if ((st & ST_IGNORE) != 0 || !sys.active || s->nr < 0 || s->nr >= NR_MAX || !sys.selected[s->nr])
    return;
  g_atomic_int_add (&sys.counters[s->nr].count, 1);
  if (sys.trace)
  {
    for (k = 0; k != 6; k++)
      args[k] = (gint64) GPOINTER_TO_SIZE (gum_invocation_context_get_nth_argument (ic, k));
    record (s->nr, RF_ENTRY, now_ns (), 0, args, 0, 0);
  }
}

/* Flip halves; returns the drained half's index, its length in out_len. */
gint
ring_swap (gint spins)
{
  gint e = sys.epoch;
  gint b = e & 1;
  gint o = b ^ 1;
  gint n;
  sys.reserved[o] = 0;
  g_atomic_int_add (&sys.epoch, 1);
  while (sys.inflight[b] != 0 && spins-- > 0)
    ;
  n = sys.reserved[b];
  sys.out_len = n > sys.cap ? sys.cap : n;
  return b;
}

gint
sys_size (void)
{
  return (gint) sizeof (Sys);
}

void
sys_init (gint cap, gint trace, gint strmax, gint bufmax, guint8 * buf0, guint8 * buf1, guint8 * kinds, guint8 * lens, guint8 * selected)
{
  sys.cap = cap;
  sys.trace = trace;
  sys.strmax = strmax;
  sys.bufmax = bufmax;
  sys.buf[0] = buf0;
  sys.buf[1] = buf1;
  sys.kinds = kinds;
  sys.lens = lens;
  sys.selected = selected;
  sys.key = gum_tls_key_new ();
  sys.tid_key = gum_tls_key_new ();
}

/* An address inside Frida's agent, to find its mapping. */
gpointer
agent_address (void)
{
  return (gpointer) gum_tls_key_get_value;
}

void
set_agent_range (gpointer lo, gpointer hi)
{
  sys.agent_lo = GPOINTER_TO_SIZE (lo);
  sys.agent_hi = GPOINTER_TO_SIZE (hi);
}

void
set_site (gint i, gpointer orig, gint nr, gint flags, gint pre, gint64 pre_value, gint arity)
{
  sys.sites[i].orig = (Fn) orig;
  sys.sites[i].nr = nr;
  sys.sites[i].flags = flags;
  sys.sites[i].pre = pre;
  sys.sites[i].pre_value = pre_value;
  sys.sites[i].arity = arity;
}

void
set_active (gint on)
{
  sys.active = on;
}

/* Counters of syscalls nr with calls: out[k] = {nr, count, errors, ns}; returns k. */
gint
read_counters (gint64 * out)
{
  gint nr, k = 0;
  for (nr = 0; nr != NR_MAX; nr++)
  {
    if (sys.counters[nr].count == 0 && sys.counters[nr].errors == 0)
      continue;
    out[4 * k] = nr;
    out[4 * k + 1] = sys.counters[nr].count;
    out[4 * k + 2] = sys.counters[nr].errors;
    out[4 * k + 3] = sys.counters[nr].ns;
    k++;
  }
  return k;
}

gint
out_len_offset (void)
{
  return (gint) G_STRUCT_OFFSET (Sys, out_len);
}

gint
read_drops (void)
{
  return sys.drops;
}
`;
