// Part of the syscall monitor's C (syscalls_c.ts): the program's own fd table
// (fdtable.ts; docs/syscalls.md, "Frida's threads and the fd table").
//
// Armed by fdtable.ts on Frida's JS thread, done by the program's thread in
// its next hooked call (begin() in syscalls_c.ts), before the wrapper runs: a
// function boundary, on the program's own thread, whether the program was
// spawned or attached. That call may come from anywhere, a signal handler or
// libc with a lock held (malloc calling mmap), so this code calls only plain
// syscall wrappers: no allocation, no lock, no JS. Its own calls go through
// the hooked wrappers with the thread ignored, so they are not counted.
// CModule's glib has only g_atomic_int_add: the first thread to add to
// sep_claim does the work, and states that another thread reads are
// published by an atomic add (a full barrier).

export const SYS_C_FDS = `
#define SEP_NONE 0
#define SEP_ARMED 1
#define SEP_BUSY 2
#define SEP_DONE 3
#define SEP_THREADS 4 /* refused: sep_detail other threads */
#define SEP_FAILED 5 /* refused: unshare failed, errno sep_detail */
#define SEP_LISTING 6 /* refused: /proc/self/task unreadable, errno sep_detail */
#define CLONE_FILES 0x400
#define O_CLOEXEC_ 0x80000 /* the same on x86_64 and aarch64 (O_DIRECTORY is not) */

extern int unshare (int flags);
extern int dup3 (int from, int to, int flags);
extern gssize getdents64 (int fd, void * buf, gsize n);

typedef struct {
  guint64 ino;
  gint64 off;
  guint16 reclen;
  guint8 type;
  gchar name[1];
} Dirent64;

/* Threads of this process other than the caller and Frida's (as fdtable.ts
 * listed them when it armed); -1 with errno when /proc cannot be read. A
 * thread of Frida's made since then counts as another: refused, never wrong. */
static gint
sep_others (gint32 self)
{
  guint8 buf[1024];
  gint fd, others = 0;
  gssize n, at;
  fd = open ("/proc/self/task", O_CLOEXEC_);
  if (fd < 0)
    return -1;
  while ((n = getdents64 (fd, buf, sizeof buf)) > 0)
  {
    for (at = 0; at < n; at += ((Dirent64 *) (buf + at))->reclen)
    {
      const gchar * p = ((Dirent64 *) (buf + at))->name;
      gint32 tid = 0;
      if (*p < '0' || *p > '9')
        continue;
      for (; *p >= '0' && *p <= '9'; p++)
        tid = tid * 10 + (*p - '0');
      if (tid != self && !tid_listed (sys.sep_frida, sys.sep_nfrida, tid))
        others++;
    }
  }
  close (fd);
  return n < 0 ? -1 : others;
}

/* On a program's thread, in a hooked call, once: if it is the program's only
 * thread (race-free: only the program's threads make the program's threads,
 * and the only one is here), give it its own table and put /dev/null over
 * Frida's sockets in it (Frida's connection must close when Frida closes
 * it). Frida's eventfds stay: its code on this thread may signal them. */
static void
sep_here (void)
{
  gint i, others, state;
  if (g_atomic_int_add (&sys.sep_claim, 1) != 0)
    return;
  sys.sep = SEP_BUSY;
  others = sep_others ((gint32) my_tid ());
  if (others != 0)
  {
    sys.sep_detail = others < 0 ? *errno_location () : others;
    state = others < 0 ? SEP_LISTING : SEP_THREADS;
  }
  else if (unshare (CLONE_FILES) != 0)
  {
    sys.sep_detail = *errno_location ();
    state = SEP_FAILED;
  }
  else
  {
    for (i = 0; i != sys.sep_ncovers; i++)
      dup3 (sys.sep_nul, sys.sep_covers[i], O_CLOEXEC_);
    close (sys.sep_nul); /* this table's copy of it */
    state = SEP_DONE;
  }
  g_atomic_int_add (&sys.sep, state - SEP_BUSY);
}

/* fdtable.ts, on Frida's JS thread: arm with its /dev/null (open in the
 * shared table), Frida's sockets and Frida's threads. */
void
sep_arm (gint nul, const gint32 * covers, gint ncovers, const gint32 * frida, gint nfrida)
{
  gint i;
  sys.sep_nul = nul;
  sys.sep_ncovers = MIN (ncovers, 16);
  for (i = 0; i != sys.sep_ncovers; i++)
    sys.sep_covers[i] = covers[i];
  sys.sep_nfrida = MIN (nfrida, 64);
  for (i = 0; i != sys.sep_nfrida; i++)
    sys.sep_frida[i] = frida[i];
  sys.sep_detail = 0;
  sys.sep_claim = 0;
  g_atomic_int_add (&sys.sep_claim, 0);
  sys.sep = SEP_ARMED;
}

/* The state (SEP_*), and its detail in *detail. */
gint
sep_state (gint * detail)
{
  gint state = g_atomic_int_add (&sys.sep, 0);
  *detail = sys.sep_detail;
  return state;
}

/* Disarm (claim it here) unless a program's thread has claimed it; then
 * SEP_BUSY until its work is done, and the state after. */
gint
sep_disarm (void)
{
  gint state;
  if (g_atomic_int_add (&sys.sep_claim, 1) == 0)
  {
    sys.sep = SEP_NONE;
    return SEP_NONE;
  }
  state = g_atomic_int_add (&sys.sep, 0);
  return state == SEP_ARMED ? SEP_BUSY : state;
}
`;
