// Which threads are the tool's (Frida's and instr's agent's), so that an
// instrument measures the program and not itself: the memory tracker
// (mem_c.ts: tool_thread) and the syscall monitor (syscalls_c.ts:
// started_by_agent) both tell them apart this way:
//
// - the threads Frida cloaks when the tracker arms are listed by id;
// - a thread started later is Frida's when its start routine (kept by glibc
//   in its struct pthread) lies in Frida's code: the agent's own mapping, or
//   an anonymous executable mapping (Frida's loader, CModules);
// - the offsets of the start routine and of the thread id in struct pthread
//   are found on this (JS) thread, which is Frida's.
//
// Everything here runs once, at arm time, on the JS thread.

import { mappings } from "./maps.js";
import { processThreads } from "./util.js";

export const MAX_TOOL_TIDS = 64;
export const MAX_TOOL_RANGES = 64;

export interface ToolThreads {
    /** Frida's threads when the tracker armed (at most MAX_TOOL_TIDS). */
    tids: number[];
    /** Frida's code: [0] the agent's mapping, then anonymous executable mappings. */
    ranges: [NativePointer, NativePointer][];
    /** Offset of the start routine in glibc's struct pthread; 0: unknown. */
    startOffset: number;
    /** Offset of the thread id in glibc's struct pthread; 0: unknown. */
    tidOffset: number;
}

/** Frida's code from /proc/self/maps: every mapping of the file holding INSIDE (merged,
 * first), then every anonymous executable mapping. */
export function fridaRanges(inside: NativePointer): [NativePointer, NativePointer][] {
    const rows = mappings().map((m) => ({ lo: m.base, hi: m.end, x: m.perms.includes("x"), inode: m.inode, path: m.path }));
    if (rows.length === 0) return [[inside, inside.add(1)]];
    const home = rows.find((r) => inside.compare(r.lo) >= 0 && inside.compare(r.hi) < 0);
    let lo = inside;
    let hi = inside.add(1);
    if (home !== undefined && home.inode !== "0") {
        for (const r of rows) {
            if (r.inode !== home.inode || r.path !== home.path) continue;
            if (r.lo.compare(lo) < 0) lo = r.lo;
            if (r.hi.compare(hi) > 0) hi = r.hi;
        }
    } else if (home !== undefined) {
        [lo, hi] = [home.lo, home.hi];
    }
    const out: [NativePointer, NativePointer][] = [[lo, hi]];
    for (const r of rows) {
        if (out.length >= MAX_TOOL_RANGES) break;
        if (r.x && r.inode === "0" && r.path === "" && !(r.lo.compare(lo) >= 0 && r.hi.compare(hi) <= 0)) out.push([r.lo, r.hi]);
    }
    return out;
}

function pthreadSelf(): NativePointer {
    return new NativeFunction(Module.getGlobalExportByName("pthread_self"), "pointer", [])();
}

/** Where glibc keeps a thread's start routine in its struct pthread: this (JS) thread is
 * Frida's, started by glib's thread proxy inside the agent, so the first word of its struct
 * pthread that points into the agent's code [LO, HI) is it. 0: not found (then only the
 * threads seen at arming are told apart). */
export function startRoutineOffset([lo, hi]: [NativePointer, NativePointer], self: NativePointer = pthreadSelf()): number {
    for (let off = 0x100; off < 0x1000; off += 8) {
        let v: NativePointer;
        try {
            v = self.add(off).readPointer();
        } catch {
            return 0;
        }
        if (v.compare(lo) >= 0 && v.compare(hi) < 0) {
            const r = Process.findRangeByAddress(v);
            if (r === null || r.protection.includes("x")) return off;
        }
    }
    return 0;
}

/** Where glibc keeps the thread id in its struct pthread (past the TCB header). 0: not
 * found. The C checks it against gettid() on every thread it first sees. */
function tidOffset(self: NativePointer): number {
    const tid = Process.getCurrentThreadId();
    for (let off = 0x10; off < 0x1000; off += 4) {
        try {
            if (self.add(off).readS32() === tid) return off;
        } catch {
            return 0;
        }
    }
    return 0;
}

/** Frida's threads now (the ones it cloaks), this (JS) thread first; at most MAX. */
export function toolTids(max: number): number[] {
    const me = Process.getCurrentThreadId();
    const frida = processThreads()?.frida ?? [];
    return [me, ...frida.filter((t) => t !== me)].slice(0, max);
}

/** The tool's threads and code as the C needs them; INSIDE: an address in Frida's agent. */
export function toolThreads(inside: NativePointer): ToolThreads {
    const ranges = fridaRanges(inside);
    const self = pthreadSelf();
    return { tids: toolTids(MAX_TOOL_TIDS), ranges, startOffset: startRoutineOffset(ranges[0], self), tidOffset: tidOffset(self) };
}
