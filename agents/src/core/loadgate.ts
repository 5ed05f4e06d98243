// Holding a library's loader until its probes are in place.
//
// Probes for a library loaded later are armed on the JS thread when the
// module observer reports it. Interceptor commits hooks when the last open
// transaction ends, and transactions are shared by all threads: a thread
// inside any JS callback holds one open. So a dlopen() that waited for the
// arming in a JS onLeave kept the hooks uncommitted while it waited, and the
// program could call into the library before they were written (seen: the
// first 857 of 1000 calls missed, about 1 run in 50).
//
// Here dlopen's return waits in native code (no JS, no transaction) until the
// JS thread has armed the new modules and seen the hooks written; bounded, so
// that a stuck JS thread cannot hang the program.

import * as hooks from "./hooks.js";

const C_SOURCE = `
#include <gum/guminterceptor.h>

extern volatile int instr_gate[2]; /* [0]: modules not yet armed, [1]: the JS thread */
extern int usleep (unsigned int usec);

void
instr_load_leave (GumInvocationContext * ic)
{
  int i;

  /* The JS thread loading a library itself would wait for itself. */
  if ((int) gum_invocation_context_get_thread_id (ic) == instr_gate[1])
    return;
  for (i = 0; i != WAIT_STEPS && instr_gate[0] > 0; i++)
    usleep (STEP_US);
}
`;

/** The longest a loader waits for its modules to be armed. */
const WAIT_MS = 2000;
const STEP_US = 200;

export class LoadGate {
    private readonly state = Memory.alloc(8);
    private module: CModule | null = null;
    private readonly listeners: InvocationListener[] = [];

    constructor(jsThread: number) {
        this.state.writeS32(0);
        this.state.add(4).writeS32(jsThread);
    }

    /** Hook the loaders' returns; returns the errors (a loader that cannot be hooked is not gated). */
    install(): string[] {
        const errors: string[] = [];
        try {
            const steps = Math.floor((WAIT_MS * 1000) / STEP_US);
            this.module = new CModule(C_SOURCE.replace("WAIT_STEPS", String(steps)).replace("STEP_US", String(STEP_US)), {
                instr_gate: this.state,
                usleep: Module.getGlobalExportByName("usleep"),
            });
        } catch (e) {
            return [`cannot build the load gate: ${e instanceof Error ? e.message : String(e)}`];
        }
        const leave = this.module.instr_load_leave;
        for (const name of ["dlopen", "dlmopen", "android_dlopen_ext"]) {
            const address = Module.findGlobalExportByName(name);
            if (address === null) continue;
            try {
                this.listeners.push(hooks.attach(address, { onLeave: leave } as NativeInvocationListenerCallbacks));
            } catch (e) {
                errors.push(`cannot hook ${name} to arm probes at load: ${e instanceof Error ? e.message : String(e)}`);
            }
        }
        return errors;
    }

    /** A module to arm: loaders returning from now on wait for it. */
    hold(): void {
        this.state.writeS32(this.state.readS32() + 1);
    }

    /** Modules armed (their hooks written), or given up on. */
    release(n: number): void {
        this.state.writeS32(Math.max(0, this.state.readS32() - n));
    }

    dispose(): void {
        this.state.writeS32(0);
        for (const l of this.listeners.splice(0)) l.detach();
    }
}
