// The agent's one exception handler (Process.setExceptionHandler keeps one).
//
// Fixers come first: C code of the agent that reads memory it cannot vouch
// for (the native tier's fault-safe string copy, ctier/native_c.ts) marks the
// instruction that may fault, and its fixer moves the thread to a recovery
// point instead of letting the program die. Only a fault at one of those
// exact instructions is fixed. Anything else goes to the fatal handler (the
// lifecycle's flush-and-report), which lets the process die as it would have.

type Handler = (details: ExceptionDetails) => boolean;

const fixers: Handler[] = [];
let fatal: Handler | null = null;
let installed = false;

function install(): void {
    if (installed) return;
    installed = true;
    Process.setExceptionHandler((details) => {
        for (const fix of fixers) if (fix(details)) return true;
        return fatal !== null ? fatal(details) : false;
    });
}

/** A fault at `at` resumes at `resume` (the C there reports it as unreadable). */
export function recoverAt(at: NativePointer, resume: NativePointer): void {
    fixers.push((d) => {
        if (!d.address.equals(at)) return false;
        d.context.pc = resume;
        return true;
    });
    install();
}

/** What runs for a fault no fixer claims; returns whether the fault was handled. */
export function onFatal(handler: Handler): void {
    fatal = handler;
    install();
}
