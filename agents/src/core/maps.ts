// The process's mappings as the kernel lists them (/proc/self/maps): unlike
// Process.enumerateRanges, it shows what Frida cloaks (its CModules, its
// trampolines), and the file behind each mapping. Linux and Android only;
// elsewhere `mappingOf` returns null.

export interface Mapping {
    base: NativePointer;
    end: NativePointer;
    perms: string;
    /** "" for anonymous memory. */
    path: string;
    /** "0" for anonymous memory; tells apart two files of the same name (two Frida agents). */
    inode: string;
}

let cache: Mapping[] | null = null;

function read(): Mapping[] {
    const out: Mapping[] = [];
    let text: string;
    try {
        text = File.readAllText("/proc/self/maps");
    } catch {
        return out;
    }
    for (const line of text.split("\n")) {
        const m = /^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ (\S+)\s*(.*)$/.exec(line);
        if (m === null) continue;
        out.push({ base: ptr("0x" + m[1]), end: ptr("0x" + m[2]), perms: m[3], inode: m[4], path: m[5] });
    }
    return out;
}

function find(list: Mapping[], a: NativePointer): Mapping | null {
    for (const m of list) if (a.compare(m.base) >= 0 && a.compare(m.end) < 0) return m;
    return null;
}

/** Every mapping, read now. */
export function mappings(): Mapping[] {
    cache = read();
    return cache;
}

/**
 * The mapping holding `a`, from the list read last (read again when it does
 * not have `a`, or always with `fresh`: a cached entry can be stale, e.g. an
 * rw- region that has since become a CModule's r-x code).
 */
export function mappingOf(a: NativePointer, fresh = false): Mapping | null {
    if (cache !== null && !fresh) {
        const hit = find(cache, a);
        if (hit !== null) return hit;
    }
    cache = read();
    return find(cache, a);
}
