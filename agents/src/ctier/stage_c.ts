// The JS tier's native pre-listener (js_pre_enter/js_pre_leave), spliced into
// C_SOURCE (native_c.ts) after collect_entry/collect_exit: it stages each
// call's timestamp and raw values in a per-thread slot that the JS callback
// reads (see Stage in native_c.ts).

export const STAGE_C = `
/* This thread's staging slot, or NULL when every slot is taken (JS then
 * falls back to reading values itself). */
static Stage *
my_stage (void)
{
  Stage * s = (Stage *) gum_tls_key_get_value (ring.stage_key);
  guint32 tid = current_tid ();
  gint i, n;

  /* A slot may have been taken over since (its thread ended): check it is ours. */
  if (s != NULL && s->tid == tid)
    return s;
  s = NULL;
  n = ring.stage_slots;
  for (i = 0; i != 16 && i != n; i++)
  {
    Stage * c = &ring.stage[(tid + i) & (n - 1)];
    if (c->tid == tid)
    {
      s = c;
      break;
    }
    if (c->tid == 0 && g_atomic_int_add (&c->claim, 1) == 0)
    {
      c->tid = tid;
      s = c;
      break;
    }
  }
  /* Every slot taken: take over one whose thread has ended. The claim count
   * only grows, so the one thread whose add returns the count it read wins. */
  for (i = 0; s == NULL && i != 16 && i != n; i++)
  {
    Stage * c = &ring.stage[(tid + i) & (n - 1)];
    gint k = c->claim;
    guint32 owner = c->tid;
    if (owner != 0 && owner != tid && tgkill (getpid (), (int) owner, 0) != 0 &&
        g_atomic_int_add (&c->claim, 1) == k)
    {
      c->tid = tid;
      s = c;
    }
  }
  if (s != NULL)
    gum_tls_key_set_value (ring.stage_key, s);
  return s;
}

/* Hands the values the JS callback is about to need to this thread's slot. */
static void
stage_values (guint64 ts, const guint64 * slots, guint n)
{
  Stage * s = my_stage ();
  guint i;

  if (s == NULL)
    return;
  s->ts = ts;
  for (i = 0; i != n; i++)
    s->v[i] = slots[i];
}

void
js_pre_enter (GumInvocationContext * ic)
{
  Desc * d = (Desc *) gum_invocation_context_get_listener_function_data (ic);
  guint64 ts = now_ns ();
  guint64 slots[MAXC];

  collect_entry (ic, d, ts, slots);
  stage_values (ts, slots, d->n_entry);
}

void
js_pre_leave (GumInvocationContext * ic)
{
  Desc * d = (Desc *) gum_invocation_context_get_listener_function_data (ic);
  guint64 ts = now_ns ();
  guint64 slots[MAXC];

  collect_exit (ic, d, ts, slots);
  stage_values (ts, slots, d->n_exit);
}
`;
