// Whether the calling thread is the tool's (Frida's, or this agent's), for C
// hooks that Gum does not filter. Gum's listeners (Interceptor.attach) and
// JS callbacks never run on Frida's own threads: Gum ignores them. Code that
// replaceFast installs, and the native tier's entry stubs, run on every
// thread, so a malloc aggregation counted the agent's own mallocs as the
// program's. The same rules as the memory tracker's (mem_c.ts: tool_thread,
// and threads.ts): the tool's thread ids when the hooks are armed, and for a
// thread started later, the start routine glibc keeps in its struct pthread,
// when it lies in Frida's code. Decided at a thread's first call, then kept
// in a Gum TLS slot: one TLS read per call.
//
// A CModule that uses it includes TOOL_C, binds toolSymbols() and calls
// armToolThreads() once built.

import { MAX_TOOL_RANGES, MAX_TOOL_TIDS, toolThreads } from "./threads.js";

// struct ToolState below
const OFF_N_TIDS = 8;
const OFF_START = 12;
const OFF_N_RANGES = 16;
const OFF_TIDS = 24;
const OFF_RANGES = OFF_TIDS + 4 * MAX_TOOL_TIDS;
const STATE_SIZE = OFF_RANGES + 16 * MAX_TOOL_RANGES;
const keep: NativePointer[] = []; // the states, alive as long as their modules

export const TOOL_C = `
#include <gum/gumtls.h>

typedef struct
{
  GumTlsKey key;
  gint n_tids, start_off, n_ranges, pad;
  gint tids[${MAX_TOOL_TIDS}];
  guint64 ranges[${2 * MAX_TOOL_RANGES}];
} ToolState;

extern ToolState tool_state;
extern void * tool_pthread_self (void);
extern int tool_gettid (void);

static int
tool_decide (void)
{
  gint tid = tool_gettid ();
  gint i;
  guint64 start;
  for (i = 0; i < tool_state.n_tids; i++)
    if (tool_state.tids[i] == tid)
      return 1;
  if (tool_state.start_off <= 0)
    return 0;
  start = *(volatile guint64 *) ((guint8 *) tool_pthread_self () + tool_state.start_off);
  for (i = 0; i < tool_state.n_ranges; i++)
    if (start >= tool_state.ranges[2 * i] && start < tool_state.ranges[2 * i + 1])
      return 1;
  return 0;
}

/* 1 when the calling thread is the tool's. */
static int
tool_thread (void)
{
  gsize v = GPOINTER_TO_SIZE (gum_tls_key_get_value (tool_state.key));
  if (v == 0)
  {
    v = 2 | (gsize) tool_decide ();
    gum_tls_key_set_value (tool_state.key, GSIZE_TO_POINTER (v));
  }
  return (int) (v & 1);
}

/* An address inside Frida's agent: a Gum function. */
void *
tool_agent_address (void)
{
  return (void *) gum_tls_key_get_value;
}

void
tool_setup (void)
{
  tool_state.key = gum_tls_key_new ();
}
`;

/** The symbols TOOL_C needs; its state is filled by armToolThreads. */
export function toolSymbols(): { tool_state: NativePointer; tool_pthread_self: NativePointer; tool_gettid: NativePointer } {
    const state = Memory.alloc(STATE_SIZE);
    keep.push(state);
    return {
        tool_state: state,
        tool_pthread_self: Module.getGlobalExportByName("pthread_self"),
        tool_gettid: Module.getGlobalExportByName("gettid"),
    };
}

/** Fill a built module's ToolState (from the calling JS thread, which is Frida's):
 * before any of its hooks is in. */
export function armToolThreads(cm: CModule, state: NativePointer): void {
    const inside = new NativeFunction(cm.tool_agent_address, "pointer", [])();
    const tool = toolThreads(inside);
    state.add(OFF_N_TIDS).writeS32(tool.tids.length);
    state.add(OFF_START).writeS32(tool.startOffset);
    state.add(OFF_N_RANGES).writeS32(tool.ranges.length);
    tool.tids.forEach((t, i) => state.add(OFF_TIDS + 4 * i).writeS32(t));
    tool.ranges.forEach(([lo, hi], i) => {
        state.add(OFF_RANGES + 16 * i).writePointer(lo);
        state.add(OFF_RANGES + 16 * i + 8).writePointer(hi);
    });
    new NativeFunction(cm.tool_setup, "void", [])();
}
