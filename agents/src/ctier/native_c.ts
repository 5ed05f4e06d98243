// The native tier's C source: static, compiled once per session by CModule
// (TinyCC). Never templated or string-replaced: every probe-specific choice
// is data in a per-site descriptor (see native.ts for the struct offsets,
// which layout_check() verifies at start-up).
//
// Only g_atomic_int_add exists in CModule's glib, hence 32-bit counters.
// Globals are read-only in CModule: all mutable state lives in `ring`,
// memory that JS allocates and passes in as a symbol.

import { RECORD_C } from "./record_c.js";
import { FAST_C } from "./fast_c.js";
import { STAGE_C } from "./stage_c.js";
import { TOOL_C } from "../core/toolthread.js";

export const C_SOURCE = `
#include <gum/guminterceptor.h>
#include <gum/gumtls.h>

#define MAXC 16
#define K_ARG 1
#define K_RETVAL 2
#define K_CALLER 3
#define K_DURATION 4
#define K_STASHED 5
#define ST_OK 0
#define ST_TRUNCATED 1
#define ST_NULL 2
#define ST_UNREADABLE 3
#define W_AT_ENTRY 1
#define W_AT_EXIT 2
/* The largest record body the native tier builds (on the hooked thread's stack). */
#define BODY_MAX 2048

typedef struct {
  volatile gint epoch;
  volatile gint drop_mode;
  volatile gint reserved[2];
  gint owner_pid; /* the process whose agent drains this ring */
  gint unused;
  volatile gint inflight[2];
  volatile gint stopped;
  gint cap;
  guint8 * buf[2];
  volatile gint * drops;
  guint8 * jsbuf;
  gint out_len;
  gint out_count;
  GumTlsKey tid_key;
  GumTlsKey stage_key;
  struct _Stage * stage;
  gint stage_slots;
} Ring;

/* Per-thread staging for the JS tier: a native listener attached before the
 * JS one writes the call's timestamp and raw values here, so that JS neither
 * calls into C nor reads arguments itself. Slots are claimed per thread id,
 * and JS finds its thread's slot by the same probing. */
typedef struct _Stage {
  volatile guint32 tid;
  volatile gint claim;
  guint64 ts;
  guint64 v[MAXC];
  guint64 pad;
} Stage;

typedef struct {
  guint32 probe;
  guint32 site;
  guint32 slot;
  guint16 entry_size;
  guint16 exit_size;
  guint8 n_entry;
  guint8 n_exit;
  guint8 n_stash;
  guint8 need_inv;
  guint8 entry_kind[MAXC];
  guint8 entry_idx[MAXC];
  guint8 exit_kind[MAXC];
  guint8 exit_idx[MAXC];
  guint8 stash_idx[MAXC];
  /* per capture (n_entry counts values: captures, then bytes lengths) */
  guint16 entry_max[MAXC]; /* C string or bytes: at most this many bytes */
  guint16 exit_max[MAXC];
  guint8 entry_var[MAXC]; /* V_INT, V_CSTR or V_BYTES */
  guint8 exit_var[MAXC];
  guint8 entry_lenidx[MAXC]; /* bytes: the value holding the length; LEN_CONST: max */
  guint8 exit_lenidx[MAXC];
  guint8 where_phase; /* 0, W_AT_ENTRY or W_AT_EXIT */
  guint8 var_entry; /* the entry record is built, tested, then written (not copied) */
  guint8 var_exit;
  guint8 ncap_entry; /* captures per phase */
  guint8 ncap_exit;
  guint8 hold_entry; /* an exit predicate: the entry record waits in Inv */
  guint8 pad[6];
  const struct _WOp * prog; /* the predicate (instr/ctier/wherevm.py) */
  guint32 prog_len;
  guint32 pad2;
} Desc;

#define V_INT 0
#define V_CSTR 1
#define V_BYTES 2
#define V_BACKTRACE 3 /* max: the depth */
#define LEN_CONST 0xff

/* The entry record held until an exit predicate decides (Gum's invocation
 * data is 512 bytes; instr/ctier/wherevm.py HOLD_MAX keeps the body within). */
#define HOLD_MAX 256

typedef struct {
  guint64 ts;
  guint64 stash[MAXC];
  guint64 skip; /* the entry's predicate said no: no exit record either */
  guint32 held_len; /* body bytes of the held entry record */
  guint32 held_tid;
  guint64 held_ts;
  guint64 held[HOLD_MAX / 8];
} Inv;

typedef struct {
  gint64 sec;
  gint64 nsec;
} TimeSpec;

extern Ring ring;
extern int clock_gettime (int clk, TimeSpec * ts);
extern int sched_yield (void);
extern int gettid (void);
extern int getpid (void);
/* 0 while thread tid of this process exists; sched_yield (always 0) without one. */
extern int tgkill (int tgid, int tid, int sig);

static guint64
now_ns (void)
{
  TimeSpec t;
  clock_gettime (1, &t);
  return (guint64) t.sec * 1000000000ULL + (guint64) t.nsec;
}

/* gum_invocation_context_get_thread_id() costs a syscall per call (~0.3 us
 * here); the thread id is cached in TLS instead. A forked child keeps its
 * parent's: its copy of this agent reports nothing (under child gating the
 * child gets an agent of its own, and Frida unloads the copy). It used to be
 * reset by an atfork handler in this module, which stayed registered after
 * the module was freed: every fork of a program instr had left killed the
 * child (SIGSEGV in __run_postfork_handlers). glibc cannot unregister one. */
static guint32
current_tid (void)
{
  gpointer v = gum_tls_key_get_value (ring.tid_key);
  if (v == NULL)
  {
    v = GSIZE_TO_POINTER ((gsize) gettid ());
    gum_tls_key_set_value (ring.tid_key, v);
  }
  return (guint32) GPOINTER_TO_SIZE (v);
}

${RECORD_C}
static void
emit (Desc * d, gint size, guint phase, guint tid, guint64 ts, guint64 * slots, guint n)
{
  guint i;
  for (;;)
  {
    gint e = ring.epoch;
    gint b = e & 1;
    g_atomic_int_add (&ring.inflight[b], 1);
    if (ring.epoch != e)
    {
      g_atomic_int_add (&ring.inflight[b], -1);
      continue;
    }
    if (ring.reserved[b] <= ring.cap - size)
    {
      gint off = g_atomic_int_add (&ring.reserved[b], size);
      if (off <= ring.cap - size)
      {
        guint8 * p = ring.buf[b] + off;
        guint64 * q = (guint64 *) (p + 24);
        *(guint16 *) p = (guint16) size;
        p[2] = (guint8) phase;
        p[3] = 0;
        *(guint32 *) (p + 4) = d->probe;
        *(guint32 *) (p + 8) = d->site;
        *(guint32 *) (p + 12) = tid;
        *(guint64 *) (p + 16) = ts;
        for (i = 0; i != n; i++)
          q[i] = slots[i];
        g_atomic_int_add (&ring.inflight[b], -1);
        return;
      }
      /* The first reservation that does not fit marks the end of the
       * half's records (later ones start past the end). */
      if (off <= ring.cap - 2)
        *(guint16 *) (ring.buf[b] + off) = 0;
    }
    g_atomic_int_add (&ring.inflight[b], -1);
    if (ring.stopped)
      return;
    /* A forked child's copy of the ring is drained by nobody (the child
     * of a program traced without -F keeps the hooks it inherited): it
     * drops there, or the child would wait for ever, and its parent on it. */
    if (ring.drop_mode || (ring.owner_pid != 0 && getpid () != ring.owner_pid))
    {
      g_atomic_int_add (&ring.drops[d->slot], 1);
      return;
    }
    while (ring.epoch == e && !ring.stopped)
      sched_yield ();
  }
}

/* Entry values per the descriptor (and the stash for the exit). */
static void
collect_entry (GumInvocationContext * ic, Desc * d, guint64 ts, guint64 * slots)
{
  guint i, n;

  if (d->need_inv)
  {
    Inv * inv = (Inv *) gum_invocation_context_get_listener_invocation_data (ic, sizeof (Inv));
    inv->ts = ts;
    n = d->n_stash;
    for (i = 0; i != n; i++)
      inv->stash[i] = (guint64) (gsize) gum_invocation_context_get_nth_argument (ic, d->stash_idx[i]);
  }
  n = d->n_entry;
  for (i = 0; i != n; i++)
  {
    if (d->entry_kind[i] == K_ARG)
      slots[i] = (guint64) (gsize) gum_invocation_context_get_nth_argument (ic, d->entry_idx[i]);
    else
      slots[i] = (guint64) (gsize) gum_invocation_context_get_return_address (ic);
  }
}

static void
collect_exit (GumInvocationContext * ic, Desc * d, guint64 ts, guint64 * slots)
{
  Inv * inv = NULL;
  guint i, n, k;

  if (d->need_inv)
    inv = (Inv *) gum_invocation_context_get_listener_invocation_data (ic, sizeof (Inv));
  n = d->n_exit;
  for (i = 0; i != n; i++)
  {
    k = d->exit_kind[i];
    if (k == K_RETVAL)
      slots[i] = (guint64) (gsize) gum_invocation_context_get_return_value (ic);
    else if (k == K_STASHED)
      slots[i] = inv->stash[d->exit_idx[i]];
    else if (k == K_DURATION)
      slots[i] = ts - inv->ts;
    else
      slots[i] = (guint64) (gsize) gum_invocation_context_get_return_address (ic);
  }
}

/* The return address and the caller's frame pointer (backtraces). */
static void
listener_frame (GumInvocationContext * ic, guint64 * fr)
{
  fr[0] = (guint64) (gsize) gum_invocation_context_get_return_address (ic);
#if defined(__x86_64__)
  fr[1] = ic->cpu_context->rbp;
#else
  fr[1] = 0;
#endif
}

void
on_enter (GumInvocationContext * ic)
{
  Desc * d = (Desc *) gum_invocation_context_get_listener_function_data (ic);
  guint64 ts = now_ns ();
  guint64 slots[MAXC];
  guint64 fr[2];
  int ok;

  collect_entry (ic, d, ts, slots);
  if (!d->var_entry)
  {
    if (d->entry_size != 0)
      emit (d, d->entry_size, 0, current_tid (), ts, slots, d->n_entry);
    return;
  }
  listener_frame (ic, fr);
  if (d->hold_entry)
  {
    hold_entry (d, ic, fr, ts, slots);
    return;
  }
  ok = build_record (d, fr, 0, ts, slots, d->ncap_entry, d->entry_max, d->entry_var,
      d->entry_lenidx, d->entry_size != 0);
  if (d->need_inv)
    ((Inv *) gum_invocation_context_get_listener_invocation_data (ic, sizeof (Inv)))->skip = !ok;
}

void
on_leave (GumInvocationContext * ic)
{
  Desc * d = (Desc *) gum_invocation_context_get_listener_function_data (ic);
  guint64 ts = now_ns ();
  guint64 slots[MAXC];

  if (d->where_phase == W_AT_ENTRY && d->need_inv &&
      ((Inv *) gum_invocation_context_get_listener_invocation_data (ic, sizeof (Inv)))->skip)
    return;
  collect_exit (ic, d, ts, slots);
  if (d->hold_entry)
  {
    release_held (d, ic, ts, slots);
    return;
  }
  if (!d->var_exit)
  {
    emit (d, d->exit_size, 1, current_tid (), ts, slots, d->n_exit);
    return;
  }
  build_record (d, NULL, 1, ts, slots, d->ncap_exit, d->exit_max, d->exit_var, d->exit_lenidx, 1);
}

${TOOL_C}
${FAST_C}

${STAGE_C}
/* Consumer: flip halves and wait for producers on the old one. Returns the
 * old half's index, with bit 1 set when spin_limit yields were not enough
 * and bit 2 set when the half filled up. */
gint
ring_swap (gint spin_limit)
{
  gint e = ring.epoch;
  gint b = e & 1;
  gint o = b ^ 1;
  gint spins = 0;
  gint timed_out = 0;
  gint len, off, n;
  guint8 * p;

  ring.reserved[o] = 0;
  g_atomic_int_add (&ring.epoch, 1);
  while (ring.inflight[b] != 0)
  {
    if (spins++ >= spin_limit)
    {
      timed_out = 2;
      break;
    }
    sched_yield ();
  }
  /* Whole records, up to the end mark or the end of the half. */
  len = ring.reserved[b];
  if (len > ring.cap - 256)
    timed_out |= 4; /* the half (nearly) filled up: drain again soon */
  if (len > ring.cap)
    len = ring.cap;
  p = ring.buf[b];
  off = 0;
  n = 0;
  while (off + 24 <= len)
  {
    gint size = *(guint16 *) (p + off);
    if (size < 24 || (size & 7) != 0 || off + size > len)
      break;
    off += size;
    n++;
  }
  ring.out_len = off;
  ring.out_count = n;
  return b | timed_out;
}

/* The JS tier's record header, all but the size: one call from JS. */
void
js_head (guint32 off, guint32 probe, guint32 site, guint32 phase_flags)
{
  guint8 * p = ring.jsbuf + off;
  p[2] = (guint8) (phase_flags & 0xff);
  p[3] = (guint8) (phase_flags >> 8);
  *(guint32 *) (p + 4) = probe;
  *(guint32 *) (p + 8) = site;
  *(guint32 *) (p + 12) = current_tid ();
  *(guint64 *) (p + 16) = now_ns ();
}

/* Lifecycle hooks (exit, _exit, exec*, abort) are native so that a child
 * forked without Frida's child gating never enters JS for them (the script
 * lock may have been held by another thread at fork time: a deadlock). In
 * the traced process they call back into JS. */
typedef struct {
  gint kind;
  gint pid;
  void (* cb) (gint kind, gpointer arg0, gpointer ret, guint tid);
} LifeDesc;

void
life_enter (GumInvocationContext * ic)
{
  LifeDesc * d = (LifeDesc *) gum_invocation_context_get_listener_function_data (ic);
  if (getpid () != d->pid)
    return;
  d->cb (d->kind, gum_invocation_context_get_nth_argument (ic, 0),
      gum_invocation_context_get_return_address (ic), current_tid ());
}

void
life_leave (GumInvocationContext * ic)
{
  LifeDesc * d = (LifeDesc *) gum_invocation_context_get_listener_function_data (ic);
  if (getpid () != d->pid)
    return;
  d->cb (d->kind | 0x100, NULL, NULL, current_tid ());
}

void
ring_setup (void)
{
  ring.tid_key = gum_tls_key_new ();
  ring.stage_key = gum_tls_key_new ();
}

void
ring_stop (void)
{
  g_atomic_int_add (&ring.stopped, 1);
}

gint
ring_stage_offset (void)
{
  return (gint) ((guint8 *) &ring.stage - (guint8 *) &ring);
}

/* One time-ordered stream from the native half and the JS batch: a stable
 * merge by timestamp, so each stream keeps its own order (and so does every
 * thread, whose records are in order in both). Records are 8-byte multiples. */
gint
merge_records (const guint8 * a, gint alen, const guint8 * b, gint blen, guint8 * out)
{
  gint i = 0, j = 0, o = 0, k, sz;
  const guint64 * src;
  guint64 * dst;

  while (i < alen || j < blen)
  {
    const guint8 * r;
    if (j >= blen || (i < alen && *(const guint64 *) (a + i + 16) <= *(const guint64 *) (b + j + 16)))
    {
      r = a + i;
      sz = *(const guint16 *) r;
      if (sz < 24 || (sz & 7) != 0 || i + sz > alen)
        break;
      i += sz;
    }
    else
    {
      r = b + j;
      sz = *(const guint16 *) r;
      if (sz < 24 || (sz & 7) != 0 || j + sz > blen)
        break;
      j += sz;
    }
    src = (const guint64 *) r;
    dst = (guint64 *) (out + o);
    for (k = 0; k != sz / 8; k++)
      dst[k] = src[k];
    o += sz;
  }
  return o;
}

gint
layout_check (void)
{
  return (gint) (sizeof (Ring) * 100000 + sizeof (Stage) * 1000 + sizeof (Desc));
}
`;
