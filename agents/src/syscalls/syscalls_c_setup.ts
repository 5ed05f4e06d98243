// Part of the syscall monitor's C (syscalls_c.ts): the complete mode's Stalker
// callouts and transform, and what syscalls.ts calls to set the monitor up and
// read it (ring swap, init, Frida's code ranges, sites, counters).

export const SYS_C_SETUP = `
/* Complete mode: Stalker follows the program's threads and raw_transform puts
 * a callout before and after each syscall/svc instruction outside Frida's
 * code. The call is accounted after it returns (result in rax/x0); execve and
 * exit_group do not return and are counted from the ending, as in the default
 * mode. The child of a clone runs unstalked (Stalker's own clone handling),
 * so only the parent's return is seen. One call in flight per thread (TLS). */
/* The call in flight of a followed thread: in its slot, or (pool used up)
 * allocated on its first syscall (callouts run on the program's threads,
 * outside Frida's code, so never inside Frida's allocator). */
static RawCall *
raw_call (gboolean create)
{
  Thr * t = NULL;
  RawCall * c;
  if (create)
  {
    state_get (&t);
  }
  else
  {
    gsize v = GPOINTER_TO_SIZE (gum_tls_key_get_value (sys.key));
    if (v == 0)
      return NULL;
    t = slot_of (v);
  }
  if (t != NULL)
    return &t->raw;
  c = (RawCall *) gum_tls_key_get_value (sys.raw_key);
  if (c == NULL && create)
  {
    c = (RawCall *) g_malloc0 (sizeof (RawCall));
    gum_tls_key_set_value (sys.raw_key, c);
  }
  return c;
}

static void
on_raw_enter (GumCpuContext * cpu, gpointer user_data)
{
  RawCall * c;
  gint nr;
  if (!sys.active)
    return;
  c = raw_call (TRUE);
  c->on = 0;
#if defined (__x86_64__)
  nr = (gint) cpu->rax;
  c->args[0] = (gint64) cpu->rdi; c->args[1] = (gint64) cpu->rsi; c->args[2] = (gint64) cpu->rdx;
  c->args[3] = (gint64) cpu->r10; c->args[4] = (gint64) cpu->r8; c->args[5] = (gint64) cpu->r9;
#else
  nr = (gint) cpu->x[8];
  { gint k; for (k = 0; k != 6; k++) c->args[k] = (gint64) cpu->x[k]; }
#endif
  if (nr < 0 || nr >= NR_MAX || !sys.selected[nr])
    return;
  c->nr = nr;
  c->on = 1;
  c->t0 = now_ticks ();
}

static void
on_raw_leave (GumCpuContext * cpu, gpointer user_data)
{
  RawCall * c = raw_call (FALSE);
  guint64 t1 = now_ticks ();
  gint64 r;
  gint err = 0;
  if (c == NULL || !c->on)
    return;
  c->on = 0;
#if defined (__x86_64__)
  r = (gint64) cpu->rax;
#else
  r = (gint64) cpu->x[0];
#endif
  if (r < 0 && r >= -4095)
  {
    err = (gint) -r;
    r = -1;
  }
  add64 (&sys.counters[c->nr].count, 1);
  if (err != 0)
    add64 (&sys.counters[c->nr].errors, 1);
  add64 (&sys.counters[c->nr].ns, (gint64) (t1 - c->t0));
  if (sys.trace)
    record (c->nr, err ? RF_ERROR : 0, c->t0, t1 - c->t0, c->args, 6, r, err);
}

void
raw_transform (GumStalkerIterator * iterator, GumStalkerOutput * output, gpointer user_data)
{
  const cs_insn * insn;
  while (gum_stalker_iterator_next (iterator, &insn))
  {
#if defined (__x86_64__)
    put_fork_hint (insn, output->writer.x86);
    gboolean sc = insn->id == X86_INS_SYSCALL;
#else
    gboolean sc = insn->id == ARM64_INS_SVC;
#endif
    sc = sc && !in_frida ((gsize) insn->address);
    if (sc)
      gum_stalker_iterator_put_callout (iterator, on_raw_enter, NULL, NULL);
    gum_stalker_iterator_keep (iterator);
    if (sc)
      gum_stalker_iterator_put_callout (iterator, on_raw_leave, NULL, NULL);
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

gint
thr_size (void)
{
  return (gint) sizeof (Thr);
}

void
sys_init (gint cap, gint trace, gint strmax, gint bufmax, guint8 * buf0, guint8 * buf1, guint8 * kinds, guint8 * lens, guint8 * selected, gpointer thr_pool, gint thr_bytes)
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
  sys.raw_key = gum_tls_key_new ();
  sys.thr_pool = (Thr *) thr_pool;
  sys.thr_cap = thr_bytes / (gint) sizeof (Thr);
}

/* An address inside Frida's agent, to find its mapping. */
gpointer
agent_address (void)
{
  return (gpointer) gum_tls_key_get_value;
}

void
set_start_offset (gint off)
{
  sys.start_off = off;
}

static gsize
hex_at (const gchar ** p)
{
  gsize v = 0;
  for (;; (*p)++)
  {
    gchar c = **p;
    if (c >= '0' && c <= '9') v = v * 16 + (c - '0');
    else if (c >= 'a' && c <= 'f') v = v * 16 + (c - 'a' + 10);
    else return v;
  }
}

/* Frida's code from /proc/self/maps: the file mapping holding INSIDE (the
 * agent; first), and every anonymous executable mapping (Frida's loader,
 * CModules, trampolines). Parsed here rather than in JS: JS temporaries
 * left to the collector crash a child forked under child gating (measured). */
void
find_frida_ranges (gpointer inside, gchar * buf, gint cap)
{
  gint fd = open ("/proc/self/maps", 0), n = 0, r;
  gsize a = GPOINTER_TO_SIZE (inside), lo = 0, hi = 0, inode = 0;
  gchar * line, * nl;
  if (fd < 0)
    return;
  while (n < cap - 1 && (r = (gint) read (fd, buf + n, cap - 1 - n)) > 0)
    n += r;
  close (fd);
  buf[n] = 0;
  /* Pass 1: the inode of the mapping holding INSIDE. */
  for (line = buf; *line != 0; line = nl + 1)
  {
    const gchar * p = line;
    gsize l, h, ino;
    gint f;
    nl = line;
    while (*nl != 0 && *nl != '\\n') nl++;
    l = hex_at (&p); p++; h = hex_at (&p); p++;
    for (f = 0; f != 3 && p < nl; p++) if (*p == ' ') f++;
    while (*p == ' ') p++;
    ino = 0;
    while (*p >= '0' && *p <= '9') { ino = ino * 10 + (*p - '0'); p++; }
    if (a >= l && a < h) inode = ino;
    if (*nl == 0) break;
  }
  /* Pass 2: merge that inode's mappings; collect anonymous executable ones. */
  sys.n_ranges = 1;
  for (line = buf; *line != 0; line = nl + 1)
  {
    const gchar * p = line;
    gsize l, h, ino;
    gboolean x, anon;
    gint f;
    nl = line;
    while (*nl != 0 && *nl != '\\n') nl++;
    l = hex_at (&p); p++; h = hex_at (&p); p++;
    x = p[2] == 'x';
    for (f = 0; f != 3 && p < nl; p++) if (*p == ' ') f++;
    while (*p == ' ') p++;
    ino = 0;
    while (*p >= '0' && *p <= '9') { ino = ino * 10 + (*p - '0'); p++; }
    while (*p == ' ') p++;
    anon = (p >= nl);
    if (inode != 0 && ino == inode)
    {
      if (lo == 0 || l < lo) lo = l;
      if (h > hi) hi = h;
    }
    else if (anon && x && sys.n_ranges < 64)
    {
      sys.ranges[2 * sys.n_ranges] = l;
      sys.ranges[2 * sys.n_ranges + 1] = h;
      sys.n_ranges++;
    }
    if (*nl == 0) break;
  }
  sys.ranges[0] = lo != 0 ? lo : a;
  sys.ranges[1] = hi != 0 ? hi : a + 1;
}

gpointer
frida_range (gint k)
{
  return GSIZE_TO_POINTER (sys.ranges[k]);
}

void
add_frida_range (gpointer lo, gpointer hi)
{
  if (sys.n_ranges == 64)
    return;
  sys.ranges[2 * sys.n_ranges] = GPOINTER_TO_SIZE (lo);
  sys.ranges[2 * sys.n_ranges + 1] = GPOINTER_TO_SIZE (hi);
  sys.n_ranges++;
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
n_ranges_offset (void)
{
  return (gint) G_STRUCT_OFFSET (Sys, n_ranges);
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
