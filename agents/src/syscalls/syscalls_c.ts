// The syscall monitor's C source, compiled once per session by CModule's
// TinyCC (see SyscallMonitor in syscalls.ts for why not the system compiler).
// Static text: what differs per site (syscall number, flags, the original
// function) is data in `sys->sites[i]`, filled in by syscalls.ts.
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

import { SYS_C_TRACE } from "./syscalls_c_trace.js";
import { SYS_C_SETUP } from "./syscalls_c_setup.js";
import { SYS_C_FDS } from "./syscalls_c_fds.js";
import { SYS_C_FORK } from "./syscalls_c_fork.js";

// The types, the per-thread state, and the per-call path; the trace records
// (syscalls_c_trace.ts) and the fd table's separation (syscalls_c_fds.ts)
// come before the calls that use them, the complete mode and the setup
// exports (syscalls_c_setup.ts) after.
const SYS_C_HEAD = `
#include <glib.h>
#include <gum/gumtls.h>
#include <gum/guminterceptor.h>
#include <gum/gumstalker.h>

#define NR_MAX 1024
#define SITES 512 /* also in syscalls.ts */
#define F_INDIRECT 1
#define F_ENTER 2
#define F_FORK 4
#define F_SLOW 8 /* replaced through a trampoline: the caller is in the invocation context */
#define F_PARTIAL 16 /* the syscall's arguments past the wrapper's are unknown, not 0 */
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
  volatile gsize app_ra; /* the last caller found not to be Frida's: a one-entry cache */
  gsize pad;
} Site;

/* 64-bit counts: a hot call at millions per second would wrap 32 bits in
 * minutes. */
typedef struct {
  volatile gint64 count;
  volatile gint64 errors;
  volatile gint64 ns;
} Counter;

/* Per thread: the nesting state and, in complete mode, the call in flight. */
typedef struct {
  guint64 t0;
  gint64 args[6];
  gint nr;
  gint on;
} RawCall;

typedef struct {
  guint64 st;
  RawCall raw;
} Thr;

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
  GumTlsKey raw_key;
  volatile gint thr_next;
  gint thr_cap;
  Thr * thr_pool;
  gint start_off;
  gint n_ranges;
  gsize ranges[128]; /* lo, hi pairs: Frida's code (agent, loader, CModules) */
  volatile gint sep; /* the program's own fd table: SEP_* (syscalls_c_fds.ts) */
  volatile gint sep_claim;
  gint sep_detail;
  gint sep_nul;
  gint sep_ncovers;
  gint32 sep_covers[16];
  gint sep_nfrida;
  gint32 sep_frida[64];
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
extern gpointer pthread_self (void);
extern int open (const char * path, int flags, ...);
extern gssize read (int fd, void * buf, gsize n);
extern int close (int fd);
extern int * errno_location (void);
extern gint32 agent_tids[64]; /* Frida's threads when the monitor was armed; 0 ends */

/* Whether tid is one of the n in tids (a 0 ends the list early). */
static gboolean
tid_listed (const gint32 * tids, gint n, gint32 tid)
{
  gint i;
  for (i = 0; i != n && tids[i] != 0; i++)
    if (tids[i] == tid)
      return TRUE;
  return FALSE;
}

static gboolean
is_agent_thread (gint32 tid)
{
  return tid_listed (agent_tids, 64, tid);
}

/* The clock of calls: the TSC on x86_64 (a few ns; syscalls.ts measures its
 * rate and the host scales), clock_gettime elsewhere. */
static guint64
now_ticks (void)
{
#if defined (__x86_64__)
  guint32 lo, hi;
  __asm__ __volatile__ ("rdtsc" : "=a" (lo), "=d" (hi));
  return ((guint64) hi << 32) | lo;
#else
  TimeSpec t;
  clock_gettime (1, &t);
  return (guint64) t.sec * 1000000000ULL + (guint64) t.nsec;
#endif
}

guint64
ticks (void)
{
  return now_ticks ();
}

static guint64 now_ns (void);

guint64
mono_ns (void)
{
  return now_ns ();
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
  *p += v; /* TinyCC off x86_64: not atomic across threads */
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

static gboolean
in_frida (gsize a)
{
  gint i;
  for (i = 0; i != sys.n_ranges; i++)
    if (a >= sys.ranges[2 * i] && a < sys.ranges[2 * i + 1])
      return TRUE;
  return FALSE;
}

/* A thread whose start routine is in Frida's agent (glib's thread proxy) is
 * Frida's; sys.start_off is where glibc keeps the start routine in struct
 * pthread (found by syscalls.ts from a thread known to be Frida's). */
static gboolean
started_by_agent (void)
{
  gsize sr;
  if (sys.start_off <= 0)
    return FALSE;
  sr = *(gsize *) ((guint8 *) pthread_self () + sys.start_off);
  return in_frida (sr);
}

/* A thread's state lives in a slot of sys.thr_pool (memory from JS), the
 * slot's address in the TLS value: one TLS read per call. Once the pool is
 * used up, the TLS value holds the state itself (odd: ST_INIT is bit 0), read
 * and written per call. Never an allocation here: a hook can run on a thread
 * inside an allocator (Frida's heap calls the hooked mmap with its lock held;
 * allocating there spun for ever in sched_yield). */
/* The slot a TLS value points to; NULL when the value is the state itself
 * (odd) or there is none yet (0). */
static Thr *
slot_of (gsize v)
{
  return (v != 0 && (v & 1) == 0) ? (Thr *) GSIZE_TO_POINTER (v) : NULL;
}

static guint64
state_get (Thr ** tp)
{
  gsize v = GPOINTER_TO_SIZE (gum_tls_key_get_value (sys.key));
  if (v == 0)
  {
    guint64 st = ST_INIT;
    gint i;
    if (is_agent_thread (my_tid ()) || started_by_agent ())
      st |= ST_IGNORE;
    i = g_atomic_int_add (&sys.thr_next, 1);
    if (i >= 0 && i < sys.thr_cap)
    {
      Thr * t = &sys.thr_pool[i];
      t->st = st;
      t->raw.on = 0;
      v = GPOINTER_TO_SIZE (t);
    }
    else
    {
      v = (gsize) st;
    }
    gum_tls_key_set_value (sys.key, GSIZE_TO_POINTER (v));
  }
  *tp = slot_of (v);
  return *tp != NULL ? (*tp)->st : (guint64) v;
}

/* The state of a thread already seen (T: its slot from state_get, or NULL). */
static guint64
state_read (Thr * t)
{
  return t != NULL ? t->st : (guint64) GPOINTER_TO_SIZE (gum_tls_key_get_value (sys.key));
}

static void
state_set (Thr * t, guint64 st)
{
  if (t != NULL)
    t->st = st;
  else
    gum_tls_key_set_value (sys.key, GSIZE_TO_POINTER ((gsize) st));
}

`;

const SYS_C_CALLS = `
/* One call in flight: what begin() saw, for end(). */
typedef struct {
  guint64 t0;
  gint64 args[6];
  Thr * thr; /* NULL: the state is the TLS value (pool used up) */
  gint known; /* arguments that are the call's (F_PARTIAL: the wrapper's only) */
  gint nr;
  gint saved;
  guint d;
  gint on;
} Call;

/* Before the wrapper runs: FALSE when the call is not to be accounted.
 * w: the wrapper's arguments, read only when records are written.
 * ep: errno itself (replacement tier), or the invocation context's copy of
 * it (listener tier: Gum saves errno around listeners and restores its copy). */
static gboolean
begin (Site * s, gsize ra, const gint64 * w, Call * c, gint * ep)
{
  Thr * t;
  guint64 st = state_get (&t);
  gint nr = s->nr;

  c->on = 0;
  /* Frida's threads, and Frida's own code running on the target's threads. */
  if ((st & ST_IGNORE) != 0 || !sys.active)
    return FALSE;
  if (ra != s->app_ra)
  {
    if (in_frida (ra))
      return FALSE;
    s->app_ra = ra;
  }
  if (sys.sep == SEP_ARMED)
  {
    /* The program's own fd table: its calls are instr's, not counted. */
    state_set (t, st | ST_IGNORE);
    sep_here ();
    state_set (t, st);
  }
  if (s->flags & F_INDIRECT)
    nr = (gint) w[0];
  if (nr < 0 || nr >= NR_MAX || !sys.selected[nr])
    return FALSE;
  c->d = DEPTH (st) + 1;
  if (c->d > 55)
    return FALSE;
  c->nr = nr;
  c->thr = t;
  if (sys.trace)
  {
    /* The syscall's arguments from the wrapper's: syscall(nr, ...) shifts
     * them left; open(path, ...) is openat(AT_FDCWD, path, ...); a wrapper
     * with fewer arguments than its syscall leaves the rest 0, never garbage
     * that would be read as a pointer. */
    gint k, j = 0, from = (s->flags & F_INDIRECT) ? 1 : 0;
    if (s->pre)
      c->args[j++] = s->pre_value;
    for (k = 0; k != s->arity && from + k < 6 && j < 6; k++)
      c->args[j++] = w[from + k];
    c->known = (s->flags & F_PARTIAL) ? j : 6;
    while (j < 6)
      c->args[j++] = 0;
  }
  state_set (t, (st & ~(63ULL << 2) & ~INNER (c->d)) | ((guint64) c->d << 2));
  c->saved = *ep;
  *ep = 0;
  c->on = 1;
  /* execve, exit_group (F_ENTER) do not return on success: the exit and exec
   * hooks flush before this runs, so the host counts those calls from the
   * ending it is told about; a failed call returns and is counted in end(). */
  c->t0 = now_ticks ();
  return TRUE;
}

static void
end (Site * s, Call * c, gint64 r, gint * ep)
{
  guint64 t1 = now_ticks ();
  gint err = *ep, nr = c->nr;
  Thr * t = c->thr;
  guint64 st = state_read (t);
  guint d = c->d;

  if (err == 0)
    *ep = c->saved;
  if ((st & INNER (d)) == 0 && !((s->flags & F_FORK) && r == 0))
  {
    add64 (&sys.counters[nr].count, 1);
    if (err != 0)
      add64 (&sys.counters[nr].errors, 1);
    add64 (&sys.counters[nr].ns, (gint64) (t1 - c->t0));
    if (sys.trace)
      record (nr, err ? RF_ERROR : 0, c->t0, t1 - c->t0, c->args, c->known, r, err);
  }
  /* Leave this level; tell the parent level that a call was accounted below it. */
  state_set (t, (st & ~(63ULL << 2) & ~INNER (d)) | ((guint64) (d - 1) << 2) | INNER (d - 1));
}

static gint64
call (guint i, gsize ra, gint64 a0, gint64 a1, gint64 a2, gint64 a3, gint64 a4, gint64 a5)
{
  Site * s = &sys.sites[i];
  gint64 w[6], r;
  gint * ep;
  Call c;

  if (s->flags & F_SLOW)
  {
    GumInvocationContext * ic = gum_interceptor_get_current_invocation ();
    if (ic != NULL)
      ra = GPOINTER_TO_SIZE (gum_invocation_context_get_return_address (ic));
  }
  w[0] = a0; w[1] = a1; w[2] = a2; w[3] = a3; w[4] = a4; w[5] = a5;
  ep = errno_location ();
  if (!begin (s, ra, w, &c, ep))
    return s->orig (a0, a1, a2, a3, a4, a5);
  r = s->orig (a0, a1, a2, a3, a4, a5);
  end (s, &c, r, ep);
  return r;
}

/* Listener tier (with child gating: a forked child crashes when Frida unloads
 * a script that replaced functions; listeners are safe). Site index as data. */
void
lis_enter (GumInvocationContext * ic)
{
  guint i = GPOINTER_TO_UINT (gum_invocation_context_get_listener_function_data (ic));
  Call * c = (Call *) gum_invocation_context_get_listener_invocation_data (ic, sizeof (Call));
  gint64 w[6];
  gint k;
  for (k = 0; k != 6; k++)
    w[k] = (gint64) GPOINTER_TO_SIZE (gum_invocation_context_get_nth_argument (ic, k));
  begin (&sys.sites[i], GPOINTER_TO_SIZE (gum_invocation_context_get_return_address (ic)), w, c, &ic->system_error);
}

void
lis_leave (GumInvocationContext * ic)
{
  guint i = GPOINTER_TO_UINT (gum_invocation_context_get_listener_function_data (ic));
  Call * c = (Call *) gum_invocation_context_get_listener_invocation_data (ic, sizeof (Call));
  if (c->on)
    end (&sys.sites[i], c, (gint64) GPOINTER_TO_SIZE (gum_invocation_context_get_return_value (ic)), &ic->system_error);
}

/* Whether this thread's calls are not counted (Frida's threads). A thread
 * not seen yet is classified here, before its call: a Frida thread's first
 * call once went through call(), and when it blocked there (a ppoll of a
 * thread Frida starts when its host has gone) its return address into this
 * code held the agent's leave for ever (the soak, docs/leaving.md). */
static inline gboolean
ignored_here (void)
{
  Thr * t;
  return (state_get (&t) & ST_IGNORE) != 0;
}

/* r<ooo>: site 0ooo (octal), 512 of them. A call that is not counted (a
 * Frida thread's, or any after the monitor stopped) ends in a tail call of
 * the original: no return address into this code stays on that thread's
 * stack, so a Frida thread blocked in ppoll() is never inside it when the
 * agent leaves (docs/leaving.md); the host's gcc makes it a jump. */
#define R(i) gint64 r##i (gint64 a, gint64 b, gint64 c, gint64 d, gint64 e, gint64 f) { \
    Site * s = &sys.sites[0##i]; \
    if (!sys.active || ignored_here ()) \
      return s->orig (a, b, c, d, e, f); \
    return call (0##i, (gsize) __builtin_return_address (0), a, b, c, d, e, f); }
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
  Thr * t;
  guint64 st = state_get (&t);
  gint64 args[6];
  gint k;
  if ((st & ST_IGNORE) != 0 || !sys.active || s->nr < 0 || s->nr >= NR_MAX || !sys.selected[s->nr])
    return;
  add64 (&sys.counters[s->nr].count, 1);
  if (sys.trace)
  {
    for (k = 0; k != 6; k++)
      args[k] = (gint64) GPOINTER_TO_SIZE (gum_invocation_context_get_nth_argument (ic, k));
    record (s->nr, RF_ENTRY, now_ticks (), 0, args, 6, 0, 0);
  }
}

`;

export const SYS_C_SOURCE = SYS_C_HEAD + SYS_C_TRACE + SYS_C_FDS + SYS_C_CALLS + SYS_C_FORK + SYS_C_SETUP;
