// The C half of safe leaving (leave.ts): a stack scanner, and the hold that
// keeps the agent loaded until every program thread has left instr's code.
//
// instr_hold() is entered by a thread this module starts, through an
// Interceptor listener with an onLeave callback: Gum then counts that thread
// as inside a hook (trampoline_usage_counter), and the script's unload waits
// for it exactly as it waits for any thread inside a listener. instr_hold()
// returns once none of the held threads has instr's code on its stack any
// more, and the unload finishes by itself. Nothing here may call into the
// script (JS): it runs after the host has gone.
//
// Whether a held thread is still inside is read from
// /proc/self/task/TID/syscall: a thread blocked in a system call shows its
// stack and instruction pointers there, and its live stack is [sp, stack
// end). "running" means: ask again later.

export const LEAVE_C_SOURCE = `
typedef unsigned long u64;
extern int open (const char * path, int flags, ...);
extern long read (int fd, void * buf, unsigned long n);
extern int close (int fd);
extern long pread (int fd, void * buf, unsigned long n, long offset);
extern int usleep (unsigned int us);
extern int pthread_create (void * thread, const void * attr, void * (* fn) (void *), void * arg);
extern int pthread_detach (unsigned long thread);

#define MAX_RANGES 512
#define MAX_HELD 128
#define MAX_FOREIGN 256
#define GRACE_US 50000

/* In memory the script allocates (leave.ts: the offsets of LeaveState). */
struct leave_state
{
  int n_ranges;
  int n_held;
  volatile int entered;
  volatile int polls;
  u64 ranges[2 * MAX_RANGES];
  int held_tid[MAX_HELD];
  u64 held_stack_end[MAX_HELD];
  u64 held_flag[MAX_HELD];
  int held_group[MAX_HELD];
  int n_foreign;
  u64 foreign[2 * MAX_FOREIGN];
  u64 held_slot[MAX_HELD]; /* the stack slot swapped for the pad (0: none) */
  u64 held_pad[MAX_HELD];
};
extern struct leave_state lv;

#define n_ranges lv.n_ranges
#define ranges lv.ranges
#define n_held lv.n_held
#define held_tid lv.held_tid
#define held_stack_end lv.held_stack_end
#define held_flag lv.held_flag
#define held_group lv.held_group
#define held_slot lv.held_slot
#define held_pad lv.held_pad
#define hold_entered lv.entered
#define hold_polls lv.polls

static int
in_ranges (u64 w)
{
  int i;
  for (i = 0; i != n_ranges; i++)
    if (w >= ranges[2 * i] && w < ranges[2 * i + 1])
      return 1;
  return 0;
}

/* Whether w, an address inside range r, follows a call instruction: a return
 * address, not a code pointer kept as data (a saved register holding a
 * trampoline's address must never be taken for one). Elsewhere than x64,
 * any address counts (the scan is then conservative). */
static int
after_call (u64 w, u64 base)
{
#if defined (__x86_64__)
  const unsigned char * p = (const unsigned char *) w;
  if (w - 6 < base)
    return 0;
  if (p[-5] == 0xe8)
    return 1; /* call rel32 */
  if (p[-2] == 0xff && (p[-1] & 0xf8) == 0xd0)
    return 1; /* call reg */
  if (p[-6] == 0xff && (p[-5] == 0x15 || (p[-5] & 0xf8) == 0x90))
    return 1; /* call [rip+disp32], call [reg+disp32] */
  if (p[-3] == 0xff && (p[-2] & 0xf8) == 0x50)
    return 1; /* call [reg+disp8] */
  if (p[-3] == 0xff && p[-2] == 0x14)
    return 1; /* call [sib] */
  return 0;
#else
  return 1;
#endif
}

static int
return_into (u64 w)
{
  int i;
  for (i = 0; i != n_ranges; i++)
    if (w >= ranges[2 * i] && w < ranges[2 * i + 1])
      return after_call (w, ranges[2 * i]);
  return 0;
}

/* The lowest stack slot in [lo, hi) that holds a return address into
 * instr's code, or 0. */
u64
instr_scan (u64 lo, u64 hi)
{
  u64 p, w, lowest = ~0UL, highest = 0;
  int i;
  for (i = 0; i != n_ranges; i++)
  {
    if (ranges[2 * i] < lowest) lowest = ranges[2 * i];
    if (ranges[2 * i + 1] > highest) highest = ranges[2 * i + 1];
  }
  for (p = (lo + 7) & ~7UL; p + 8 <= hi; p += 8)
  {
    w = *(volatile u64 *) p;
    if (w >= lowest && w < highest && return_into (w))
      return p;
  }
  return 0;
}

static u64
hex_field (const char * s, int * pos)
{
  u64 v = 0;
  int i = *pos, d;
  while (s[i] == ' ')
    i++;
  if (s[i] == '0' && s[i + 1] == 'x')
    i += 2;
  for (;; i++)
  {
    char c = s[i];
    if (c >= '0' && c <= '9') d = c - '0';
    else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
    else break;
    v = v * 16 + d;
  }
  while (s[i] != ' ' && s[i] != 0 && s[i] != '\\n')
    i++;
  *pos = i;
  return v;
}

/* Swap a held thread's return address for its landing pad (leave.ts), only
 * if the slot still holds it: a thread that has consumed it since keeps its
 * stack untouched. 1 if swapped. */
int
instr_swap (volatile u64 * slot, u64 expected, u64 pad)
{
#if defined (__x86_64__)
  unsigned char ok;
  __asm__ volatile ("lock cmpxchgq %3, %1\\n\\tsete %0"
      : "=q" (ok), "+m" (*slot), "+a" (expected)
      : "r" (pad)
      : "memory", "cc");
  return ok;
#else
  return 0;
#endif
}

/* 1: thread i may still be inside instr's code; 0: it has left it, or ended.
 * With a landing pad (held_flag), the pad's flag says when its return went
 * through; without, its live stack is scanned while it waits in a syscall. */
int
instr_held_busy (int i)
{
  char path[64], buf[512];
  int fd, k, pos, fields = 0, tid = held_tid[i];
  long n;
  u64 v, sp = 0, pc = 0;
  /* "/proc/self/task/" + tid + "/syscall" */
  const char * head = "/proc/self/task/";
  char digits[16];
  for (k = 0; head[k] != 0; k++)
    path[k] = head[k];
  n = 0;
  do { digits[n++] = '0' + tid % 10; tid /= 10; } while (tid != 0);
  while (n > 0)
    path[k++] = digits[--n];
  head = "/syscall";
  for (n = 0; head[n] != 0; n++)
    path[k++] = head[n];
  path[k] = 0;
  fd = open (path, 0);
  if (fd < 0)
    return 0;
  if (held_flag[i] != 0)
  {
    close (fd);
    return *(volatile unsigned char *) held_flag[i] == 0;
  }
  n = read (fd, buf, sizeof (buf) - 1);
  close (fd);
  if (n <= 0)
    return 0;
  buf[n] = 0;
  if (buf[0] == 'r')
    return 1;
  /* "NR a1 .. a6 SP PC", or "-1 SP PC" when blocked outside a system call. */
  pos = 0;
  while (buf[pos] != 0 && buf[pos] != '\\n')
  {
    if (buf[pos] == ' ') { pos++; continue; }
    if (buf[pos] == '-') { while (buf[pos] != ' ' && buf[pos] != 0) pos++; fields++; continue; }
    v = hex_field (buf, &pos);
    fields++;
    sp = pc;
    pc = v;
  }
  if (fields < 3)
    return 1;
  if (in_ranges (pc))
    return 1;
  if (held_stack_end[i] == 0)
    return 0; /* held by its pc alone: that has left our code */
  return instr_scan (sp, held_stack_end[i]) != 0;
}

/* Whether entry i's stack slot still holds its pad: read through MEM, an fd
 * of /proc/self/mem, which cannot fault (the thread may have ended and its
 * stack gone). No slot (no pad), or no fd: it counts as holding. */
static int
slot_holds_pad (int i, int mem)
{
  u64 v = 0;
  if (held_slot[i] == 0 || mem < 0)
    return 1;
  if (pread (mem, &v, sizeof (v), (long) held_slot[i]) != (long) sizeof (v))
    return 1;
  return v == held_pad[i];
}

/* Each entry is one stack slot of a held thread; a group is one return
 * address of that thread (all the slots found holding it: one is the real
 * one). A group is done when one of its pads fired or its thread ended, or
 * when every one of its slots has been overwritten without its pad firing:
 * a live return address is only ever consumed by its return (which fires
 * the pad), so the real one was not among them (stale copies in a live
 * frame, seen keeping a mem agent loaded for ever). */
static int
any_busy (void)
{
  unsigned char done[MAX_HELD], live[MAX_HELD];
  int i, mem = open ("/proc/self/mem", 0);
  for (i = 0; i != n_held; i++)
  {
    done[i] = 0;
    live[i] = 0;
  }
  for (i = 0; i != n_held; i++)
    if (held_tid[i] == 0 || !instr_held_busy (i))
    {
      held_tid[i] = 0;
      done[held_group[i]] = 1;
    }
    else if (slot_holds_pad (i, mem))
      live[held_group[i]] = 1;
  if (mem >= 0)
    close (mem);
  for (i = 0; i != n_held; i++)
    if (!done[held_group[i]] && live[held_group[i]])
      return 1;
  return 0;
}

/* The stack slots in [lo, hi) holding a return address into instr's code
 * (up to max, into out; their count). No unwinding: Gum's accurate
 * backtracer (libunwind) leaves a pipe open in the process, two fds per
 * leave. */
int
instr_scan_all (u64 lo, u64 hi, u64 * out, int max)
{
  u64 p, w;
  int n = 0;
  for (p = (lo + 7) & ~7UL; p + 8 <= hi && n != max; p += 8)
  {
    w = *(volatile u64 *) p;
    if (w >= 4096 && return_into (w))
      out[n++] = p;
  }
  return n;
}

/* Whether w is the start of one of Gum's x86-64 on-leave trampolines, the
 * address Gum writes in place of a hooked function's return address while a
 * thread is inside a listener with onLeave, or a replace(): "push qword
 * [rip+d]" whose operand is the function context stored at the start of the
 * trampoline slice, before the on-enter trampoline (so at least 16 bytes
 * back), then a jmp to Gum's leave thunk. A word in the other anonymous
 * code (lv.foreign) that is not this shape is not counted. */
static int
gum_leave_trampoline (u64 w)
{
  const unsigned char * c = (const unsigned char *) w;
  u64 base = 0, end = 0, target;
  int i, d;
  for (i = 0; i != lv.n_foreign; i++)
    if (w >= lv.foreign[2 * i] && w < lv.foreign[2 * i + 1])
    {
      base = lv.foreign[2 * i];
      end = lv.foreign[2 * i + 1];
      break;
    }
  if (base == 0 || w + 16 > end)
    return 0;
  if (c[0] != 0xff || c[1] != 0x35)
    return 0;
  d = *(const int *) (c + 2);
  target = w + 6 + (long) d;
  if (target < base || target + 16 > w || target + 64 < w)
    return 0;
  if (c[6] == 0xe9 || (c[6] == 0xff && c[7] == 0x25))
    return *(volatile u64 *) target != 0;
  return 0;
}

/* How many slots of [lo, hi) hold an on-leave trampoline of Gum's. */
int
instr_scan_gum (u64 lo, u64 hi)
{
  u64 p, w;
  int n = 0;
  for (p = (lo + 7) & ~7UL; p + 8 <= hi; p += 8)
  {
    w = *(volatile u64 *) p;
    if (w >= 4096 && gum_leave_trampoline (w))
      n++;
  }
  return n;
}

/* Up to max stack slots in [lo, hi) that hold value; their count. */
int
instr_find (u64 lo, u64 hi, u64 value, u64 * out, int max)
{
  u64 p;
  int n = 0;
  for (p = (lo + 7) & ~7UL; p + 8 <= hi && n != max; p += 8)
    if (*(volatile u64 *) p == value)
      out[n++] = p;
  return n;
}

/* Replaced by instr_hold_body (Interceptor.replace, when the module is
 * built): a thread that calls it is counted by Gum until it returns. */
int
instr_hold (int arg)
{
  return arg + hold_polls;
}

int
instr_hold_body (int arg)
{
  unsigned int us = 500;
  hold_entered = 1;
  while (any_busy ())
  {
    hold_polls++;
    usleep (us);
    if (us < 50000)
      us *= 2;
  }
  /* A thread whose flag was just set still runs the rest of instr's hook
   * (its epilogue: nanoseconds); Gum frees nothing for another 10 ms tick. */
  usleep (GRACE_US);
  return arg;
}

static void *
hold_thread (void * arg)
{
  int (* volatile hold) (int) = instr_hold;
  hold (0);
  return 0;
}

/* Start the holding thread; 0 once it is inside instr_hold (counted by Gum). */
int
instr_hold_start (void)
{
  u64 thread;
  int i;
  if (pthread_create (&thread, 0, hold_thread, 0) != 0)
    return -1;
  pthread_detach (thread);
  for (i = 0; i != 2000 && !hold_entered; i++)
    usleep (500);
  return hold_entered ? 0 : -2;
}
`;
