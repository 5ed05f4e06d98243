// A mark in the process, visible to other instr hosts in /proc/PID/maps,
// that this agent has hooks armed: "/memfd:instr-armed-by-HOSTPID (deleted)".
// Two agents hooking the same functions can crash the program when they
// leave in the other order (each restores the bytes it saw, which may be the
// other's jump), so a second instr is refused while the mark is there
// (instr/lifecycle.py). The mark goes at the dispose, when the hooks are
// reverted: an agent that only stays for a blocked thread does not block the
// next instr. Not inherited by a forked child (MADV_DONTFORK).

const PAGE = 4096;
const MFD_CLOEXEC = 1;
const PROT_READ = 1;
const MAP_SHARED = 1;
const MADV_DONTFORK = 10;

let hostPid = 0;
let mark: NativePointer | null = null;

/** The host's pid, named in the mark (from hello). */
export function setHost(pid: number | undefined): void {
    if (typeof pid === "number" && pid > 0) hostPid = pid;
}

export function markArmed(): void {
    if (mark !== null || Process.platform !== "linux") return;
    const find = (name: string): NativePointer | null => Module.findGlobalExportByName(name);
    const memfdCreate = find("memfd_create");
    const ftruncate = find("ftruncate");
    const mmap = find("mmap");
    const close = find("close");
    const madvise = find("madvise");
    if (memfdCreate === null || ftruncate === null || mmap === null || close === null) return;
    try {
        const fd = new NativeFunction(memfdCreate, "int", ["pointer", "uint"])(Memory.allocUtf8String(`instr-armed-by-${hostPid}`), MFD_CLOEXEC);
        if (fd < 0) return;
        try {
            if (new NativeFunction(ftruncate, "int", ["int", "int64"])(fd, PAGE) !== 0) return;
            const p = new NativeFunction(mmap, "pointer", ["pointer", "size_t", "int", "int", "int", "int64"])(NULL, PAGE, PROT_READ, MAP_SHARED, fd, 0);
            if (p.equals(ptr("-1"))) return;
            if (madvise !== null) new NativeFunction(madvise, "int", ["pointer", "size_t", "int"])(p, PAGE, MADV_DONTFORK);
            mark = p;
        } finally {
            new NativeFunction(close, "int", ["int"])(fd);
        }
    } catch {
        // No mark: a second instr is then not refused (it was not before).
    }
}

export function unmarkArmed(): void {
    const munmap = Module.findGlobalExportByName("munmap");
    if (mark === null || munmap === null) return;
    new NativeFunction(munmap, "int", ["pointer", "size_t"])(mark, PAGE);
    mark = null;
}
