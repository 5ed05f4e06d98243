// What `instr profile` asks of the agent (index.ts exposes it over RPC):
// start and stop the sampler, the modules loaded, and each module's unwind
// tables as they are in memory (so the host unwinds for a remote device too).
//
// Messages: {type: "profile", seq, count, drops, samples, final} with `count`
// raw samples as data (layout: profile_c.ts SLOT). At the process's exit
// (Frida's dispose("exit"), while the script is being torn down: no RPC
// reaches it any more) the sampler stops and its last batch is `final`.

import { OffCpuSampler } from "./offcpu.js";
import { Sampler, SamplerOptions, SamplerStarted, SamplerStats } from "./profile.js";

const PT_LOAD = 1;
const PT_NOTE = 4;
const NT_GNU_BUILD_ID = 3;
const PT_GNU_EH_FRAME = 0x6474e550;

export interface ModuleInfo {
    name: string;
    path: string;
    base: string;
    size: number;
    /** GNU build ID of the image in memory (hex), so the host can tell its file is the one mapped */
    build_id: string | null;
}

export class Profiler {
    private sampler: Sampler | null = null;
    private off: OffCpuSampler | null = null;
    private seq = 0;

    start(options: SamplerOptions): SamplerStarted {
        if (this.sampler !== null) throw new Error("the profiler is already running");
        const sampler = new Sampler((count, data) => this.send(count, data, false));
        this.sampler = sampler;
        const started = sampler.start(options);
        if (options.off_cpu === true) {
            this.off = new OffCpuSampler(options.hz, options.stack_bytes, () => sampler.programThreads(), (count, data) => this.send(count, data, false, true));
            this.off.start();
        }
        return started;
    }

    /** Stop sampling and send what is left; the counts. */
    stop(): (SamplerStats & { off_cpu_samples: number; off_cpu_moved: number }) | null {
        this.off?.stop();
        const stats = this.sampler?.stop() ?? null;
        return stats === null ? null : { ...stats, off_cpu_samples: this.off?.samples ?? 0, off_cpu_moved: this.off?.moved ?? 0 };
    }

    /** The process is exiting: the last samples go out. */
    atExit(): void {
        const s = this.sampler;
        if (s === null || !s.active) return;
        this.off?.stop();
        const stats = s.stop();
        send({ type: "profile", seq: ++this.seq, count: 0, drops: stats.drops, samples: stats.samples, final: true });
    }

    private send(count: number, data: ArrayBuffer, final: boolean, off = false): void {
        const stats = this.sampler?.stats();
        send({ type: "profile", seq: ++this.seq, count, drops: stats?.drops ?? 0, samples: stats?.samples ?? 0, final, off }, data);
    }
}

export function modules(): ModuleInfo[] {
    return Process.enumerateModules().map((m) => ({
        name: m.name,
        path: m.path,
        base: m.base.toString(),
        size: m.size,
        build_id: buildId(m.base),
    }));
}

/** The GNU build ID note of the ELF image at BASE, or null (none, or not ELF). */
function buildId(base: NativePointer): string | null {
    try {
        if (base.readU32() !== 0x464c457f || base.add(4).readU8() !== 2) return null;
        const phoff = base.add(0x20).readU64().toNumber();
        const phentsize = base.add(0x36).readU16();
        const phnum = base.add(0x38).readU16();
        let lowest: UInt64 | null = null;
        const notes: [UInt64, number][] = [];
        for (let i = 0; i < phnum; i++) {
            const ph = base.add(phoff + i * phentsize);
            const type = ph.readU32();
            const vaddr = ph.add(16).readU64();
            if (type === PT_LOAD && (lowest === null || vaddr.compare(lowest) < 0)) lowest = vaddr;
            else if (type === PT_NOTE) notes.push([vaddr, ph.add(32).readU64().toNumber()]);
        }
        if (lowest === null) return null;
        const bias = base.sub(ptr(lowest.toString()).and(ptr(Process.pageSize - 1).not()));
        for (const [vaddr, size] of notes) {
            const at = bias.add(ptr(vaddr.toString()));
            let pos = 0;
            while (pos + 12 <= size) {
                const namesz = at.add(pos).readU32();
                const descsz = at.add(pos + 4).readU32();
                const kind = at.add(pos + 8).readU32();
                const desc = pos + 12 + ((namesz + 3) & ~3);
                if (kind === NT_GNU_BUILD_ID && namesz === 4 && at.add(pos + 12).readUtf8String(3) === "GNU") {
                    const bytes = new Uint8Array(at.add(desc).readByteArray(descsz) as ArrayBuffer);
                    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
                }
                pos = desc + ((descsz + 3) & ~3);
            }
        }
    } catch {
        return null; // an image whose headers are not mapped readable
    }
    return null;
}

/**
 * The unwind tables of the module at ADDRESS, read from memory: a 32-byte
 * header (u64 load bias, u64 address of the segment copied, u64 address of
 * .eh_frame_hdr, u64 0), then the whole loaded segment that holds
 * .eh_frame_hdr (.eh_frame follows it there). null when the module has none.
 */
export function unwindInfo(address: string): ArrayBuffer | null {
    const m = Process.findModuleByAddress(ptr(address));
    if (m === null) return null;
    const base = m.base;
    if (base.readU32() !== 0x464c457f) return null; // not an ELF image
    const phoff = base.add(0x20).readU64().toNumber();
    const phentsize = base.add(0x36).readU16();
    const phnum = base.add(0x38).readU16();
    const loads: [UInt64, UInt64][] = [];
    let hdr: UInt64 | null = null;
    for (let i = 0; i < phnum; i++) {
        const ph = base.add(phoff + i * phentsize);
        const type = ph.readU32();
        const vaddr = ph.add(16).readU64();
        const memsz = ph.add(40).readU64();
        if (type === PT_LOAD) loads.push([vaddr, memsz]);
        else if (type === PT_GNU_EH_FRAME) hdr = vaddr;
    }
    if (hdr === null || loads.length === 0) return null;
    const lowest = loads.reduce((a, b) => (a[0].compare(b[0]) <= 0 ? a : b))[0];
    const bias = base.sub(ptr(lowest.toString()).and(ptr(Process.pageSize - 1).not()));
    const seg = loads.find(([v, sz]) => v.compare(hdr as UInt64) <= 0 && v.add(sz).compare(hdr as UInt64) > 0);
    if (seg === undefined) return null;
    const start = bias.add(ptr(seg[0].toString()));
    const size = seg[1].toNumber();
    const body = start.readByteArray(size) as ArrayBuffer;
    const out = new Uint8Array(32 + size);
    const head = new DataView(out.buffer);
    head.setBigUint64(0, BigInt(bias.toString()), true);
    head.setBigUint64(8, BigInt(start.toString()), true);
    head.setBigUint64(16, BigInt(bias.add(ptr(hdr.toString())).toString()), true);
    out.set(new Uint8Array(body), 32);
    return out.buffer;
}
