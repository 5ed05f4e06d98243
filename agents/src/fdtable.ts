// The program's own fd table (docs/syscalls.md, "Frida's threads and the fd
// table"). While a second thread shares a process's fd table, the kernel
// takes a reference on the file for every fd syscall (and drops it after);
// with Frida's threads in the process, a write() to /dev/null took 55-75 ns
// more here, for any tool that injects. Giving the program's (single) thread
// a table of its own with unshare(CLONE_FILES) takes that cost away:
//
//  - separate() (attached), separateAtMain() (spawned: runOnThread cannot
//    reach a thread that spawn holds, so a hook on main does it): on the
//    program's thread (Process.runOnThread), check it is
//    the program's only thread, unshare, and in its copy put /dev/null over
//    Frida's sockets (so that Frida's connection still closes when Frida's
//    threads close it). Frida's other fds (eventfds, which Frida's code on the
//    program's threads may signal) stay. Then, in Frida's table, close the
//    program's fds (those the host listed before attaching; 0-2 are covered
//    with /dev/null instead): Frida's threads must not hold the program's
//    pipes and sockets open after the program has closed them.
//  - release(): on the program's thread again, close what separate() left in
//    its table (only fds that are still the same open files).
//
// The callbacks on the program's thread make system calls only and allocate
// nothing from libc (getdents64, not opendir; buffers from Frida's heap): that
// thread may have been stopped holding a lock of libc's (malloc's, for one).

import { post } from "./util.js";

const CLONE_FILES = 0x400;
const O_RDONLY = 0;
const O_RDWR = 2;
const O_DIRECTORY = Process.arch === "arm64" ? 0x4000 : 0x10000;
const O_CLOEXEC = 0x80000;
const KCMP_FILE = 0;
const SYS = {
    x64: { getdents64: 217, kcmp: 312 },
    arm64: { getdents64: 61, kcmp: 272 },
} as Record<string, { getdents64: number; kcmp: number } | undefined>;

export interface Separated {
    separate: boolean;
    reason?: string;
    thread?: number;
    /** Frida's sockets covered with /dev/null in the program's table. */
    covered?: number;
    /** The program's fds closed (0-2: covered with /dev/null) in Frida's table. */
    closed?: number;
}

export interface Released {
    closed: number;
    /** Fds left in the program's table (not provably the same open files). */
    left: number[];
}

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
    readonly getdents64 = new NativeFunction(libc("syscall"), "int64", ["long", "int", "pointer", "uint"]);
    readonly kcmpCall = new NativeFunction(libc("syscall"), "int64", ["long", "int", "int", "int", "long", "long"]);
    readonly errno = new NativeFunction(libc("__errno_location"), "pointer", []);
    // Buffers and strings for the program's thread, allocated beforehand.
    readonly dirents = Memory.alloc(8192);
    readonly link = Memory.alloc(4096);
    private readonly paths = new Map<string, NativePointer>();

    constructor(readonly nr: { getdents64: number; kcmp: number }) {}

    path(s: string): NativePointer {
        let p = this.paths.get(s);
        if (p === undefined) {
            p = Memory.allocUtf8String(s);
            this.paths.set(s, p);
        }
        return p;
    }

    lastErrno(): number {
        return this.errno().readS32();
    }

    /** Entry names of a directory (getdents64: nothing allocated by libc). */
    list(dir: string): string[] | null {
        const fd = this.open(this.path(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) return null;
        const names: string[] = [];
        try {
            for (;;) {
                const got = this.getdents64(this.nr.getdents64, fd, this.dirents, 8192).toNumber();
                if (got <= 0) break;
                // struct linux_dirent64: d_ino (8), d_off (8), d_reclen (2), d_type (1), d_name.
                for (let off = 0; off < got; ) {
                    const e = this.dirents.add(off);
                    const name = e.add(19).readUtf8String() ?? "";
                    if (name !== "." && name !== "..") names.push(name);
                    off += e.add(16).readU16();
                }
            }
        } finally {
            this.close(fd);
        }
        // A listing of fds shows the directory's own.
        return dir.endsWith("/fd") ? names.filter((n) => parseInt(n, 10) !== fd) : names;
    }

    target(dir: string, fd: number): string {
        const n = this.readlink(this.path(`${dir}/${fd}`), this.link, 4095).toNumber();
        return n > 0 ? (this.link.readUtf8String(n) ?? "") : "";
    }

    fds(dir: string): Entry[] {
        return (this.list(dir) ?? [])
            .map((n) => parseInt(n, 10))
            .filter((fd) => !Number.isNaN(fd))
            .map((fd) => ({ fd, target: this.target(dir, fd) }));
    }

    /** 0 when fd `a` of thread `ta` and fd `b` of thread `tb` are one open file. */
    kcmp(ta: number, tb: number, a: number, b: number): number {
        return this.kcmpCall(this.nr.kcmp, ta, tb, KCMP_FILE, a, b).toNumber();
    }
}

/** Resolves on Frida's JS thread (a timer callback runs there). */
function onFridaThread(): Promise<void> {
    return new Promise((resolve) => setTimeout(resolve, 0));
}

function libc(name: string): NativePointer {
    return Module.getGlobalExportByName(name);
}

const FDS = "/proc/thread-self/fd";

export class FdTable {
    private natives: Natives | null = null;
    private thread = 0; // the program's thread whose table is its own
    private nul = -1; // /dev/null, open in Frida's table (and copied into the program's)
    private covered: number[] = [];
    private kept: number[] = [];
    private leftovers: Entry[] = [];

    /** Give the program's only thread an fd table of its own. `program`: the
     * program's fds as the host saw them before Frida came in (only those
     * are closed in Frida's table: Frida has fds it does not cloak). */
    async separate(program: Entry[]): Promise<Separated> {
        const n = this.prepare();
        if (typeof n === "string") return { separate: false, reason: n };
        const threads = (n.list("/proc/self/task") ?? []).map((t) => parseInt(t, 10)).filter((t) => !Cloak.hasThread(t));
        if (threads.length !== 1) return { separate: false, reason: `the program has ${threads.length} threads` };
        const tid = threads[0];
        if (!this.openNul(n)) return { separate: false, reason: `open /dev/null: errno ${n.lastErrno()}` };
        const before = n.fds(FDS);
        let got: Entry[] | string;
        try {
            got = await Process.runOnThread(tid, () => this.inProgram(n, tid));
        } catch (e) {
            got = `could not run on thread ${tid}: ${String(e)}`;
        }
        // The promise settles on the program's thread, and so would the rest of
        // this function: go back to Frida's JS thread first.
        await onFridaThread();
        if (Process.getCurrentThreadId() === tid) throw new Error("still on the program's thread");
        if (typeof got === "string") {
            this.drop();
            return { separate: false, reason: got };
        }
        return this.finish(n, tid, got, before, program);
    }

    /** For a spawned program, whose held thread runOnThread cannot reach: the
     * same, from a hook on `main`, when its first thread enters it. The
     * outcome is sent as an `fds` message. */
    separateAtMain(program: Entry[]): { waiting: boolean; reason?: string } {
        const n = this.prepare();
        if (typeof n === "string") return { waiting: false, reason: n };
        const main = Process.mainModule.findSymbolByName("main");
        if (main === null) return { waiting: false, reason: "no 'main' symbol in the program" };
        if (!this.openNul(n)) return { waiting: false, reason: `open /dev/null: errno ${n.lastErrno()}` };
        let entered = false;
        const listener = Interceptor.attach(main, {
            onEnter: () => {
                if (entered) return;
                entered = true;
                const tid = Process.getCurrentThreadId();
                const got = this.inProgram(n, tid);
                setTimeout(() => {
                    listener.detach();
                    if (typeof got === "string") {
                        this.drop();
                        post("fds", { separate: false, reason: got });
                    } else {
                        post("fds", { ...this.finish(n, tid, got, [], program) });
                    }
                }, 0);
            },
        });
        return { waiting: true };
    }

    /** On Frida's JS thread, once the program's table is its own. */
    private finish(n: Natives, tid: number, copy: Entry[], before: Entry[], program: Entry[]): Separated {
        this.thread = tid;
        // Fds copied into the program's table while Frida's runOnThread
        // machinery held them (gone from Frida's table by now) are closed at
        // release; in Frida's table (this thread's) the program's fds go.
        const now = n.fds(FDS);
        const same = (a: Entry, list: Entry[]) => list.some((b) => b.fd === a.fd && b.target === a.target);
        this.leftovers = copy.filter(
            (e) => e.fd !== this.nul && !Cloak.hasFileDescriptor(e.fd) && !same(e, before) && !same(e, now),
        );
        // 0-2 are covered rather than closed: a socket of Frida's opened later
        // must not get the number that Frida's own diagnostics write to.
        let closed = 0;
        for (const e of now) {
            if (e.fd === this.nul || Cloak.hasFileDescriptor(e.fd) || !same(e, program)) continue;
            if (e.fd <= 2 ? n.dup3(this.nul, e.fd, 0) === e.fd : n.close(e.fd) === 0) closed++;
        }
        return { separate: true, thread: tid, covered: this.covered.length, closed };
    }

    private prepare(): Natives | string {
        if (this.thread !== 0 || this.nul >= 0) return "already separate";
        const nr = SYS[Process.arch];
        if (Process.platform !== "linux" || nr === undefined) return `not on ${Process.platform}/${Process.arch}`;
        return (this.natives ??= new Natives(nr));
    }

    private openNul(n: Natives): boolean {
        this.nul = n.open(n.path("/dev/null"), O_RDWR | O_CLOEXEC);
        if (this.nul < 0) return false;
        Cloak.addFileDescriptor(this.nul);
        return true;
    }

    /** On the program's thread: its table's entries, or why it stays shared. */
    private inProgram(n: Natives, tid: number): Entry[] | string {
        const program = (n.list("/proc/self/task") ?? []).map((t) => parseInt(t, 10)).filter((t) => !Cloak.hasThread(t));
        // Race-free: only the program's threads make the program's threads, and
        // if this is the only one, it is here.
        if (program.length !== 1 || program[0] !== tid) return `the program has ${program.length} threads`;
        if (n.unshare(CLONE_FILES) !== 0) return `unshare: errno ${n.lastErrno()}`;
        // From here on the table is the program's own: whatever happens, the
        // result says so (release() then closes what was recorded).
        let copy: Entry[] = [];
        try {
            copy = n.fds(FDS);
            for (const e of copy) {
                if (e.fd === this.nul || !Cloak.hasFileDescriptor(e.fd)) continue;
                if (e.target.startsWith("socket:")) {
                    if (n.dup3(this.nul, e.fd, O_CLOEXEC) === e.fd) this.covered.push(e.fd);
                } else {
                    this.kept.push(e.fd);
                }
            }
        } catch {
            // Keep what was recorded: the table is separate all the same.
        }
        n.close(this.nul); // the program's copy of it; Frida's stays open (release compares with it)
        return copy;
    }

    /** Close what separate() left in the program's table. */
    async release(): Promise<Released> {
        const n = this.natives;
        if (n === null || this.thread === 0) {
            this.drop(); // separateAtMain's /dev/null, if main was never reached
            return { closed: 0, left: [] };
        }
        const me = Process.getCurrentThreadId();
        const tid = this.thread;
        this.thread = 0;
        let result: Released;
        try {
            result = await Process.runOnThread(tid, () => {
                const left: number[] = [];
                let closed = 0;
                const shut = (fd: number, same: boolean) => {
                    if (same && n.close(fd) === 0) closed++;
                    else left.push(fd);
                };
                // Only fds that are still the open files separate() left: the
                // program may have closed one and opened another under its number.
                for (const fd of this.covered) shut(fd, n.kcmp(tid, me, fd, this.nul) === 0);
                for (const fd of this.kept) shut(fd, n.kcmp(tid, me, fd, fd) === 0);
                for (const e of this.leftovers) shut(e.fd, n.target(FDS, e.fd) === e.target);
                return { closed, left };
            });
        } catch {
            // The thread is gone: its table with it.
            result = { closed: 0, left: [] };
        }
        await onFridaThread(); // drop() closes /dev/null in Frida's table
        this.drop();
        return result;
    }

    private drop(): void {
        const n = this.natives;
        if (n !== null && this.nul >= 0) {
            Cloak.removeFileDescriptor(this.nul);
            n.close(this.nul);
        }
        this.nul = -1;
        this.covered = [];
        this.kept = [];
        this.leftovers = [];
    }
}
