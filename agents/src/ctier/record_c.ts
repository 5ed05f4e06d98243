// The native tier's record building, spliced into C_SOURCE (native_c.ts)
// where Desc, the ST_*/V_* constants and current_tid() are defined: the
// fault-safe copy of C strings and bytes, and the predicate machine that
// runs the host's programs (instr/ctier/wherevm.py). Static C, like the rest.

export const RECORD_C = `
static void emit (Desc * d, gint size, guint phase, guint tid, guint64 ts, guint64 * slots, guint n);

/* Copies bytes from src to dst until n are copied or, when stop_at_nul, a
 * NUL is (included). Returns the count; bit 62 set when reading src faulted.
 * The one load that may fault is at instr_safe_copy_load: the agent's
 * exception handler (core/faults.ts) resumes a fault there at
 * instr_safe_copy_fault, with the count so far in rax. No stack use, so the
 * resumed ret is sound. */
extern guint64 instr_safe_copy (guint8 * dst, const guint8 * src, guint64 n, guint64 stop_at_nul);
#define SAFE_FAULT (1ULL << 62)
#if defined(__x86_64__)
__asm__ (
  ".text\\n"
  ".globl instr_safe_copy\\n"
  "instr_safe_copy:\\n"
  "  xor %eax, %eax\\n"
  "1:\\n"
  "  cmp %rdx, %rax\\n"
  "  jae 2f\\n"
  ".globl instr_safe_copy_load\\n"
  "instr_safe_copy_load:\\n"
  "  movzbl (%rsi,%rax,1), %r8d\\n"
  "  movb %r8b, (%rdi,%rax,1)\\n"
  "  inc %rax\\n"
  "  test %rcx, %rcx\\n"
  "  jz 1b\\n"
  "  test %r8d, %r8d\\n"
  "  jnz 1b\\n"
  "2:\\n"
  "  ret\\n"
  ".globl instr_safe_copy_fault\\n"
  "instr_safe_copy_fault:\\n"
  "  bts $62, %rax\\n"
  "  ret\\n"
);
#else
/* Elsewhere C strings stay in the JS tier (core/layout.ts); never called. */
guint64
instr_safe_copy (guint8 * dst, const guint8 * src, guint64 n, guint64 stop_at_nul)
{
  return SAFE_FAULT;
}
#endif

/* A C string slot at b + off: u32 length, u32 status, the bytes (zero-padded
 * to 8), exactly as the JS tier writes it (probes/capture.ts cstrWriter):
 * up to max + 1 bytes are read so that a string of exactly max bytes is OK;
 * a fault before the NUL is UNREADABLE with the bytes before it. */
typedef struct {
  const guint8 * p;
  gint len; /* -1: None (NULL, or unreadable with nothing read) */
} WStr;

static gint
copy_cstr (guint8 * b, gint off, const guint8 * p, guint max, WStr * s)
{
  guint32 * h = (guint32 *) (b + off);
  guint8 * dst = b + off + 8;
  guint64 r, c;
  guint len, end, status, i;
  gint fault, nul;

  if (p == NULL)
  {
    h[0] = 0;
    h[1] = ST_NULL;
    s->p = NULL;
    s->len = -1;
    return off + 8;
  }
  r = instr_safe_copy (dst, p, (guint64) max + 1, 1);
  fault = (r & SAFE_FAULT) != 0;
  c = r & ~SAFE_FAULT;
  nul = !fault && c > 0 && dst[c - 1] == 0;
  len = (guint) (nul ? c - 1 : c);
  if (len > max)
    len = max;
  status = fault ? ST_UNREADABLE : nul ? ST_OK : ST_TRUNCATED;
  end = (len + 7) & ~7u;
  for (i = len; i < end; i++)
    dst[i] = 0;
  h[0] = len;
  h[1] = status;
  s->p = dst;
  s->len = status == ST_UNREADABLE && len == 0 ? -1 : (gint) len;
  return off + 8 + (gint) end;
}

/* A bytes slot, as the JS tier's bytesWriter: min(want, max) bytes, up to a
 * fault (UNREADABLE, with the bytes before it); TRUNCATED when want > max. */
static gint
copy_bytes (guint8 * b, gint off, const guint8 * p, guint64 want, guint max)
{
  guint32 * h = (guint32 *) (b + off);
  guint8 * dst = b + off + 8;
  guint64 r, n;
  guint len, end, i;
  gint fault;

  if (p == NULL)
  {
    h[0] = 0;
    h[1] = ST_NULL;
    return off + 8;
  }
  n = want > max ? max : want;
  r = n == 0 ? 0 : instr_safe_copy (dst, p, n, 0);
  fault = (r & SAFE_FAULT) != 0;
  len = (guint) (r & ~SAFE_FAULT);
  end = (len + 7) & ~7u;
  for (i = len; i < end; i++)
    dst[i] = 0;
  h[0] = len;
  h[1] = fault ? ST_UNREADABLE : want > max ? ST_TRUNCATED : ST_OK;
  return off + 8 + (gint) end;
}

/* A backtrace slot: u32 count, u32 0, the return addresses. Frame pointers
 * from the caller's (rbp at the hooked function's entry), each step read by
 * the fault-safe copy; the JS tier's fpBacktrace (core/frames.ts) is the
 * same walk. Only chosen where the module keeps frame pointers. */
#define BT_MAX_FRAME (1ULL << 20)

static gint
copy_backtrace (guint8 * b, gint off, const guint64 * fr, guint depth)
{
  guint32 * h = (guint32 *) (b + off);
  guint64 * out = (guint64 *) (b + off + 8);
  guint n = 0;
#if defined(__x86_64__)
  guint64 fp, w[2];

  if (fr != NULL && depth > 0)
  {
    out[n++] = fr[0];
    fp = fr[1];
    while (n < depth)
    {
      if (fp == 0 || (fp & 7) != 0)
        break;
      if (instr_safe_copy ((guint8 *) w, (const guint8 *) (gsize) fp, 16, 0) != 16)
        break;
      if (w[1] < 0x10000)
        break;
      out[n++] = w[1];
      if (w[0] <= fp || w[0] - fp > BT_MAX_FRAME)
        break;
      fp = w[0];
    }
  }
#endif
  h[0] = n;
  h[1] = 0;
  return off + 8 + 8 * (gint) n;
}

/* The predicate machine: see instr/ctier/wherevm.py for the instruction set
 * and why 64-bit arithmetic decides exactly as the JS tier's BigInts do. */
typedef struct _WOp {
  guint8 op;
  guint8 a;
  guint16 b;
  guint32 c;
  gint64 imm;
} WOp;

typedef struct {
  guint32 len;
  guint8 bytes[4];
} WConst;

enum {
  W_IMM = 1, W_CAP = 2, W_TID = 3,
  W_EQ = 10, W_NE, W_LT, W_LE, W_GT, W_GE,
  W_ADD = 20, W_SUB, W_MUL, W_AND, W_OR, W_XOR, W_SHL, W_SHR, W_DIV, W_MOD,
  W_NEG = 30, W_INV,
  W_LNOT = 40, W_LAND, W_LOR,
  W_SEQ = 50, W_STARTS, W_ENDS, W_CONTAINS
};

static guint64
w_conv (guint64 raw, guint conv)
{
  switch (conv)
  {
    case 1: return (guint64) (gint64) (gint8) raw;
    case 2: return (guint64) (gint64) (gint16) raw;
    case 3: return (guint64) (gint64) (gint32) raw;
    case 4: return (guint8) raw;
    case 5: return (guint16) raw;
    case 6: return (guint32) raw;
    case 7: return (raw & 0xff) != 0;
    default: return raw;
  }
}

/* -1, 0, 1; mode bit 0: x is unsigned, bit 1: y is unsigned */
static int
w_cmp (guint64 x, guint64 y, guint mode)
{
  int xs = (mode & 1) == 0, ys = (mode & 2) == 0;
  if (xs && ys)
    return (gint64) x < (gint64) y ? -1 : (gint64) x > (gint64) y;
  if (xs && (gint64) x < 0)
    return -1;
  if (ys && (gint64) y < 0)
    return 1;
  return x < y ? -1 : x > y;
}

static int
w_same (const guint8 * a, const guint8 * b, guint n)
{
  guint i;
  for (i = 0; i != n; i++)
    if (a[i] != b[i])
      return 0;
  return 1;
}

static int
w_str (guint op, const WStr * s, const WConst * k)
{
  gint i;
  gint n = (gint) k->len;
  if (s->len < 0)
    return 0;
  switch (op)
  {
    case W_SEQ: return s->len == n && w_same (s->p, k->bytes, n);
    case W_STARTS: return s->len >= n && w_same (s->p, k->bytes, n);
    case W_ENDS: return s->len >= n && w_same (s->p + s->len - n, k->bytes, n);
    default:
      for (i = 0; i + n <= s->len; i++)
        if (w_same (s->p + i, k->bytes, n))
          return 1;
      return 0;
  }
}

static gint64
w_floordiv (gint64 a, gint64 b)
{
  gint64 q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0)))
    q--;
  return q;
}

static gint64
w_floormod (gint64 a, gint64 b)
{
  gint64 r = a % b;
  if (r != 0 && ((r < 0) != (b < 0)))
    r += b;
  return r;
}

/* vals/strs: this phase's; evals/estrs: the held entry record's (operand
 * flag W_ENTRY in b), at exit. */
#define W_ENTRY 0x100

static int
where_eval (const Desc * d, const guint64 * vals, const WStr * strs, const guint64 * evals,
    const WStr * estrs)
{
  guint64 st[16];
  gint sp = 0;
  guint i;
  const WOp * o;
  guint64 x, y;

  for (i = 0; i != d->prog_len; i++)
  {
    o = &d->prog[i];
    if (o->op >= W_EQ && o->op <= W_GE || o->op >= W_ADD && o->op <= W_XOR || o->op == W_LAND || o->op == W_LOR)
    {
      y = st[--sp];
      x = st[sp - 1];
      switch (o->op)
      {
        case W_EQ: x = w_cmp (x, y, o->a) == 0; break;
        case W_NE: x = w_cmp (x, y, o->a) != 0; break;
        case W_LT: x = w_cmp (x, y, o->a) < 0; break;
        case W_LE: x = w_cmp (x, y, o->a) <= 0; break;
        case W_GT: x = w_cmp (x, y, o->a) > 0; break;
        case W_GE: x = w_cmp (x, y, o->a) >= 0; break;
        case W_ADD: x = x + y; break;
        case W_SUB: x = x - y; break;
        case W_MUL: x = x * y; break;
        case W_AND: x = x & y; break;
        case W_OR: x = x | y; break;
        case W_XOR: x = x ^ y; break;
        case W_LAND: x = x != 0 && y != 0; break;
        default: x = x != 0 || y != 0; break;
      }
      st[sp - 1] = x;
      continue;
    }
    switch (o->op)
    {
      case W_IMM: st[sp++] = (guint64) o->imm; break;
      case W_CAP:
        st[sp++] = w_conv ((o->b & W_ENTRY) ? evals[o->a] : vals[o->a], o->b & 0xff);
        break;
      case W_TID: st[sp++] = current_tid (); break;
      case W_SHL: st[sp - 1] <<= o->imm; break;
      case W_SHR:
        st[sp - 1] = o->a ? st[sp - 1] >> o->imm : (guint64) ((gint64) st[sp - 1] >> o->imm);
        break;
      case W_DIV:
        st[sp - 1] = o->a ? st[sp - 1] / (guint64) o->imm
            : (guint64) w_floordiv ((gint64) st[sp - 1], o->imm);
        break;
      case W_MOD:
        st[sp - 1] = o->a ? st[sp - 1] % (guint64) o->imm
            : (guint64) w_floormod ((gint64) st[sp - 1], o->imm);
        break;
      case W_NEG: st[sp - 1] = 0 - st[sp - 1]; break;
      case W_INV: st[sp - 1] = ~st[sp - 1]; break;
      case W_LNOT: st[sp - 1] = st[sp - 1] == 0; break;
      default:
        st[sp++] = w_str (o->op, (o->b & W_ENTRY) ? &estrs[o->a] : &strs[o->a],
            (const WConst *) (gsize) o->imm);
        break;
    }
  }
  return sp > 0 && st[sp - 1] != 0;
}

/* A record's body (its slots) at b; returns its length. */
static gint
fill_body (const guint64 * fr, guint8 * b, guint64 * slots, guint n,
    const guint16 * maxes, const guint8 * vars, const guint8 * lenidx, WStr * strs)
{
  guint64 * body = (guint64 *) b;
  gint off = 0;
  guint i;

  for (i = 0; i != n; i++)
  {
    if (vars[i] == V_INT)
    {
      body[off / 8] = slots[i];
      off += 8;
    }
    else if (vars[i] == V_CSTR)
    {
      off = copy_cstr (b, off, (const guint8 *) (gsize) slots[i], maxes[i], &strs[i]);
    }
    else if (vars[i] == V_BYTES)
    {
      off = copy_bytes (b, off, (const guint8 *) (gsize) slots[i],
          lenidx[i] == LEN_CONST ? maxes[i] : slots[lenidx[i]], maxes[i]);
    }
    else
    {
      off = copy_backtrace (b, off, fr, maxes[i]);
    }
  }
  return off;
}

/* A record with C strings, bytes, a backtrace or a predicate: built on the
 * stack, tested, then written. Returns whether the predicate (if any) held.
 * fr: the return address and the caller's frame pointer (NULL at exit). */
static int
build_record (Desc * d, const guint64 * fr, guint phase, guint64 ts, guint64 * slots,
    guint n, const guint16 * maxes, const guint8 * vars, const guint8 * lenidx, gint write)
{
  guint64 body[BODY_MAX / 8 + 2]; /* + the byte past a string's max, padded */
  WStr strs[MAXC];
  gint off = fill_body (fr, (guint8 *) body, slots, n, maxes, vars, lenidx, strs);

  if (d->where_phase == phase + 1 && !where_eval (d, slots, strs, NULL, NULL))
    return 0;
  if (write)
    emit (d, 24 + off, phase, current_tid (), ts, body, (guint) off / 8);
  return 1;
}

/* An exit predicate: the entry record waits in the invocation data. */
static void
hold_entry (Desc * d, GumInvocationContext * ic, const guint64 * fr, guint64 ts, guint64 * slots)
{
  Inv * inv = (Inv *) gum_invocation_context_get_listener_invocation_data (ic, sizeof (Inv));
  WStr strs[MAXC];

  inv->held_len = (guint32) fill_body (fr, (guint8 *) inv->held, slots, d->ncap_entry,
      d->entry_max, d->entry_var, d->entry_lenidx, strs);
  inv->held_ts = ts;
  inv->held_tid = current_tid ();
}

/* The held entry record's values, as the predicate reads them. */
static void
read_held (Desc * d, Inv * inv, guint64 * vals, WStr * strs)
{
  const guint8 * b = (const guint8 *) inv->held;
  guint i, len, status;
  guint off = 0;

  for (i = 0; i != d->ncap_entry && off + 8 <= inv->held_len; i++)
  {
    if (d->entry_var[i] == V_INT)
    {
      vals[i] = *(const guint64 *) (b + off);
      off += 8;
      continue;
    }
    len = *(const guint32 *) (b + off);
    status = *(const guint32 *) (b + off + 4);
    strs[i].p = b + off + 8;
    strs[i].len = status == ST_NULL || (status == ST_UNREADABLE && len == 0) ? -1 : (gint) len;
    off += 8 + (d->entry_var[i] == V_BACKTRACE ? 8 * len : (len + 7) & ~7u);
  }
}

/* At exit: both records when the predicate holds, none otherwise. */
static void
release_held (Desc * d, GumInvocationContext * ic, guint64 ts, guint64 * slots)
{
  Inv * inv = (Inv *) gum_invocation_context_get_listener_invocation_data (ic, sizeof (Inv));
  guint64 body[BODY_MAX / 8 + 2];
  WStr strs[MAXC], estrs[MAXC];
  guint64 evals[MAXC];
  gint off = fill_body (NULL, (guint8 *) body, slots, d->ncap_exit, d->exit_max, d->exit_var,
      d->exit_lenidx, strs);

  read_held (d, inv, evals, estrs);
  if (!where_eval (d, slots, strs, evals, estrs))
    return;
  emit (d, 24 + (gint) inv->held_len, 0, inv->held_tid, inv->held_ts, inv->held,
      inv->held_len / 8);
  emit (d, 24 + off, 1, current_tid (), ts, body, (guint) off / 8);
}
`;
