// The native tier: one static C source, compiled once per session by CModule
// (TinyCC). It is never templated: everything a probe needs is data in a
// per-site descriptor that JS allocates and passes as the listener's data.
//
// Records go into a two-half ring (multi-producer, single consumer):
//   producer: e = epoch; b = e & 1; inflight[b]++; if epoch != e: undo, retry.
//             off = reserved[b] += size; if it fits: write, committed[b] += size.
//             Otherwise the half is full: drop (count per probe) or, in block
//             mode, wait until the consumer flips the epoch, then retry.
//             inflight[b]--.
//   consumer: reset the other half, epoch++ (a locked add: a full barrier, so
//             a producer either sees the new epoch or is counted in
//             inflight[b]), wait for inflight[b] == 0, then committed[b] bytes
//             are whole records: successful reservations are always a prefix
//             of the half (once one fails, every later one starts past the end).
// Only g_atomic_int_add exists in CModule's glib, hence 32-bit counters and
// halves below 1 GiB.

import { HEADER_SIZE, PlanOptions, ProbePlan, SLOT_SIZE } from "./protocol.js";
import { Layout } from "./layout.js";

const C_SOURCE = `
#include <gum/guminterceptor.h>

#define MAXC 16
#define K_ARG 1
#define K_RETVAL 2
#define K_CALLER 3
#define K_DURATION 4
#define K_STASHED 5

typedef struct {
  volatile gint epoch;
  volatile gint drop_mode;
  volatile gint reserved[2];
  volatile gint committed[2];
  volatile gint inflight[2];
  volatile gint stopped;
  gint cap;
  guint8 * buf[2];
  volatile gint * drops;
  guint8 * jsbuf;
} Ring;

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
} Desc;

typedef struct {
  guint64 ts;
  guint64 stash[MAXC];
} Inv;

typedef struct {
  gint64 sec;
  gint64 nsec;
} TimeSpec;

extern Ring ring;
extern int clock_gettime (int clk, TimeSpec * ts);
extern int sched_yield (void);

static guint64
now_ns (void)
{
  TimeSpec t;
  clock_gettime (1, &t);
  return (guint64) t.sec * 1000000000ULL + (guint64) t.nsec;
}

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
        g_atomic_int_add (&ring.committed[b], size);
        g_atomic_int_add (&ring.inflight[b], -1);
        return;
      }
    }
    g_atomic_int_add (&ring.inflight[b], -1);
    if (ring.stopped)
      return;
    if (ring.drop_mode)
    {
      g_atomic_int_add (&ring.drops[d->slot], 1);
      return;
    }
    while (ring.epoch == e && !ring.stopped)
      sched_yield ();
  }
}

void
on_enter (GumInvocationContext * ic)
{
  Desc * d = (Desc *) gum_invocation_context_get_listener_function_data (ic);
  guint64 ts = now_ns ();
  guint64 slots[MAXC];
  guint i, n;

  if (d->need_inv)
  {
    Inv * inv = (Inv *) gum_invocation_context_get_listener_invocation_data (ic, sizeof (Inv));
    inv->ts = ts;
    n = d->n_stash;
    for (i = 0; i != n; i++)
      inv->stash[i] = (guint64) (gsize) gum_invocation_context_get_nth_argument (ic, d->stash_idx[i]);
  }
  if (d->entry_size == 0)
    return;
  n = d->n_entry;
  for (i = 0; i != n; i++)
  {
    if (d->entry_kind[i] == K_ARG)
      slots[i] = (guint64) (gsize) gum_invocation_context_get_nth_argument (ic, d->entry_idx[i]);
    else
      slots[i] = (guint64) (gsize) gum_invocation_context_get_return_address (ic);
  }
  emit (d, d->entry_size, 0, gum_invocation_context_get_thread_id (ic), ts, slots, n);
}

void
on_leave (GumInvocationContext * ic)
{
  Desc * d = (Desc *) gum_invocation_context_get_listener_function_data (ic);
  guint64 ts = now_ns ();
  guint64 slots[MAXC];
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
  emit (d, d->exit_size, 1, gum_invocation_context_get_thread_id (ic), ts, slots, n);
}

/* Consumer: flip halves and wait for producers on the old one. Returns the
 * old half's index, with bit 1 set when spin_limit yields were not enough. */
gint
ring_swap (gint spin_limit)
{
  gint e = ring.epoch;
  gint b = e & 1;
  gint o = b ^ 1;
  gint spins = 0;

  ring.reserved[o] = 0;
  ring.committed[o] = 0;
  g_atomic_int_add (&ring.epoch, 1);
  while (ring.inflight[b] != 0)
  {
    if (spins++ >= spin_limit)
      return b | 2;
    sched_yield ();
  }
  return b;
}

void
js_stamp (guint32 off)
{
  *(guint64 *) (ring.jsbuf + off) = now_ns ();
}

void
ring_stop (void)
{
  g_atomic_int_add (&ring.stopped, 1);
}

gint
layout_check (void)
{
  return (gint) (sizeof (Ring) * 1000 + sizeof (Desc));
}
`;

// Byte offsets of the C structs above (checked against sizeof at start-up).
const RING_SIZE = 72;
const R_EPOCH = 0;
const R_DROP_MODE = 4;
const R_COMMITTED = 16;
const R_CAP = 36;
const R_BUF = 40;
const R_DROPS = 56;
const R_JSBUF = 64;

const DESC_SIZE = 100;
const D_PROBE = 0;
const D_SITE = 4;
const D_SLOT = 8;
const D_ENTRY_SIZE = 12;
const D_EXIT_SIZE = 14;
const D_N_ENTRY = 16;
const D_N_EXIT = 17;
const D_N_STASH = 18;
const D_NEED_INV = 19;
const D_ENTRY_KIND = 20;
const D_ENTRY_IDX = 36;
const D_EXIT_KIND = 52;
const D_EXIT_IDX = 68;
const D_STASH_IDX = 84;

const K_ARG = 1;
const K_RETVAL = 2;
const K_CALLER = 3;
const K_DURATION = 4;
const K_STASHED = 5;

const SWAP_SPIN_LIMIT = 200000;

/** Memory.alloc() does not promise zeroed memory; the ring and descriptors need it. */
function zalloc(size: number): NativePointer {
    const p = Memory.alloc(size);
    p.writeByteArray(new ArrayBuffer(size));
    return p;
}

export interface Drained {
    data: ArrayBuffer;
    /** Producers were still writing when the wait gave up (should not happen). */
    incomplete: boolean;
}

export class NativeRing {
    readonly cm: CModule;
    readonly cap: number;
    private readonly state: NativePointer;
    private readonly bufs: NativePointer[];
    private readonly drops: NativePointer;
    private readonly nSlots: number;
    private readonly swapFn: NativeFunction<number, [number]>;
    private readonly stopFn: NativeFunction<void, []>;
    /** Writes the monotonic clock (ns) at `jsBase + off`; used by the JS tier. */
    readonly stamp: NativeFunction<void, [number]>;
    /** Descriptors must outlive their listeners: never freed. */
    private readonly keep: NativePointer[] = [];

    constructor(options: PlanOptions, nSlots: number, jsBase: NativePointer) {
        const total = Math.max(128 * 1024, Math.min(options.buffer_bytes, 1 << 30));
        this.cap = Math.floor(total / 2 / 8) * 8;
        this.nSlots = Math.max(1, nSlots);
        this.state = zalloc(RING_SIZE);
        this.bufs = [Memory.alloc(this.cap), Memory.alloc(this.cap)];
        this.drops = zalloc(4 * this.nSlots);
        this.state.add(R_DROP_MODE).writeS32(options.on_full === "drop" ? 1 : 0);
        this.state.add(R_CAP).writeS32(this.cap);
        this.state.add(R_BUF).writePointer(this.bufs[0]);
        this.state.add(R_BUF + 8).writePointer(this.bufs[1]);
        this.state.add(R_DROPS).writePointer(this.drops);
        this.state.add(R_JSBUF).writePointer(jsBase);
        this.cm = new CModule(C_SOURCE, {
            ring: this.state,
            clock_gettime: Module.getGlobalExportByName("clock_gettime"),
            sched_yield: Module.getGlobalExportByName("sched_yield"),
        });
        const check = new NativeFunction(this.cm.layout_check, "int", [])();
        if (check !== RING_SIZE * 1000 + DESC_SIZE) throw new Error(`native layout mismatch (${check})`);
        const exclusive = { scheduling: "exclusive" as const };
        this.swapFn = new NativeFunction(this.cm.ring_swap, "int", ["int"], exclusive);
        this.stopFn = new NativeFunction(this.cm.ring_stop, "void", [], exclusive);
        this.stamp = new NativeFunction(this.cm.js_stamp, "void", ["uint32"], exclusive);
    }

    /** A descriptor for one site of a native-tier probe. */
    descriptor(p: ProbePlan, layout: Layout, slot: number, site: number): NativePointer {
        const d = zalloc(DESC_SIZE);
        d.add(D_PROBE).writeU32(p.id);
        d.add(D_SITE).writeU32(site);
        d.add(D_SLOT).writeU32(slot);
        const entry = p.entry ?? [];
        const exit = p.exit ?? [];
        d.add(D_ENTRY_SIZE).writeU16(p.entry === null ? 0 : HEADER_SIZE + SLOT_SIZE * entry.length);
        d.add(D_EXIT_SIZE).writeU16(p.exit === null ? 0 : HEADER_SIZE + SLOT_SIZE * exit.length);
        d.add(D_N_ENTRY).writeU8(entry.length);
        d.add(D_N_EXIT).writeU8(exit.length);
        d.add(D_N_STASH).writeU8(layout.stash.length);
        d.add(D_NEED_INV).writeU8(layout.needEntryTs || layout.stash.length > 0 ? 1 : 0);
        entry.forEach((c, i) => {
            d.add(D_ENTRY_KIND + i).writeU8(c.src === "arg" ? K_ARG : K_CALLER);
            d.add(D_ENTRY_IDX + i).writeU8(c.src === "arg" ? c.index : 0);
        });
        exit.forEach((c, i) => {
            let kind = K_CALLER;
            let idx = 0;
            if (c.src === "arg") {
                kind = K_STASHED;
                idx = layout.stash.indexOf(c.index);
            } else if (c.src === "retval") {
                kind = K_RETVAL;
            } else if (c.src === "duration") {
                kind = K_DURATION;
            }
            d.add(D_EXIT_KIND + i).writeU8(kind);
            d.add(D_EXIT_IDX + i).writeU8(idx);
        });
        layout.stash.forEach((a, i) => d.add(D_STASH_IDX + i).writeU8(a));
        this.keep.push(d);
        return d;
    }

    attach(address: NativePointer, layout: Layout, desc: NativePointer): InvocationListener {
        const cb: { onEnter?: NativePointer; onLeave?: NativePointer } = {};
        if (layout.hookEntry) cb.onEnter = this.cm.on_enter as NativePointer;
        if (layout.hookExit) cb.onLeave = this.cm.on_leave as NativePointer;
        return Interceptor.attach(address, cb as NativeInvocationListenerCallbacks, desc);
    }

    /** Flip halves and copy out the finished records of the old one. */
    drain(): Drained | null {
        const r = this.swapFn(SWAP_SPIN_LIMIT);
        const b = r & 1;
        const len = this.state.add(R_COMMITTED + 4 * b).readS32();
        if (len <= 0) return null;
        const data = this.bufs[b].readByteArray(len);
        if (data === null) return null;
        return { data, incomplete: (r & 2) !== 0 };
    }

    /** Cumulative records dropped for the probe in drop slot `slot`. */
    dropped(slot: number): number {
        return slot < this.nSlots ? this.drops.add(4 * slot).readS32() : 0;
    }

    /** Release producers blocked in block mode and make them return at once. */
    stop(): void {
        this.stopFn();
    }

    epoch(): number {
        return this.state.add(R_EPOCH).readS32();
    }
}
