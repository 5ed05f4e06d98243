// The sampler's signal handler, in C (TinyCC builds it in the agent: it runs
// at most a few hundred times a second per thread, so gcc's -O2 buys nothing).
//
// It runs on the sampled thread, inside a signal handler, so everything in it
// is async-signal-safe: no libc, no locks, no allocation. It claims a slot of
// a ring with a compare-and-swap (or counts a drop when the ring is full),
// copies the interrupted registers from the ucontext, and copies the stack
// from the interrupted rsp upwards with process_vm_readv on its own process,
// one remote iovec per page, so that the copy stops cleanly at the end of the
// stack's mapping instead of faulting. The slot's sequence word is written
// last; the drain (profile.ts) reads a slot only once it holds its sequence.
// System calls go through `prof_syscall`, a stub of ours in a page that is
// never unmapped (profile.ts), so errno is never touched.

/** Byte offsets of the ring header (u64 words), shared with profile.ts. */
export const RING = {
    HEAD: 0,
    TAIL: 8,
    DROPS: 16,
    NSLOTS: 24,
    SLOT_SIZE: 32,
    STACK_MAX: 40,
    PID: 48,
    SAMPLES: 56,
    PERIOD_NS: 64,
    /** Per kernel timer id (below MAX_TIMERS): when its next sample is due, on its thread's CPU clock. */
    DEADLINES: 80,
    SIZE: 80 + 8 * 1024,
} as const;

/** Byte offsets inside a slot; the host decodes the same layout (instr/profile/samples.py). */
export const SLOT = {
    SEQ: 0,
    TID: 8,
    TIME: 16,
    REGS: 24, // 17 u64: uc_mcontext.gregs[0..16] (r8..r15, rdi, rsi, rbp, rbx, rdx, rax, rcx, rsp, rip)
    STACK_LEN: 160,
    HEADER: 168,
} as const;

export const PROFILE_C_SOURCE = `
typedef unsigned long long u64;
typedef long long s64;
typedef unsigned char u8;

extern long prof_syscall (long nr, long a, long b, long c, long d, long e, long f);
extern u8 prof_ring;

#define HEAD 0
#define TAIL 1
#define DROPS 2
#define NSLOTS 3
#define SLOT_SIZE 4
#define STACK_MAX 5
#define PID 6
#define SAMPLES 7
#define PERIOD_NS 8
#define DEADLINES 10
#define MAX_TIMERS 1024
#define HEADER_WORDS (10 + MAX_TIMERS)
#define SI_TIMER (-2)
#define SLOT_HEADER ${SLOT.HEADER}
#define PAGE 4096
#define MAX_IOV 64

struct iov { u64 base; u64 len; };
struct ts { s64 sec; s64 nsec; };
struct itimerspec { struct ts interval; struct ts value; };

/*
 * The next sample of this thread's timer is due a period drawn uniformly
 * from [P/2, 3P/2) after the previous one was due (an absolute time on the
 * thread's CPU clock, so the mean rate stays HZ however late the kernel's
 * tick delivers each expiry): a program whose work repeats with a period
 * close to a multiple of P is not always caught at the same phase (measured
 * before this: 27 % instead of 20 % for one function of
 * tests/targets/profile_split.c at 99 Hz, whose rounds take ~10 ms). The
 * interval stays P, should a signal be lost.
 */
static void rearm (volatile u64 *r, int *info)
{
  u64 x, period = r[PERIOD_NS], due;
  unsigned int lo, hi;
  struct itimerspec spec;
  int id = info[4];
  if (info[2] != SI_TIMER || period == 0 || id < 0 || id >= MAX_TIMERS || r[DEADLINES + id] == 0)
    return;
  __asm__ __volatile__ ("rdtsc" : "=a" (lo), "=d" (hi));
  x = ((u64) hi << 32 | lo) ^ ((u64) id << 17);
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  due = r[DEADLINES + id] + period / 2 + x % period;
  r[DEADLINES + id] = due;
  spec.interval.sec = period / 1000000000ULL;
  spec.interval.nsec = period % 1000000000ULL;
  spec.value.sec = due / 1000000000ULL;
  spec.value.nsec = due % 1000000000ULL;
  prof_syscall (223, id, 1, (long) &spec, 0, 0, 0); /* timer_settime (TIMER_ABSTIME) */
}

static int cas64 (volatile u64 *p, u64 old, u64 val)
{
  u64 prev;
  __asm__ __volatile__ ("lock; cmpxchgq %2, %1"
      : "=a" (prev), "+m" (*p) : "r" (val), "0" (old) : "memory");
  return prev == old;
}

static void add64 (volatile u64 *p, u64 v)
{
  __asm__ __volatile__ ("lock; xaddq %0, %1" : "+r" (v), "+m" (*p) : : "memory");
}

void prof_on_signal (int sig, void *info, void *ucv)
{
  volatile u64 *r = (volatile u64 *) &prof_ring;
  u64 h, t, n, size, i, len, sp, page_end, want;
  u8 *slot;
  u64 *regs;
  u64 *gregs = (u64 *) ((u8 *) ucv + 40); /* uc_flags, uc_link, uc_stack: 8 + 8 + 24 */
  struct iov local;
  struct iov remote[MAX_IOV];
  struct ts now;
  long got;

  rearm (r, (int *) info);
  n = r[NSLOTS];
  for (;;)
  {
    h = r[HEAD];
    t = r[TAIL];
    if (h - t >= n)
    {
      add64 (&r[DROPS], 1);
      return;
    }
    if (cas64 (&r[HEAD], h, h + 1))
      break;
  }
  size = r[SLOT_SIZE];
  slot = (u8 *) &prof_ring + HEADER_WORDS * 8 + (h % n) * size;
  ((u64 *) slot)[1] = (u64) prof_syscall (186, 0, 0, 0, 0, 0, 0); /* gettid */
  prof_syscall (228, 1, (long) &now, 0, 0, 0, 0); /* clock_gettime (CLOCK_MONOTONIC) */
  ((u64 *) slot)[2] = (u64) now.sec * 1000000000ULL + (u64) now.nsec;
  regs = (u64 *) (slot + 24);
  for (i = 0; i < 17; i++)
    regs[i] = gregs[i];

  sp = gregs[15];
  want = r[STACK_MAX];
  len = 0;
  i = 0;
  while (len < want && i < MAX_IOV)
  {
    page_end = ((sp + len) & ~(u64) (PAGE - 1)) + PAGE;
    remote[i].base = sp + len;
    remote[i].len = page_end - (sp + len);
    if (remote[i].len > want - len)
      remote[i].len = want - len;
    len += remote[i].len;
    i++;
  }
  local.base = (u64) (slot + SLOT_HEADER);
  local.len = len;
  got = prof_syscall (310, (long) r[PID], (long) &local, 1, (long) remote, (long) i, 0);
  ((u64 *) slot)[20] = got < 0 ? 0 : (u64) got;

  add64 (&r[SAMPLES], 1);
  __asm__ __volatile__ ("" : : : "memory");
  ((volatile u64 *) slot)[0] = h + 1;
}
`;
