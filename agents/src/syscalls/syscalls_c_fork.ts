// Part of the syscall monitor's C (syscalls_c.ts): fork() under the complete
// mode with -F. The JS side, and why, is syscalls_fork.ts.

export const SYS_C_FORK = `
/* -F: the fork gate's flags, in its data page: [0] threads in fork() through
 * the gate, [1] periodic sends in progress. A send is not begun while a
 * thread is in fork(), and the gate waits for one in progress: a message
 * emitted while Frida prepares a fork was sent by the forked child, on a
 * D-Bus connection copied mid-use, and killed it (docs/syscalls.md). */
static gint * fork_flags;

void
set_fork_flags (gpointer p)
{
  fork_flags = (gint *) p;
}

gint
send_begin (void)
{
  if (fork_flags == NULL)
    return 1;
  g_atomic_int_add (&fork_flags[1], 1);
  if (g_atomic_int_add (&fork_flags[0], 0) != 0)
  {
    g_atomic_int_add (&fork_flags[1], -1);
    return 0;
  }
  return 1;
}

void
send_end (void)
{
  if (fork_flags != NULL)
    g_atomic_int_add (&fork_flags[1], -1);
}

/* The PLT stubs of fork(): a followed thread's call of one is made natively
 * (the stubs are excluded from Stalker) and lands in the fork gate, which
 * must know where the call returns to in the program: the transform puts
 * FORK_MAGIC in r10 and that address in r11 before the call (both are
 * scratch registers at a call; the stubs' GOT slots point at the gate). */
#define FORK_CALLS 32
static gsize fork_calls[FORK_CALLS];

void
set_fork_call (gint i, gpointer p)
{
  if (i >= 0 && i < FORK_CALLS)
    fork_calls[i] = GPOINTER_TO_SIZE (p);
}

#if defined (__x86_64__)
#define FORK_MAGIC 0x6b726f665f727473ULL

static void
put_fork_hint (const cs_insn * insn, GumX86Writer * cw)
{
  const cs_x86 * x = &insn->detail->x86;
  gsize target;
  gint i;
  if (fork_calls[0] == 0 || insn->id != X86_INS_CALL || x->op_count != 1 || x->operands[0].type != X86_OP_IMM)
    return;
  target = (gsize) x->operands[0].imm;
  for (i = 0; i != FORK_CALLS && fork_calls[i] != 0; i++)
  {
    if (fork_calls[i] == target)
    {
      gum_x86_writer_put_mov_reg_u64 (cw, GUM_X86_R10, FORK_MAGIC);
      gum_x86_writer_put_mov_reg_u64 (cw, GUM_X86_R11, (guint64) (insn->address + insn->size));
      return;
    }
  }
}
#endif
`;
