// Part of the syscall monitor's C (syscalls_c.ts): trace mode's records, one
// per call, written into the two-half ring that syscalls.ts drains.

export const SYS_C_TRACE = `
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

/* Record: u16 size, u16 nr, u8 flags, u8 nmem, u16 known, u32 tid, i32 errno,
 * u64 ts, u64 dur, i64 ret, u64 args[6]; then per memory argument u8 index,
 * u8 pad, u16 pad, u32 len, bytes padded to 8. known: how many of the args
 * are the call's (a wrapper with fewer arguments than its syscall, such as
 * _Fork for clone, leaves the rest 0: not values to print). */
static void
record (guint nr, guint flags, guint64 ts, guint64 dur, gint64 * a, gint known, gint64 ret, gint err)
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
  *(guint16 *) (p + 6) = (guint16) known;
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

`;
