// Child gating is Frida's: enabling it makes Frida's agent hook fork() (its
// fork monitor). Gum writes that hook when the last open Interceptor
// transaction ends, and every JS scope of this agent (an RPC, a timer) holds
// one: the jump can land a few milliseconds after the host's
// enable_child_gating() returned. A fork() before it is not gated: the child
// runs, unseen, to its end (seen: `instr syscalls -F -c` missed a child's
// write in about 1 run of 30 under load). The host (instr/lifecycle.py:
// Agent.gate_children) reads fork()'s first bytes before enabling, then asks
// again, each time from a new scope, until they have changed.

const PROLOGUE_BYTES = 16;

/** The first bytes of libc's fork(), in hex; null when there is no fork()
 * (Windows, a libc without it). */
export function forkPrologue(): string | null {
    const fork = Module.findGlobalExportByName("fork");
    if (fork === null) return null;
    const bytes = fork.readByteArray(PROLOGUE_BYTES);
    if (bytes === null) return null;
    return Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, "0")).join("");
}
