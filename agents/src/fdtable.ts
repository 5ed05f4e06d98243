// The program's own fd table (docs/syscalls.md, "Frida's threads and the fd
// table"). While a second thread shares a process's fd table, the kernel
// takes a reference on the file for every fd syscall (and drops it after);
// with Frida's threads in the process, a write() to /dev/null took 55-75 ns
// more here, for any tool that injects. Giving the program's (single) thread
// a table of its own with unshare(CLONE_FILES) takes that cost away.
//
// For a spawned program, from a hook on main, on its first thread: check it
// is the program's only thread, unshare, and in the new table put /dev/null
// over Frida's sockets (so that Frida's connection still closes when Frida's
// threads close it). Frida's other fds (eventfds, which Frida's code on the
// program's threads may signal) stay. Then, on Frida's JS thread, close the
// program's fds in Frida's table (those the host listed before Frida came
// in; 0-2 are covered with /dev/null instead): Frida's threads must not hold
// the program's pipes and sockets open after the program has closed them.
//
// Not for a program instr attaches to: Process.runOnThread, the only way onto
// its thread at a moment of instr's choosing, hijacks it wherever it is, and
// in 1 of 20 runs a write() the hijack interrupted ran twice and the target
// later died of SIGSEGV (measured).
//
// The program's thread runs this at main's entry, a function boundary, so it
// may call libc freely (a hijacked thread may be inside malloc; this one is not).

import { dirEntries, post, processThreads } from "./util.js";

const CLONE_FILES = 0x400;
const O_RDWR = 2;
const O_CLOEXEC = 0x80000;
const FDS = "/proc/thread-self/fd";

export interface Separated {
    separate: boolean;
    reason?: string;
    /** The program's fds closed (0-2: covered with /dev/null) in Frida's table. */
    closed?: number;
}

/** Runs fn with the calling thread's calls hidden from instr's monitors. */
export type Quietly = <T>(fn: () => T) => T;

export interface Entry {
    fd: number;
    target: string;
}

class Natives {
    readonly unshare = new NativeFunction(libc("unshare"), "int", ["int"]);
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
    private natives: Natives | null = null;
    private nul = -1; // /dev/null, open in Frida's table (and copied into the program's)
    private armed = false;

    /** For a spawned program: separate the tables from a hook on `main`, on
     * the program's first thread when it enters it. The outcome is sent as
     * an `fds` message. `program`: the program's fds as the host saw them
     * before Frida came in (only those are closed in Frida's table: Frida has
     * fds it does not cloak). `quietly`: how to keep the calls it makes on
     * the program's thread out of the syscall monitor's counts. */
    separateAtMain(program: Entry[], quietly: Quietly = (fn) => fn()): { waiting: boolean; reason?: string } {
        if (this.armed) return { waiting: false, reason: "already armed" };
        if (Process.platform !== "linux") return { waiting: false, reason: `not on ${Process.platform}` };
        const n = (this.natives ??= new Natives());
        const main = Process.mainModule.findSymbolByName("main");
        if (main === null) return { waiting: false, reason: "no 'main' symbol in the program" };
        this.nul = n.open(Memory.allocUtf8String("/dev/null"), O_RDWR | O_CLOEXEC);
        if (this.nul < 0) return { waiting: false, reason: `open /dev/null: errno ${n.lastErrno()}` };
        Cloak.addFileDescriptor(this.nul);
        this.armed = true;
        let entered = false;
        const listener = Interceptor.attach(main, {
            onEnter: () => {
                if (entered) return;
                entered = true;
                // Its libc calls are instr's: a syscall monitor must not count them.
                const got = quietly(() => this.inProgram(n, Process.getCurrentThreadId()));
                // The rest on Frida's JS thread, in Frida's table.
                setTimeout(() => {
                    listener.detach();
                    post("fds", typeof got === "string" ? { separate: false, reason: got } : { ...this.finish(n, program) });
                    this.drop();
                }, 0);
            },
        });
        return { waiting: true };
    }

    /** On Frida's JS thread, once the program's table is its own: close the
     * program's fds in Frida's table. */
    private finish(n: Natives, program: Entry[]): Separated {
        const same = (a: Entry) => program.some((b) => b.fd === a.fd && b.target === a.target);
        // 0-2 are covered rather than closed: a socket of Frida's opened later
        // must not get the number that Frida's own diagnostics write to.
        let closed = 0;
        for (const e of n.fds()) {
            if (e.fd === this.nul || Cloak.hasFileDescriptor(e.fd) || !same(e)) continue;
            if (e.fd <= 2 ? n.dup3(this.nul, e.fd, 0) === e.fd : n.close(e.fd) === 0) closed++;
        }
        return { separate: true, closed };
    }

    /** On the program's thread: unshare, cover Frida's sockets; or why not. */
    private inProgram(n: Natives, tid: number): true | string {
        const program = processThreads()?.program ?? [];
        // Race-free: only the program's threads make the program's threads, and
        // if this is the only one, it is here.
        if (program.length !== 1 || program[0] !== tid) return `the program has ${program.length} threads at main`;
        if (n.unshare(CLONE_FILES) !== 0) return `unshare: errno ${n.lastErrno()}`;
        try {
            for (const e of n.fds()) {
                if (e.fd !== this.nul && Cloak.hasFileDescriptor(e.fd) && e.target.startsWith("socket:"))
                    n.dup3(this.nul, e.fd, O_CLOEXEC);
            }
        } catch {
            // The table is separate all the same.
        }
        n.close(this.nul); // the program's copy of it
        return true;
    }

    private drop(): void {
        if (this.natives !== null && this.nul >= 0) {
            Cloak.removeFileDescriptor(this.nul);
            this.natives.close(this.nul);
        }
        this.nul = -1;
    }
}
