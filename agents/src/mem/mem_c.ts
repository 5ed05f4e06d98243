// The memory tracker's C source (CModule, TinyCC), separate from the probe
// tier's native_c.ts. Static: nothing is templated; sizes are arguments of
// mem_setup(). See docs/memory.md for the design and its limits.
//
// Hooks are installed with Interceptor.replaceFast: each h_* function below
// replaces one allocator entry point and calls the original through
// st.real[i] (written by JS right after replaceFast returns; a hook that runs
// before that spins until it is set).
//
// State lives in memory allocated (zeroed) by JS: CModule globals are
// read-only. x86_64 only: 64-bit atomics are inline `lock xadd`/`cmpxchg`
// (TinyCC has no 8-byte __atomic builtins), the thread identity is %fs:0 and
// stacks are walked through frame pointers.
//
// Calls made on the tool's threads (Frida's, instr's agent's) are not counted
// unless asked (--include-tool): see tool_thread below and threads.ts.
//
// Every count a hooked call makes (its table shard's counters, histogram and
// kinds, its stack's calls and bytes, live bytes) is made while it holds its
// table shard's lock, so mem_snapshot(), holding every shard's lock, reads
// all of them at one instant: a report's figures agree with each other.

export const MEM_MAX_DEPTH = 32;
export const MEM_STACK_SIZE = 32 + 8 * MEM_MAX_DEPTH; // hash, depth, kind, n, bytes, frames
export const MEM_BLOCK_SIZE = 40; // addr, size, seq, stack u32, flags u32, tick u32, pad
export const MEM_AGG_SIZE = 56; // live n, live bytes, leaked n, leaked bytes, indirect bytes, oldest seq, oldest tick
export const MEM_STATE_BYTES = 1 << 20;
export const MEM_NKINDS = 16;
export const MEM_NSCALARS = 32; // scalar counters first in a snapshot; instr/mem/model.py names them

// Indices of st.real[] (and of the kind of allocation).
export const REAL = {
    malloc: 0,
    calloc: 1,
    realloc: 2,
    free: 3,
    posix_memalign: 4,
    aligned_alloc: 5,
    memalign: 6,
    valloc: 7,
    pvalloc: 8,
    mmap: 9,
    munmap: 10,
    // operator new / delete variants: 16..47
} as const;
export const NEW_BASE = 16;
export const DELETE_BASE = 32;

export const MEM_C_SOURCE = `
#include <glib.h>
#include <gum/guminterceptor.h>

#define MAXDEPTH ${MEM_MAX_DEPTH}
#define NSHARD 64
#define GUARD_LINES 512
#define NREAL 48
#define NKINDS ${MEM_NKINDS}
#define NSCALARS ${MEM_NSCALARS}
#define TSETS_BITS 10
#define TSETS (1 << TSETS_BITS) /* thread cache: sets of 4 entries, one cache line each */
#define NTIDS 64
#define NRANGES 64

#define K_MALLOC 0
#define K_CALLOC 1
#define K_REALLOC 2
#define K_MEMALIGN 3
#define K_NEW 4
#define K_NEW_ARRAY 5
#define K_MMAP 6
#define K_FREE_NULL 7

#define F_REACH 1
#define F_LEAK 2
#define F_INDIRECT 4

typedef struct {
  guint64 addr;
  guint64 size;
  guint64 seq;
  guint32 stack;
  guint32 tick;
} Entry;

typedef struct {
  volatile gint lock;
  gint pad;
  guint64 mask;
  guint64 used;
  guint64 limit;
  Entry * slots;
  guint64 n_alloc;
  guint64 n_free;
  guint64 b_alloc;
  guint64 b_free;
  guint64 dropped;
  guint64 unknown_free;
  guint64 free_null; /* heap: free(NULL) and delete(NULL), counted in the shard of the thread */
  guint64 calls; /* maps: mmap calls (failed ones in the shard of the thread) */
  guint64 uncalls; /* maps: munmap calls */
  guint64 kind_n[NKINDS];
  guint64 kind_b[NKINDS];
  guint64 hist_n[65];
  guint64 hist_b[65];
} Shard;

typedef struct {
  guint64 hash;
  guint32 depth;
  guint32 kind;
  guint64 n_alloc;
  guint64 b_alloc;
  guint64 frames[MAXDEPTH];
} Stack;

typedef struct {
  volatile gint lock;
  gint pad;
  guint64 mask;
  guint32 * slots;
} SShard;

typedef struct {
  guint64 addr;
  guint64 size;
  guint64 seq;
  guint32 stack;
  guint32 flags;
  guint32 tick;
  guint32 pad;
} Blk;

/* The thread cache: thread pointer -> (tid << 1) | is-the-tool's. */
typedef struct {
  volatile guint64 self;
  volatile guint64 tag;
} TEnt;

typedef struct {
  void * volatile real[NREAL];
  guint8 slow[NREAL]; /* hooked with Interceptor.replace: the caller comes from the invocation */
  guint64 main_lo;
  guint64 main_hi;
  guint32 depth;
  volatile gint tools; /* 1: calls on the tool's threads, or from the agent's code, are not counted */
  volatile gint tid_off; /* the thread id in glibc's struct pthread (validates cache entries); 0: unknown */
  gint start_off; /* the start routine in glibc's struct pthread; 0: unknown */
  guint64 agent_lo; /* the agent's code: a call from there is the tool's */
  guint64 agent_hi;
  volatile guint32 tick;
  guint32 max_stacks;
  volatile guint64 n_stacks;
  volatile guint64 guard_active;
  volatile guint64 live_bytes;
  volatile guint64 peak_bytes;
  volatile guint64 map_live;
  volatile guint64 map_peak;
  volatile guint64 stack_overflow;
  volatile guint64 guard_overflow;
  volatile guint64 tool_calls; /* hooked calls left out as the tool's */
  volatile guint64 tool_decisions; /* threads (re)examined by tool_thread_slow */
  gint n_tids;
  gint n_ranges;
  gint32 tids[NTIDS]; /* Frida's threads when the tracker armed */
  guint64 ranges[2 * NRANGES]; /* Frida's code: the agent, anonymous executable mappings */
  Stack * stacks;
  Shard heap[NSHARD];
  Shard maps[NSHARD];
  SShard sshard[NSHARD];
  volatile guint64 guard[GUARD_LINES * 8];
  TEnt tcache[TSETS * 4];
} State;

extern State st;

/* ---------------------------------------------------------------- atomics */

static guint64 xadd64 (volatile guint64 * p, guint64 v)
{
  __asm__ __volatile__ ("lock; xaddq %0, %1" : "+r" (v), "+m" (*p) : : "memory");
  return v;
}

static int cas64 (volatile guint64 * p, guint64 expected, guint64 desired)
{
  guint64 prev;
  __asm__ __volatile__ ("lock; cmpxchgq %2, %1"
      : "=a" (prev), "+m" (*p) : "r" (desired), "0" (expected) : "memory");
  return prev == expected;
}

static int cas32 (volatile gint * p, gint expected, gint desired)
{
  gint prev;
  __asm__ __volatile__ ("lock; cmpxchgl %2, %1"
      : "=a" (prev), "+m" (*p) : "r" (desired), "0" (expected) : "memory");
  return prev == expected;
}

static void spin_lock (volatile gint * l)
{
  while (!cas32 (l, 0, 1))
  {
    while (*l != 0)
      __asm__ __volatile__ ("pause" : : : "memory");
  }
}

static void spin_unlock (volatile gint * l)
{
  __asm__ __volatile__ ("" : : : "memory");
  *l = 0;
}

static void max64 (volatile guint64 * p, guint64 v)
{
  guint64 cur = *p;
  while (v > cur)
  {
    if (cas64 (p, cur, v))
      return;
    cur = *p;
  }
}

static guint64 self_id (void)
{
  guint64 v;
  __asm__ __volatile__ ("movq %%fs:0, %0" : "=r" (v));
  return v;
}

/* Orders allocations (oldest first) without a shared counter: the TSC. */
static guint64 stamp (void)
{
  guint32 lo, hi;
  __asm__ __volatile__ ("rdtsc" : "=a" (lo), "=d" (hi));
  return ((guint64) hi << 32) | lo;
}

static guint64 mix (guint64 x)
{
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

static int bucket (guint64 v)
{
  guint64 r;
  if (v == 0)
    return 0;
  __asm__ ("bsrq %1, %0" : "=r" (r) : "r" (v));
  return (int) r + 1;
}

/* ---------------------------------------------------------------- recursion guard
 * A thread inside a hooked function that may call another hooked one
 * (realloc -> malloc, operator new -> malloc, memalign -> malloc) marks
 * itself in a table keyed by its thread pointer; nested calls on that
 * thread pass straight through. guard_active > 0 only while some thread is
 * marked, so the common path costs one load. A program thread building a
 * report at exit marks itself the same way (mem_ignore_thread). */

static int guarded_as (guint64 me)
{
  volatile guint64 * line;
  int i;
  if (st.guard_active == 0)
    return 0;
  line = &st.guard[(mix (me) & (GUARD_LINES - 1)) * 8];
  for (i = 0; i != 8; i++)
    if (line[i] == me)
      return 1;
  return 0;
}

static int guarded (void)
{
  return guarded_as (self_id ());
}

/* ---------------------------------------------------------------- the tool's threads
 * A call is the tool's, and not counted (unless --include-tool), when its
 * thread is Frida's (listed when the tracker armed, or started by a routine
 * in Frida's code: glib's thread proxy in the agent, Frida's loader, a
 * CModule) or when its caller is the agent's code (Frida's heap growing, JS
 * run on a program thread). The decision per thread is cached in st.tcache,
 * keyed by the thread pointer (%fs:0) and checked against the thread id
 * glibc keeps in its struct pthread, since the next thread to get a cached
 * stack gets the same thread pointer: the common path reads %fs:0, the
 * thread id in the descriptor and one cache line of st.tcache. Nothing here
 * allocates (a hook may run inside Frida's heap with its lock held) nor
 * calls libc. */

static gint32 sys_gettid (void)
{
  guint64 r = 186; /* SYS_gettid on x86_64 */
  __asm__ __volatile__ ("syscall" : "+a" (r) : : "rcx", "r11", "memory");
  return (gint32) r;
}

static int in_tool_code (guint64 a)
{
  int i;
  for (i = 0; i < st.n_ranges; i++)
    if (a >= st.ranges[2 * i] && a < st.ranges[2 * i + 1])
      return 1;
  return 0;
}

static TEnt * tset (guint64 me)
{
  return &st.tcache[((me * 0x9e3779b97f4a7c15ULL) >> (64 - TSETS_BITS)) * 4];
}

static guint32 tid_of (guint64 me)
{
  gint off = st.tid_off;
  return off > 0 ? *(volatile guint32 *) (me + (guint64) off) : 0;
}

static int tool_thread_slow (guint64 me)
{
  TEnt * set = tset (me);
  gint32 tid = sys_gettid ();
  gint off = st.tid_off;
  guint64 tag;
  int tool = 0, i;
  for (i = 0; i < st.n_tids && !tool; i++)
    if (st.tids[i] == tid)
      tool = 1;
  if (!tool && st.start_off > 0 && in_tool_code (*(volatile guint64 *) (me + (guint64) st.start_off)))
    tool = 1;
  if (off > 0 && *(volatile gint32 *) (me + (guint64) off) != tid)
  {
    st.tid_off = 0; /* not glibc's thread id after all: entries go unchecked */
    off = 0;
  }
  xadd64 (&st.tool_decisions, 1);
  tag = ((guint64) (guint32) (off > 0 ? tid : 0) << 1) | (guint64) tool;
  for (i = 0; i != 4; i++)
    if (set[i].self == me)
    {
      set[i].tag = tag;
      return tool;
    }
  for (i = 0; i != 4; i++)
    if (set[i].self == 0 && cas64 (&set[i].self, 0, me))
    {
      set[i].tag = tag;
      return tool;
    }
  /* A full set: take a way. Its owner, if alive, then reads a thread id not
   * its own and decides again; without the id check, nothing is evicted. */
  if (off > 0)
  {
    i = (int) ((me >> 12) & 3);
    set[i].self = me;
    set[i].tag = tag;
  }
  return tool;
}

/* 1 when the calling thread is the tool's. */
static int tool_thread (guint64 me)
{
  TEnt * set = tset (me);
  guint32 tid = tid_of (me);
  int i;
  for (i = 0; i != 4; i++)
  {
    if (set[i].self == me)
    {
      guint64 tag = set[i].tag;
      if ((guint32) (tag >> 1) == tid)
        return (int) (tag & 1);
      break;
    }
  }
  return tool_thread_slow (me);
}

/* Whether a call is the tool's: its thread is, or its caller is the agent's
 * code. Counted in tool_calls if so. */
static int tool_call (guint64 me, guint64 caller)
{
  if (st.tools && ((caller >= st.agent_lo && caller < st.agent_hi) || tool_thread (me)))
  {
    xadd64 (&st.tool_calls, 1);
    return 1;
  }
  return 0;
}

/* Whether a hooked call is left out: nested in a hooked call on its thread,
 * or the tool's (then counted in tool_calls). CALLER: who called the hooked
 * function. */
static int skip (guint64 caller)
{
  guint64 me = self_id ();
  return guarded_as (me) || tool_call (me, caller);
}

static volatile guint64 * guard_enter (void)
{
  guint64 me = self_id ();
  volatile guint64 * line = &st.guard[(mix (me) & (GUARD_LINES - 1)) * 8];
  int i;
  xadd64 (&st.guard_active, 1);
  for (i = 0; i != 8; i++)
    if (line[i] == 0 && cas64 (&line[i], 0, me))
      return &line[i];
  xadd64 (&st.guard_active, (guint64) -1);
  xadd64 (&st.guard_overflow, 1);
  return NULL;
}

static void guard_leave (volatile guint64 * slot)
{
  if (slot == NULL)
    return;
  __asm__ __volatile__ ("" : : : "memory");
  *slot = 0;
  xadd64 (&st.guard_active, (guint64) -1);
}

static void * real_fn (int i)
{
  void * f;
  while ((f = st.real[i]) == NULL)
    __asm__ __volatile__ ("pause" : : : "memory");
  return f;
}

/* Who called the hooked function IDX (FP: the hook's frame). */
static guint64 caller_of (guint64 * fp, int idx)
{
  if (st.slow[idx])
  {
    GumInvocationContext * ic = gum_interceptor_get_current_invocation ();
    return ic != NULL ? (guint64) gum_invocation_context_get_return_address (ic) : 0;
  }
  return fp[1];
}

/* ---------------------------------------------------------------- stacks */

static guint32 walk (guint64 * fp, guint64 * out, int idx)
{
  guint64 lo = (guint64) fp;
  guint64 hi;
  guint64 me = self_id ();
  guint64 * f;
  guint32 n = 0;
  if (st.slow[idx])
  {
    GumInvocationContext * ic = gum_interceptor_get_current_invocation ();
    if (ic == NULL)
      return 0;
    out[n++] = (guint64) gum_invocation_context_get_return_address (ic);
    lo = ic->cpu_context->rsp;
    f = (guint64 *) ic->cpu_context->rbp;
  }
  else
  {
    out[n++] = fp[1];
    f = (guint64 *) fp[0];
  }
  if (me > lo && me - lo < (256ULL << 20))
    hi = me; /* a pthread: its descriptor sits just above its stack */
  else if (lo >= st.main_lo && lo < st.main_hi)
    hi = st.main_hi;
  else
    return n;
  while (n < st.depth)
  {
    guint64 a = (guint64) f;
    guint64 ret;
    if (a <= lo || a + 16 > hi || (a & 7) != 0)
      break;
    ret = f[1];
    if (ret < 0x10000)
      break;
    out[n++] = ret;
    lo = a;
    f = (guint64 *) f[0];
  }
  return n;
}

static guint64 stack_hash (guint64 * frames, guint32 depth, guint32 kind)
{
  guint64 h = (kind + 1) * 0x9e3779b97f4a7c15ULL + depth;
  guint32 i;
  for (i = 0; i != depth; i++)
    h = (h ^ frames[i]) * 0xff51afd7ed558ccdULL;
  h ^= h >> 29;
  return h == 0 ? 1 : h;
}

/* Finds or adds the stack (hash H) and adds one call of SIZE bytes to it.
 * Called with a table shard's lock held (the stack's counts change only
 * under one: see mem_snapshot); takes the stack shard's lock inside it. */
static guint32 stack_add (guint64 h, guint64 * frames, guint32 depth, guint32 kind, guint64 size)
{
  SShard * ss = &st.sshard[h & (NSHARD - 1)];
  guint64 idx;
  guint32 i;
  guint32 id = 0;
  spin_lock (&ss->lock);
  idx = (h >> 6) & ss->mask;
  for (i = 0; i <= ss->mask; i++, idx = (idx + 1) & ss->mask)
  {
    guint32 cur = ss->slots[idx];
    Stack * s;
    if (cur == 0)
    {
      guint64 nid = xadd64 (&st.n_stacks, 1);
      guint32 j;
      if (nid >= st.max_stacks)
      {
        xadd64 (&st.n_stacks, (guint64) -1);
        break;
      }
      s = &st.stacks[nid];
      s->hash = h;
      s->depth = depth;
      s->kind = kind;
      for (j = 0; j != depth; j++)
        s->frames[j] = frames[j];
      ss->slots[idx] = (guint32) nid;
      id = (guint32) nid;
      break;
    }
    s = &st.stacks[cur];
    if (s->hash == h && s->depth == depth && s->kind == kind)
    {
      guint32 j;
      for (j = 0; j != depth && s->frames[j] == frames[j]; j++)
        ;
      if (j == depth)
      {
        id = cur;
        break;
      }
    }
  }
  if (id == 0)
    xadd64 (&st.stack_overflow, 1);
  st.stacks[id].n_alloc++;
  st.stacks[id].b_alloc += size;
  spin_unlock (&ss->lock);
  return id;
}

/* ---------------------------------------------------------------- live tables */

#define HASH(addr) ((((guint64) (addr)) >> 4) * 0x9e3779b97f4a7c15ULL)
#define HOME(s, h) (((h) >> 32) & (s)->mask)

static guint64 home (Shard * s, guint64 addr)
{
  return HOME (s, HASH (addr));
}

static Shard * shard_of (Shard * tab, guint64 addr)
{
  return &tab[HASH (addr) >> 58];
}

/* The shard a thread counts its calls that have no block in (free(NULL), a failed mmap). */
static Shard * shard_of_thread (Shard * tab)
{
  return &tab[mix (self_id ()) & (NSHARD - 1)];
}

/* Called with the shard locked. Returns 0 when the table is full. */
static int tab_put (Shard * s, guint64 addr, guint64 size, guint64 seq, guint32 stack)
{
  guint64 i = home (s, addr);
  while (s->slots[i].addr != 0 && s->slots[i].addr != addr)
    i = (i + 1) & s->mask;
  if (s->slots[i].addr == 0)
  {
    if (s->used >= s->limit)
      return 0;
    s->used++;
  }
  s->slots[i].addr = addr;
  s->slots[i].size = size;
  s->slots[i].seq = seq;
  s->slots[i].stack = stack;
  s->slots[i].tick = st.tick;
  return 1;
}

/* Called with the shard locked: removes addr, copying its entry to out. */
static int tab_take (Shard * s, guint64 addr, Entry * out)
{
  guint64 i = home (s, addr);
  guint64 j;
  while (s->slots[i].addr != addr)
  {
    if (s->slots[i].addr == 0)
      return 0;
    i = (i + 1) & s->mask;
  }
  *out = s->slots[i];
  j = i;
  for (;;)
  {
    guint64 k;
    j = (j + 1) & s->mask;
    if (s->slots[j].addr == 0)
      break;
    k = home (s, s->slots[j].addr);
    if ((j > i && (k <= i || k > j)) || (j < i && (k <= i && k > j)))
    {
      s->slots[i] = s->slots[j];
      i = j;
    }
  }
  s->slots[i].addr = 0;
  s->used--;
  return 1;
}

static volatile guint64 * live_of (Shard * tab)
{
  return tab == st.maps ? &st.map_live : &st.live_bytes;
}

/* Called with the shard locked: a new block (or region) and its counts. */
static void put_block (Shard * tab, Shard * s, void * p, guint64 size, guint32 kind, guint64 h,
    guint64 * frames, guint32 depth, guint64 seq)
{
  guint32 id = stack_add (h, frames, depth, kind, size);
  int b = bucket (size);
  s->n_alloc++;
  s->b_alloc += size;
  s->kind_n[kind]++;
  s->kind_b[kind] += size;
  s->hist_n[b]++;
  s->hist_b[b] += size;
  if (!tab_put (s, (guint64) p, size, seq, id))
  {
    s->dropped++;
    return;
  }
  if (tab == st.maps)
    max64 (&st.map_peak, xadd64 (&st.map_live, size) + size);
  else
    max64 (&st.peak_bytes, xadd64 (&st.live_bytes, size) + size);
}

/* Called with the shard locked: the block at p is gone (found: 1, its entry in e). */
static int take_block (Shard * tab, Shard * s, void * p, Entry * e, int count_unknown)
{
  if (tab_take (s, (guint64) p, e))
  {
    s->n_free++;
    s->b_free += e->size;
    xadd64 (live_of (tab), (guint64) 0 - e->size);
    return 1;
  }
  if (count_unknown)
    s->unknown_free++;
  return 0;
}

static void on_alloc (Shard * tab, void * p, guint64 size, guint32 kind, guint64 * fp, int idx)
{
  guint64 frames[MAXDEPTH];
  guint32 depth = walk (fp, frames, idx);
  guint64 h = stack_hash (frames, depth, kind);
  guint64 seq = stamp ();
  Shard * s = shard_of (tab, (guint64) p);
  spin_lock (&s->lock);
  put_block (tab, s, p, size, kind, h, frames, depth, seq);
  spin_unlock (&s->lock);
}

static int on_free (Shard * tab, void * p, Entry * e, int count_unknown)
{
  Shard * s = shard_of (tab, (guint64) p);
  int found;
  spin_lock (&s->lock);
  found = take_block (tab, s, p, e, count_unknown);
  spin_unlock (&s->lock);
  return found;
}

/* Puts back a block that realloc failed to move (it is still valid). */
static void on_restore (Entry * e)
{
  Shard * s = shard_of (st.heap, e->addr);
  spin_lock (&s->lock);
  if (tab_put (s, e->addr, e->size, e->seq, e->stack))
    xadd64 (&st.live_bytes, e->size);
  s->n_free--;
  s->b_free -= e->size;
  spin_unlock (&s->lock);
}

/* free(NULL) and delete(NULL): no block, a stack of kind free(NULL). */
static void on_free_null (guint64 * fp, int idx)
{
  guint64 frames[MAXDEPTH];
  guint32 depth = walk (fp, frames, idx);
  guint64 h = stack_hash (frames, depth, K_FREE_NULL);
  Shard * s = shard_of_thread (st.heap);
  spin_lock (&s->lock);
  stack_add (h, frames, depth, K_FREE_NULL, 0);
  s->free_null++;
  spin_unlock (&s->lock);
}

/* A free (or delete) of P, not NULL. A tracked block is forgotten whoever
 * frees it (its address will come back); only a free of a block not
 * tracked asks whose call it is: the program's is an unknown free, the
 * tool's is left out. So the common free pays no thread lookup. */
static void free_block (void * p, guint64 * fp, int idx)
{
  Entry e;
  guint64 me = self_id ();
  Shard * s;
  if (guarded_as (me))
    return;
  s = shard_of (st.heap, (guint64) p);
  spin_lock (&s->lock);
  if (!take_block (st.heap, s, p, &e, 0) && !tool_call (me, caller_of (fp, idx)))
    s->unknown_free++;
  spin_unlock (&s->lock);
}

/* ---------------------------------------------------------------- hooks */

typedef void * (* MallocFn) (gsize);
typedef void * (* CallocFn) (gsize, gsize);
typedef void * (* ReallocFn) (void *, gsize);
typedef void (* FreeFn) (void *);
typedef int (* PosixMemalignFn) (void **, gsize, gsize);
typedef void * (* AlignFn) (gsize, gsize);
typedef void * (* MmapFn) (void *, gsize, int, int, int, gint64);
typedef int (* MunmapFn) (void *, gsize);
typedef void * (* NewFn) (gsize, void *, void *);
typedef void (* DeleteFn) (void *, void *, void *);

void * h_malloc (gsize n)
{
  guint64 * fp = __builtin_frame_address (0);
  void * p = ((MallocFn) real_fn (0)) (n);
  if (p != NULL && !skip (caller_of (fp, 0)))
    on_alloc (st.heap, p, n, K_MALLOC, fp, 0);
  return p;
}

void * h_calloc (gsize n, gsize size)
{
  guint64 * fp = __builtin_frame_address (0);
  void * p = ((CallocFn) real_fn (1)) (n, size);
  if (p != NULL && !skip (caller_of (fp, 1)))
    on_alloc (st.heap, p, (guint64) n * size, K_CALLOC, fp, 1);
  return p;
}

void * h_realloc (void * old, gsize n)
{
  guint64 * fp = __builtin_frame_address (0);
  Entry e;
  int had = 0;
  volatile guint64 * g;
  void * p;
  if (skip (caller_of (fp, 2)))
    return ((ReallocFn) real_fn (2)) (old, n);
  /* Forget the old block before the real call: once freed, another thread
   * may get the same address back. */
  if (old != NULL)
    had = on_free (st.heap, old, &e, 1);
  g = guard_enter ();
  p = ((ReallocFn) real_fn (2)) (old, n);
  guard_leave (g);
  if (p != NULL)
    on_alloc (st.heap, p, n, K_REALLOC, fp, 2);
  else if (had && n != 0)
    on_restore (&e);
  return p;
}

void h_free (void * p)
{
  guint64 * fp = __builtin_frame_address (0);
  if (p == NULL)
  {
    if (!skip (caller_of (fp, 3)))
      on_free_null (fp, 3); /* counted per call site too */
  }
  else
  {
    free_block (p, fp, 3);
  }
  ((FreeFn) real_fn (3)) (p);
}

int h_posix_memalign (void ** pp, gsize align, gsize n)
{
  guint64 * fp = __builtin_frame_address (0);
  volatile guint64 * g;
  int r;
  if (skip (caller_of (fp, 4)))
    return ((PosixMemalignFn) real_fn (4)) (pp, align, n);
  g = guard_enter ();
  r = ((PosixMemalignFn) real_fn (4)) (pp, align, n);
  guard_leave (g);
  if (r == 0 && *pp != NULL)
    on_alloc (st.heap, *pp, n, K_MEMALIGN, fp, 4);
  return r;
}

#define ALIGN_HOOK(name, idx) \\
void * name (gsize align, gsize n) \\
{ \\
  guint64 * fp = __builtin_frame_address (0); \\
  volatile guint64 * g; \\
  void * p; \\
  if (skip (caller_of (fp, idx))) \\
    return ((AlignFn) real_fn (idx)) (align, n); \\
  g = guard_enter (); \\
  p = ((AlignFn) real_fn (idx)) (align, n); \\
  guard_leave (g); \\
  if (p != NULL) \\
    on_alloc (st.heap, p, n, K_MEMALIGN, fp, idx); \\
  return p; \\
}

ALIGN_HOOK (h_aligned_alloc, 5)
ALIGN_HOOK (h_memalign, 6)

#define PAGE_HOOK(name, idx) \\
void * name (gsize n) \\
{ \\
  guint64 * fp = __builtin_frame_address (0); \\
  volatile guint64 * g; \\
  void * p; \\
  if (skip (caller_of (fp, idx))) \\
    return ((MallocFn) real_fn (idx)) (n); \\
  g = guard_enter (); \\
  p = ((MallocFn) real_fn (idx)) (n); \\
  guard_leave (g); \\
  if (p != NULL) \\
    on_alloc (st.heap, p, n, K_MEMALIGN, fp, idx); \\
  return p; \\
}

PAGE_HOOK (h_valloc, 7)
PAGE_HOOK (h_pvalloc, 8)

void * h_mmap (void * addr, gsize len, int prot, int flags, int fd, gint64 off)
{
  guint64 * fp = __builtin_frame_address (0);
  void * p = ((MmapFn) real_fn (9)) (addr, len, prot, flags, fd, off);
  guint64 frames[MAXDEPTH];
  guint32 depth;
  guint64 h, seq;
  Shard * s;
  Entry e;
  if (skip (caller_of (fp, 9)))
    return p;
  if (p == (void *) -1 || p == NULL)
  {
    s = shard_of_thread (st.maps);
    spin_lock (&s->lock);
    s->calls++;
    spin_unlock (&s->lock);
    return p;
  }
  depth = walk (fp, frames, 9);
  h = stack_hash (frames, depth, K_MMAP);
  seq = stamp ();
  s = shard_of (st.maps, (guint64) p);
  spin_lock (&s->lock);
  s->calls++;
  take_block (st.maps, s, p, &e, 0); /* MAP_FIXED over a tracked region replaces it */
  put_block (st.maps, s, p, len, K_MMAP, h, frames, depth, seq);
  spin_unlock (&s->lock);
  return p;
}

int h_munmap (void * addr, gsize len)
{
  guint64 * fp = __builtin_frame_address (0);
  Entry e;
  int r = ((MunmapFn) real_fn (10)) (addr, len);
  /* A partial unmap from the start keeps the tail mapped; the tail's shard
   * is locked with the head's, lower index first (mem_snapshot's order). */
  guint64 cut = ((guint64) len + 4095) & ~4095ULL;
  Shard * s = shard_of (st.maps, (guint64) addr);
  Shard * t = shard_of (st.maps, (guint64) addr + cut);
  if (skip (caller_of (fp, 10)))
    return r;
  if (t < s)
    spin_lock (&t->lock);
  spin_lock (&s->lock);
  if (t > s)
    spin_lock (&t->lock);
  s->uncalls++;
  if (r == 0 && take_block (st.maps, s, addr, &e, 1) && cut < e.size)
  {
    if (tab_put (t, (guint64) addr + cut, e.size - cut, e.seq, e.stack))
      xadd64 (&st.map_live, e.size - cut);
    s->n_free--;
    s->b_free -= e.size - cut;
  }
  if (t != s)
    spin_unlock (&t->lock);
  spin_unlock (&s->lock);
  return r;
}

#define NEW_HOOK(name, idx, kind) \\
void * name (gsize n, void * a, void * b) \\
{ \\
  guint64 * fp = __builtin_frame_address (0); \\
  volatile guint64 * g; \\
  void * p; \\
  if (skip (caller_of (fp, idx))) \\
    return ((NewFn) real_fn (idx)) (n, a, b); \\
  g = guard_enter (); \\
  p = ((NewFn) real_fn (idx)) (n, a, b); \\
  guard_leave (g); \\
  if (p != NULL) \\
    on_alloc (st.heap, p, n, kind, fp, idx); \\
  return p; \\
}

#define DELETE_HOOK(name, idx) \\
void name (void * p, void * a, void * b) \\
{ \\
  guint64 * fp = __builtin_frame_address (0); \\
  volatile guint64 * g; \\
  if (p == NULL) \\
  { \\
    if (!skip (caller_of (fp, idx))) \\
      on_free_null (fp, idx); \\
    ((DeleteFn) real_fn (idx)) (p, a, b); \\
    return; \\
  } \\
  if (guarded ()) \\
  { \\
    ((DeleteFn) real_fn (idx)) (p, a, b); \\
    return; \\
  } \\
  free_block (p, fp, idx); \\
  g = guard_enter (); \\
  ((DeleteFn) real_fn (idx)) (p, a, b); \\
  guard_leave (g); \\
}

NEW_HOOK (h_new0, 16, K_NEW)
NEW_HOOK (h_new1, 17, K_NEW_ARRAY)
NEW_HOOK (h_new2, 18, K_NEW)
NEW_HOOK (h_new3, 19, K_NEW_ARRAY)
NEW_HOOK (h_new4, 20, K_NEW)
NEW_HOOK (h_new5, 21, K_NEW_ARRAY)
NEW_HOOK (h_new6, 22, K_NEW)
NEW_HOOK (h_new7, 23, K_NEW_ARRAY)

DELETE_HOOK (h_del0, 32)
DELETE_HOOK (h_del1, 33)
DELETE_HOOK (h_del2, 34)
DELETE_HOOK (h_del3, 35)
DELETE_HOOK (h_del4, 36)
DELETE_HOOK (h_del5, 37)
DELETE_HOOK (h_del6, 38)
DELETE_HOOK (h_del7, 39)
DELETE_HOOK (h_del8, 40)
DELETE_HOOK (h_del9, 41)
DELETE_HOOK (h_del10, 42)
DELETE_HOOK (h_del11, 43)

/* ---------------------------------------------------------------- control (JS thread) */

static guint64 pow2_at_least (guint64 v)
{
  guint64 p = 16;
  while (p < v)
    p <<= 1;
  return p;
}

static guint64 shard_slots (guint64 max_live)
{
  return pow2_at_least ((max_live * 4 / 3 + NSHARD - 1) / NSHARD + 16);
}

static guint64 sshard_slots (guint64 max_stacks)
{
  return pow2_at_least (max_stacks * 2 / NSHARD + 16);
}

/* Bytes of arena mem_setup() needs. */
guint64 mem_arena_size (guint64 max_live, guint64 max_maps, guint64 max_stacks)
{
  return NSHARD * shard_slots (max_live) * sizeof (Entry)
      + NSHARD * shard_slots (max_maps) * sizeof (Entry)
      + NSHARD * sshard_slots (max_stacks) * sizeof (guint32)
      + max_stacks * sizeof (Stack);
}

static void setup_tab (Shard * tab, guint8 ** cursor, guint64 max_live)
{
  guint64 n = shard_slots (max_live);
  int i;
  for (i = 0; i != NSHARD; i++)
  {
    tab[i].mask = n - 1;
    tab[i].limit = n * 3 / 4;
    tab[i].slots = (Entry *) *cursor;
    *cursor += n * sizeof (Entry);
  }
}

gint64 mem_setup (guint8 * arena, guint64 max_live, guint64 max_maps, guint64 max_stacks,
    guint32 depth, guint64 main_lo, guint64 main_hi, guint64 state_bytes)
{
  guint8 * cur = arena;
  guint64 ns = sshard_slots (max_stacks);
  int i;
  if (sizeof (State) > state_bytes)
    return -(gint64) sizeof (State);
  setup_tab (st.heap, &cur, max_live);
  setup_tab (st.maps, &cur, max_maps);
  for (i = 0; i != NSHARD; i++)
  {
    st.sshard[i].mask = ns - 1;
    st.sshard[i].slots = (guint32 *) cur;
    cur += ns * sizeof (guint32);
  }
  st.stacks = (Stack *) cur;
  st.max_stacks = (guint32) max_stacks;
  st.n_stacks = 1; /* id 0: allocations whose stack did not fit */
  st.depth = depth > MAXDEPTH ? MAXDEPTH : depth;
  st.main_lo = main_lo;
  st.main_hi = main_hi;
  return (gint64) sizeof (State);
}

void mem_set_real (int i, void * f, int slow)
{
  st.slow[i] = (guint8) slow;
  st.real[i] = f;
}

/* What the tool's threads are (threads.ts): TOOLS 0 counts every call. */
void mem_set_tools (int tools, gint32 * tids, int n_tids, guint64 * ranges, int n_ranges,
    int start_off, int tid_off)
{
  int i;
  st.n_tids = n_tids < NTIDS ? n_tids : NTIDS;
  for (i = 0; i != st.n_tids; i++)
    st.tids[i] = tids[i];
  st.n_ranges = n_ranges < NRANGES ? n_ranges : NRANGES;
  for (i = 0; i != 2 * st.n_ranges; i++)
    st.ranges[i] = ranges[i];
  st.agent_lo = st.n_ranges > 0 ? st.ranges[0] : 0;
  st.agent_hi = st.n_ranges > 0 ? st.ranges[1] : 0;
  st.start_off = start_off;
  st.tid_off = tid_off;
  st.tools = tools;
}

/* An address inside Frida's agent, to find its mapping. */
void * mem_agent_address (void)
{
  return (void *) gum_interceptor_get_current_invocation;
}

/* Whether the calling thread is the tool's (threads.ts checks its own). */
int mem_is_tool_thread (void)
{
  return tool_thread (self_id ());
}

/* The calling thread's allocations go untracked until mem_track_thread():
 * a program thread while it builds a report at exit. */
void * mem_ignore_thread (void)
{
  return (void *) guard_enter ();
}

void mem_track_thread (void * slot)
{
  guard_leave ((volatile guint64 *) slot);
}

void mem_tick (void)
{
  st.tick++;
}

/* What a snapshot needs room for now (it may grow before mem_snapshot runs):
 * out[0] stacks, out[1] live heap blocks, out[2] live mapped regions. */
void mem_sizes (guint64 * out)
{
  int i;
  out[0] = st.n_stacks;
  out[1] = 0;
  out[2] = 0;
  for (i = 0; i != NSHARD; i++)
  {
    out[1] += st.heap[i].used;
    out[2] += st.maps[i].used;
  }
}

static guint64 copy_blocks (Shard * tab, Blk * out)
{
  guint64 n = 0;
  int i;
  for (i = 0; i != NSHARD; i++)
  {
    Shard * s = &tab[i];
    guint64 j;
    for (j = 0; j <= s->mask; j++)
    {
      Entry * e = &s->slots[j];
      if (e->addr == 0)
        continue;
      out[n].addr = e->addr;
      out[n].size = e->size;
      out[n].seq = e->seq;
      out[n].stack = e->stack;
      out[n].flags = 0;
      out[n].tick = e->tick;
      out[n].pad = 0;
      n++;
    }
  }
  return n;
}

/* Counters, summed over shards: out[0..NSCALARS) scalars, then kind_n[16],
 * kind_b[16], hist_n[65], hist_b[65]. Called with every shard locked. */
static void read_counters (guint64 * out)
{
  int i, k;
  guint64 * kn = out + NSCALARS;
  guint64 * kb = kn + NKINDS;
  guint64 * hn = kb + NKINDS;
  guint64 * hb = hn + 65;
  for (i = 0; i != NSCALARS + 2 * NKINDS + 130; i++)
    out[i] = 0;
  for (i = 0; i != NSHARD; i++)
  {
    Shard * s = &st.heap[i];
    Shard * m = &st.maps[i];
    out[0] += s->n_alloc;
    out[1] += s->n_free;
    out[2] += s->b_alloc;
    out[3] += s->b_free;
    out[4] += s->used;
    out[5] += s->dropped;
    out[6] += s->unknown_free;
    out[9] += s->free_null;
    for (k = 0; k != NKINDS; k++)
    {
      kn[k] += s->kind_n[k];
      kb[k] += s->kind_b[k];
    }
    for (k = 0; k != 65; k++)
    {
      hn[k] += s->hist_n[k];
      hb[k] += s->hist_b[k];
    }
    out[16] += m->n_alloc;
    out[17] += m->n_free;
    out[18] += m->b_alloc;
    out[19] += m->b_free;
    out[20] += m->used;
    out[21] += m->dropped;
    out[24] += m->calls;
    out[25] += m->uncalls;
    out[26] += m->unknown_free;
  }
  out[7] = st.live_bytes;
  out[8] = st.peak_bytes;
  out[10] = st.stack_overflow;
  out[11] = st.guard_overflow;
  out[12] = stamp ();
  out[13] = st.n_stacks;
  out[14] = st.tick;
  out[22] = st.map_live;
  out[23] = st.map_peak;
  out[27] = st.tool_calls;
  out[28] = st.tool_decisions;
  out[29] = (guint64) st.tools;
}

/* Everything a report shows, at one instant: the counters, the stack table
 * and the live heap blocks and mapped regions, copied while every table
 * shard is locked. A hooked call counts everything it counts under its
 * shard's lock (stack_add, put_block, take_block), so no call is half
 * counted here, and no stack is added meanwhile. The hooks wait for the
 * time of the copy. Returns 0 and got[0..3) = stacks, blocks, regions
 * copied; or -1 (nothing copied) when a buffer is too small, with got[]
 * saying what is needed. */
gint64 mem_snapshot (guint64 * counters, Stack * stacks, guint64 stacks_cap, Blk * blocks,
    guint64 blocks_cap, Blk * regions, guint64 regions_cap, guint64 * got)
{
  guint64 ns, nb = 0, nr = 0, i;
  int k;
  gint64 r = 0;
  for (k = 0; k != NSHARD; k++)
    spin_lock (&st.heap[k].lock);
  for (k = 0; k != NSHARD; k++)
    spin_lock (&st.maps[k].lock);
  ns = st.n_stacks;
  for (k = 0; k != NSHARD; k++)
  {
    nb += st.heap[k].used;
    nr += st.maps[k].used;
  }
  got[0] = ns;
  got[1] = nb;
  got[2] = nr;
  if (ns > stacks_cap || nb > blocks_cap || nr > regions_cap)
  {
    r = -1;
  }
  else
  {
    guint64 * from = (guint64 *) st.stacks;
    volatile guint64 * to = (volatile guint64 *) stacks; /* no memcpy: nothing to link it to */
    read_counters (counters);
    for (i = 0; i != ns * (sizeof (Stack) / 8); i++)
      to[i] = from[i];
    got[1] = copy_blocks (st.heap, blocks);
    got[2] = copy_blocks (st.maps, regions);
  }
  for (k = NSHARD; k-- > 0;)
    spin_unlock (&st.maps[k].lock);
  for (k = NSHARD; k-- > 0;)
    spin_unlock (&st.heap[k].lock);
  return r;
}

/* ---------------------------------------------------------------- leak scan
 * Blocks sorted by address; a word in a root range or in a reachable block
 * that equals the start address of a block makes that block reachable
 * (valgrind's "start-pointer"; interior pointers are not followed, so a
 * block referenced only by interior pointers counts as leaked). */

static void sift (Blk * b, guint64 i, guint64 n)
{
  for (;;)
  {
    guint64 l = 2 * i + 1;
    guint64 m = i;
    Blk t;
    if (l < n && b[l].addr > b[m].addr)
      m = l;
    if (l + 1 < n && b[l + 1].addr > b[m].addr)
      m = l + 1;
    if (m == i)
      return;
    t = b[i];
    b[i] = b[m];
    b[m] = t;
    i = m;
  }
}

void mem_sort (Blk * b, guint64 n)
{
  guint64 i;
  if (n < 2)
    return;
  for (i = n / 2; i-- > 0;)
    sift (b, i, n);
  for (i = n - 1; i > 0; i--)
  {
    Blk t = b[0];
    b[0] = b[i];
    b[i] = t;
    sift (b, 0, i);
  }
}

static gint64 find_start (Blk * b, guint64 n, guint64 v)
{
  guint64 lo = 0, hi = n;
  while (lo < hi)
  {
    guint64 mid = (lo + hi) / 2;
    if (b[mid].addr < v)
      lo = mid + 1;
    else
      hi = mid;
  }
  if (lo < n && b[lo].addr == v)
    return (gint64) lo;
  return -1;
}

static void scan_words (Blk * b, guint64 n, guint64 lo, guint64 hi, guint64 * work, guint64 * wn,
    guint32 flag, guint32 skip_flags)
{
  guint64 a;
  lo = (lo + 7) & ~7ULL;
  for (a = lo; a + 8 <= hi; a += 8)
  {
    guint64 v = *(guint64 *) a;
    gint64 i;
    if (v < 0x1000 || (v & 7) != 0)
      continue;
    i = find_start (b, n, v);
    if (i < 0 || (b[i].flags & (flag | skip_flags)) != 0)
      continue;
    b[i].flags |= flag;
    work[(*wn)++] = (guint64) i;
  }
}

/* Roots: pairs [lo, hi) of readable memory, sorted. skip_blocks 0: scan them
 * whole. 1 (conservative, after a late attach): leave out the parts covered
 * by tracked blocks; untracked heap memory, allocated before the attach, is
 * a root. 2 (everything was tracked from the start): leave out every range
 * that holds a tracked block: those are the allocator's own areas, where
 * freed memory still holds stale pointers. Then the closure. */
void mem_mark (Blk * b, guint64 n, guint64 * roots, guint64 nroots, int skip_blocks, guint64 * work)
{
  guint64 wn = 0;
  guint64 r;
  guint64 j = 0;
  for (r = 0; r != nroots; r++)
  {
    guint64 lo = roots[2 * r], hi = roots[2 * r + 1];
    if (skip_blocks == 0)
    {
      scan_words (b, n, lo, hi, work, &wn, F_REACH, 0);
      continue;
    }
    if (skip_blocks == 2)
    {
      guint64 l = 0, h = n;
      while (l < h)
      {
        guint64 mid = (l + h) / 2;
        if (b[mid].addr < lo)
          l = mid + 1;
        else
          h = mid;
      }
      if (l < n && b[l].addr < hi)
        continue;
      scan_words (b, n, lo, hi, work, &wn, F_REACH, 0);
      continue;
    }
    while (lo < hi)
    {
      guint64 end = hi;
      while (j < n && b[j].addr + (b[j].size ? b[j].size : 1) <= lo)
        j++;
      if (j < n && b[j].addr <= lo)
      {
        lo = b[j].addr + (b[j].size ? b[j].size : 1);
        continue;
      }
      if (j < n && b[j].addr < end)
        end = b[j].addr;
      scan_words (b, n, lo, end, work, &wn, F_REACH, 0);
      lo = end;
    }
  }
  while (wn > 0)
  {
    Blk * k = &b[work[--wn]];
    scan_words (b, n, k->addr, k->addr + k->size, work, &wn, F_REACH, 0);
  }
}

/* Leaked blocks: not reachable. Indirect: referenced by another leaked block. */
void mem_classify (Blk * b, guint64 n, guint64 * work)
{
  guint64 i;
  guint64 wn = 0;
  for (i = 0; i != n; i++)
    if ((b[i].flags & F_REACH) == 0)
      b[i].flags |= F_LEAK;
  for (i = 0; i != n; i++)
  {
    if ((b[i].flags & F_LEAK) == 0)
      continue;
    wn = 0;
    scan_words (b, n, b[i].addr, b[i].addr + b[i].size, work, &wn, F_INDIRECT, F_REACH);
  }
}

/* The k oldest blocks (smallest seq), oldest first, into out; returns how many. */
static void sift_seq (Blk * h, guint64 i, guint64 n)
{
  for (;;)
  {
    guint64 l = 2 * i + 1;
    guint64 m = i;
    Blk t;
    if (l < n && h[l].seq > h[m].seq)
      m = l;
    if (l + 1 < n && h[l + 1].seq > h[m].seq)
      m = l + 1;
    if (m == i)
      return;
    t = h[i];
    h[i] = h[m];
    h[m] = t;
    i = m;
  }
}

guint64 mem_oldest (Blk * b, guint64 n, Blk * out, guint64 k)
{
  guint64 i, m = 0;
  if (k == 0)
    return 0;
  for (i = 0; i != n; i++)
  {
    if (m < k)
    {
      guint64 c = m++;
      out[c] = b[i];
      while (c > 0 && out[(c - 1) / 2].seq < out[c].seq)
      {
        Blk t = out[c];
        out[c] = out[(c - 1) / 2];
        out[(c - 1) / 2] = t;
        c = (c - 1) / 2;
      }
    }
    else if (b[i].seq < out[0].seq)
    {
      out[0] = b[i];
      sift_seq (out, 0, m);
    }
  }
  /* heap -> ascending by seq */
  for (i = m; i > 1; i--)
  {
    Blk t = out[0];
    out[0] = out[i - 1];
    out[i - 1] = t;
    sift_seq (out, 0, i - 1);
  }
  return m;
}

/* glibc thread descriptors in [lo, hi): addresses a with *a == a and
 * *(a + 16) == a (its tcb and self pointers), lowest first; at most cap. */
guint64 mem_find_tcbs (guint64 lo, guint64 hi, guint64 * out, guint64 cap)
{
  guint64 a, k = 0;
  lo = (lo + 7) & ~7ULL;
  for (a = lo; a + 24 <= hi && k < cap; a += 8)
  {
    guint64 * w = (guint64 *) a;
    if (w[0] == a && w[2] == a)
      out[k++] = a;
  }
  return k;
}

/* Per stack: live n, live bytes, leaked n, leaked bytes, indirect bytes, oldest seq, oldest tick. */
void mem_aggregate (Blk * b, guint64 n, guint64 * agg, guint64 nstacks)
{
  guint64 i;
  for (i = 0; i != nstacks; i++)
  {
    guint64 * a = &agg[i * 7];
    a[0] = a[1] = a[2] = a[3] = a[4] = 0;
    a[5] = ~0ULL;
    a[6] = 0;
  }
  for (i = 0; i != n; i++)
  {
    guint64 * a;
    if (b[i].stack >= nstacks)
      continue;
    a = &agg[b[i].stack * 7];
    a[0]++;
    a[1] += b[i].size;
    if (b[i].flags & F_LEAK)
    {
      a[2]++;
      a[3] += b[i].size;
      if (b[i].flags & F_INDIRECT)
        a[4] += b[i].size;
    }
    if (b[i].seq < a[5])
    {
      a[5] = b[i].seq;
      a[6] = b[i].tick;
    }
  }
}
`;
