// The program's own fd table (docs/syscalls.md, "Frida's threads and the fd
// table"). While a second thread shares a process's fd table, the kernel
// takes a reference on the file for every fd syscall (and drops it after);
// with Frida's threads in the process, a write() to /dev/null took 55-75 ns
// more here, for any tool that injects. Giving the program's (single) thread
// a table of its own with unshare(CLONE_FILES) takes that cost away.
//
// Only the program's thread can unshare its own table, and only at a moment
// when it is safe: its next call of a wrapper the syscall monitor hooked (a
// function boundary; syscalls_c_fds.ts, all in C: that call may come from a
// signal handler, or from inside malloc). There it checks that it is the
// program's only thread, unshares, and in the new table puts /dev/null over
// Frida's sockets (so Frida's connection still closes when Frida closes it).
// Frida's eventfds stay: Frida's code on the program's threads may signal
// them. Then, here on Frida's JS thread, the program's fds are closed in
// Frida's table (0-2 are covered with /dev/null instead): Frida's threads
// must not hold the program's pipes and sockets open after the program has
// closed them. The program's fds are those Frida did not cloak: every fd of
// Frida's in a process is cloaked, but the memfd of its helper that Frida's
// spawner leaks into a spawned program (measured, frida 17).
//
// Not the first version's way for an attached program: Process.runOnThread
// hijacks the thread wherever it is; in 1 of 20 runs a write() it
// interrupted ran twice and the target later died of SIGSEGV (measured).

import { dirEntries, post, processThreads } from "../core/util.js";

const O_RDWR = 2;
const O_CLOEXEC = 0x80000;
const FDS = "/proc/thread-self/fd";
const POLL_MS = 5;

// The C's states (syscalls_c_fds.ts).
const SEP_DONE = 3;
export const SEP_BUSY = 2;
const SEP_THREADS = 4;
const SEP_FAILED = 5;
const SEP_LISTING = 6;

/** The syscall monitor's side: its C does the work in the program's next hooked call. */
export interface NextCall {
    /** Arm with /dev/null (open in the shared table), Frida's sockets to cover, Frida's threads. */
    arm(nul: number, covers: number[], frida: number[]): void;
    /** The C's state and its detail (other threads, or an errno). */
    state(): [number, number];
}

export interface Separated {
    separate: boolean;
    reason?: string;
    /** The program's fds closed (0-2: covered with /dev/null) in Frida's table. */
    closed?: number;
}

interface Entry {
    fd: number;
    target: string;
}

class Natives {
    readonly dup3 = new NativeFunction(libc("dup3"), "int", ["int", "int", "int"]);
    readonly close = new NativeFunction(libc("close"), "int", ["int"]);
    readonly open = new NativeFunction(libc("open"), "int", ["pointer", "int"]);
    readonly readlink = new NativeFunction(libc("readlink"), "int64", ["pointer", "pointer", "size_t"]);
    readonly errno = new NativeFunction(libc("__errno_location"), "pointer", []);
    private readonly link = Memory.alloc(4096);

    lastErrno(): number {
        return this.errno().readS32();
    }

    /** The calling thread's fds and what they are. An fd closed between the
     * listing and its readlink (the listing's own, for one) is left out. */
    fds(): Entry[] {
        const out: Entry[] = [];
        for (const fd of (dirEntries(FDS) ?? []).map((n) => parseInt(n, 10))) {
            if (Number.isNaN(fd)) continue;
            const n = this.readlink(Memory.allocUtf8String(`${FDS}/${fd}`), this.link, 4095).toNumber();
            if (n > 0) out.push({ fd, target: this.link.readUtf8String(n) ?? "" });
        }
        return out;
    }
}

function libc(name: string): NativePointer {
    return Module.getGlobalExportByName(name);
}

export class FdTable {
    private nul = -1; // /dev/null, open in Frida's table (and copied into the program's)
    private armed = false;

    /** Arm the separation for the program's next hooked call. Its outcome is
     * sent as an `fds` message; `waiting` false (with the reason) when it
     * cannot be armed. */
    separate(next: NextCall | null): { waiting: boolean; reason?: string } {
        if (this.armed) return { waiting: false, reason: "already armed" };
        if (Process.platform !== "linux") return { waiting: false, reason: `not on ${Process.platform}` };
        if (next === null) return { waiting: false, reason: "the syscall monitor is not armed" };
        for (const name of ["unshare", "dup3", "getdents64"]) {
            if (Module.findGlobalExportByName(name) === null) return { waiting: false, reason: `no ${name} in libc` };
        }
        const threads = processThreads();
        if (threads === null) return { waiting: false, reason: "/proc/self/task cannot be read" };
        if (threads.program.length !== 1) return { waiting: false, reason: `the program has ${threads.program.length} threads` };
        const n = new Natives();
        this.nul = n.open(Memory.allocUtf8String("/dev/null"), O_RDWR | O_CLOEXEC);
        if (this.nul < 0) return { waiting: false, reason: `open /dev/null: errno ${n.lastErrno()}` };
        Cloak.addFileDescriptor(this.nul);
        const covers = n
            .fds()
            .filter((e) => e.fd !== this.nul && Cloak.hasFileDescriptor(e.fd) && e.target.startsWith("socket:"))
            .map((e) => e.fd);
        next.arm(this.nul, covers, threads.frida);
        this.armed = true;
        const poll = setInterval(() => {
            const [state, detail] = next.state();
            const outcome = this.outcome(n, state, detail);
            if (outcome === null) return;
            clearInterval(poll);
            this.drop(n);
            post("fds", { ...outcome });
        }, POLL_MS);
        return { waiting: true };
    }

    /** What a state of the C means; null while it waits or works. */
    private outcome(n: Natives, state: number, detail: number): Separated | null {
        switch (state) {
            case SEP_DONE:
                return this.finish(n);
            case SEP_THREADS:
                return { separate: false, reason: `the program had ${detail + 1} threads at its next hooked call` };
            case SEP_FAILED:
                return { separate: false, reason: `unshare: errno ${detail}` };
            case SEP_LISTING:
                return { separate: false, reason: `/proc/self/task: errno ${detail}` };
            default:
                return null;
        }
    }

    /** On Frida's JS thread, once the program's table is its own: close the
     * program's fds in Frida's table. 0-2 are covered rather than closed: a
     * socket of Frida's opened later must not get the number that Frida's own
     * diagnostics write to. */
    private finish(n: Natives): Separated {
        let closed = 0;
        for (const e of n.fds()) {
            if (e.fd === this.nul || Cloak.hasFileDescriptor(e.fd) || e.target.startsWith("/memfd:frida")) continue;
            if (e.fd <= 2 ? n.dup3(this.nul, e.fd, 0) === e.fd : n.close(e.fd) === 0) closed++;
        }
        return { separate: true, closed };
    }

    private drop(n: Natives): void {
        if (this.nul >= 0) {
            Cloak.removeFileDescriptor(this.nul);
            n.close(this.nul);
        }
        this.nul = -1;
    }
}
