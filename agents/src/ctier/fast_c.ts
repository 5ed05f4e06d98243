// Entry-only native probes without a listener: Interceptor.replaceFast sends
// the call to one of FAST_STUBS fixed stubs, which saves the argument
// registers, builds the probe's record in C (fast_enter) and jumps on to the
// original with every register and the stack as the caller left them, so any
// signature works (stack arguments, floating point, varargs). Gum's listener
// dispatch, ~220 ns of a native probe's ~300 ns here (scripts/bench_fast.py),
// is not paid. x86_64 only; spliced into C_SOURCE after on_enter's helpers.
// The stubs are the same for every probe (a slot table says which descriptor
// and original each serves): static, not templated per probe.

export const FAST_STUBS = 64;

function stubs(): string {
    const out: string[] = [];
    for (let i = 0; i < FAST_STUBS; i++) {
        out.push(`  ".globl fast_stub_${i}\\n"`, `  "fast_stub_${i}:\\n"`, `  "  pushq $${i}\\n"`, `  "  jmp fast_common\\n"`);
    }
    return out.join("\n");
}

// movdqu %xmmK, 16K(%rsp) and back, as bytes (TinyCC's assembler lacks movdqu):
// F3 0F 7F (store) / 6F (load), ModRM 01 K 100, SIB 0x24 (rsp), disp8.
function xmm(opcode: number): string {
    const line = (k: number): string => {
        const bytes = [0xf3, 0x0f, opcode, 0x44 | (k << 3), 0x24, 16 * k].map((b) => "0x" + b.toString(16));
        return `  "  .byte ${bytes.join(", ")}\\n"`;
    };
    return [0, 1, 2, 3, 4, 5, 6, 7].map(line).join("\n");
}

const SAVE_XMM = xmm(0x7f);
const LOAD_XMM = xmm(0x6f);

export const FAST_C = `
typedef struct {
  Desc * desc;
  gpointer orig; /* Gum's trampoline to the original */
} FastSlot;

extern FastSlot fast_slots[];

/* From a stub: regs are the saved r10, r9, r8, rcx, rdx, rsi, rdi, rax (from
 * low addresses up); sp points at the return address, stack arguments above.
 * Returns where the stub goes on: the original. */
gpointer
fast_enter (guint64 idx, const guint64 * regs, const guint64 * sp, guint64 rbp)
{
  FastSlot * f = &fast_slots[idx];
  Desc * d = f->desc;
  guint64 ts;
  guint64 slots[MAXC];
  guint64 fr[2];
  guint i, a;
  static const guint8 reg_of_arg[6] = { 6, 5, 4, 3, 2, 1 };

  /* Frida's and the agent's calls are not the program's (core/toolthread.ts) */
  if (tool_thread ())
    return f->orig;
  ts = now_ns ();

  for (i = 0; i != d->n_entry; i++)
  {
    a = d->entry_idx[i];
    if (d->entry_kind[i] != K_ARG)
      slots[i] = sp[0];
    else
      slots[i] = a < 6 ? regs[reg_of_arg[a]] : sp[1 + a - 6];
  }
  if (!d->var_entry)
  {
    emit (d, d->entry_size, 0, current_tid (), ts, slots, d->n_entry);
    return f->orig;
  }
  fr[0] = sp[0];
  fr[1] = rbp;
  build_record (d, fr, 0, ts, slots, d->ncap_entry, d->entry_max, d->entry_var,
      d->entry_lenidx, 1);
  return f->orig;
}

#if defined(__x86_64__)
__asm__ (
  ".text\\n"
  "fast_common:\\n"
  "  pushq %rax\\n"
  "  pushq %rdi\\n"
  "  pushq %rsi\\n"
  "  pushq %rdx\\n"
  "  pushq %rcx\\n"
  "  pushq %r8\\n"
  "  pushq %r9\\n"
  "  pushq %r10\\n"
  "  subq $128, %rsp\\n"
${SAVE_XMM}
  "  movq 192(%rsp), %rdi\\n"
  "  leaq 128(%rsp), %rsi\\n"
  "  leaq 200(%rsp), %rdx\\n"
  "  movq %rbp, %rcx\\n"
  "  call fast_enter\\n"
  "  movq %rax, 192(%rsp)\\n"
${LOAD_XMM}
  "  addq $128, %rsp\\n"
  "  popq %r10\\n"
  "  popq %r9\\n"
  "  popq %r8\\n"
  "  popq %rcx\\n"
  "  popq %rdx\\n"
  "  popq %rsi\\n"
  "  popq %rdi\\n"
  "  popq %rax\\n"
  "  popq %r11\\n"
  "  jmp *%r11\\n"
${stubs()}
);
#endif
`;
