// Live patching: apply PatchSpecs, keep every patch in the in-target ledger,
// revert (and verify the bytes) on request or when the script goes away.
// See docs/patching.md. index.ts exposes `patcher` over RPC.

import { LedgerEntry, PatchSpec, RevertResult } from "./patch_types.js";
import { Ledger } from "./patch_ledger.js";
import { Applied, applyKind, hex, readBytes, sameBytes, unhex, writeVerified } from "./patch_kinds.js";
import { Site, resolvePoint } from "../core/resolver.js";

interface Owned {
    entry: LedgerEntry;
    applied: Applied;
}

/** A function as module!symbol; an address or offset as module+0xOFFSET. */
function describePoint(site: Site, byName: boolean): string {
    if (byName && site.module !== null && site.symbol !== null) return `${site.module}!${site.symbol}`;
    const m = Process.findModuleByAddress(site.address);
    return m !== null ? `${m.name}+0x${site.address.sub(m.base).toString(16)}` : site.address.toString();
}

const sameAsOriginal = (n: number): string => (n === 1 ? "1 byte equals the original" : `${n} bytes equal the original`);

function newKey(): string {
    return `${Process.id}-${Date.now().toString(36)}-${Math.floor(Math.random() * 0x7fffffff).toString(36)}`;
}

export class Patcher {
    private readonly ledger = new Ledger();
    private readonly key = newKey();
    private readonly owned = new Map<number, Owned>();
    private doorbell: NativeCallback<"pointer", ["pointer"]> | null = null;
    private reply: NativePointer = NULL;
    private persisted = false;

    /** Apply every spec, all or nothing: on the first failure the others are undone. */
    apply(specs: PatchSpec[]): LedgerEntry[] {
        const done: Owned[] = [];
        try {
            for (const spec of specs) {
                try {
                    for (const site of this.sites(spec)) done.push(this.applyOne(spec, site));
                } catch (e) {
                    throw new Error(`cannot patch (${spec.source}): ${e instanceof Error ? e.message : String(e)}`);
                }
            }
        } catch (e) {
            for (const o of done.reverse()) {
                try {
                    o.applied.undo();
                } catch {
                    // reported below as part of the original failure
                }
            }
            throw e;
        }
        const entries = this.ledger.update((d) => {
            if (done.some((o) => o.applied.hook)) d.owners[this.key] = this.bell().toString();
            for (const o of done) {
                o.entry.id = d.next_id++;
                this.owned.set(o.entry.id, o);
                d.entries.push(o.entry);
            }
            return done.map((o) => o.entry);
        });
        return entries;
    }

    private sites(spec: PatchSpec): Site[] {
        const r = resolvePoint(spec.point);
        if (r.kind !== "sites") throw new Error(r.reason);
        if ((spec.kind === "bytes" || spec.kind === "nop") && r.sites.length !== 1) {
            throw new Error(`'${spec.kind}' needs exactly one address; the point matches ${r.sites.length} functions`);
        }
        return r.sites;
    }

    private applyOne(spec: PatchSpec, site: Site): Owned {
        for (const o of this.owned.values()) {
            if (o.applied.address.equals(site.address) && !o.applied.hook && (spec.kind === "bytes" || spec.kind === "nop")) {
                throw new Error(`${describePoint(site, false)} already has patch #${o.entry.id}; revert it first`);
            }
        }
        const applied = applyKind(spec, site.address);
        const entry: LedgerEntry = {
            id: 0,
            kind: spec.kind,
            pid: Process.id,
            owner: this.key,
            persist: this.persisted,
            hook: applied.hook,
            where: describePoint(site, spec.point.kind === "function"),
            address: site.address.toString(),
            original: hex(applied.original),
            patched: hex(applied.patched),
            detail: applied.detail,
            source: spec.source,
            at: new Date().toISOString(),
        };
        return { entry, applied };
    }

    list(): LedgerEntry[] {
        return this.ledger.read().entries;
    }

    /** Keep this script's patches after its controller leaves (the host eternalizes the script only for hooks). */
    persist(): LedgerEntry[] {
        this.persisted = true;
        return this.ledger.update((d) => {
            for (const e of d.entries) if (e.owner === this.key) e.persist = true;
            return d.entries.filter((e) => e.owner === this.key);
        });
    }

    /** Revert patches by id ("all": every patch in the ledger, whoever made it). */
    revert(ids: number[] | "all"): RevertResult[] {
        const data = this.ledger.read();
        const wanted = ids === "all" ? data.entries.map((e) => e.id) : ids;
        const results: RevertResult[] = [];
        const remote = new Map<string, number[]>();
        for (const id of wanted) {
            const entry = data.entries.find((e) => e.id === id);
            if (entry === undefined) {
                results.push({ id, where: "", ok: false, verified: null, detail: `no patch #${id} in the ledger` });
            } else if (this.owned.has(id)) {
                results.push(this.revertOwned(id));
            } else if (!entry.hook) {
                results.push(this.revertWrite(entry));
            } else {
                remote.set(entry.owner, [...(remote.get(entry.owner) ?? []), id]);
            }
        }
        for (const [owner, list] of remote) results.push(...this.ring(data.owners[owner], list, data.entries));
        return results.sort((a, b) => a.id - b.id);
    }

    /** Undo everything this script owns (script unload, or the host stopping without --persist). */
    revertOwnedAll(): RevertResult[] {
        return [...this.owned.keys()].reverse().map((id) => this.revertOwned(id));
    }

    get persistent(): boolean {
        return this.persisted;
    }

    private revertOwned(id: number): RevertResult {
        const o = this.owned.get(id) as Owned;
        const where = o.entry.where;
        try {
            o.applied.undo();
        } catch (e) {
            return { id, where, ok: false, verified: false, detail: e instanceof Error ? e.message : String(e) };
        }
        this.owned.delete(id);
        this.forget([id]);
        const shared = [...this.owned.values()].some((x) => x.applied.address.equals(o.applied.address));
        if (shared) {
            return { id, where, ok: true, verified: null, detail: "reverted; another patch remains at this address, bytes not compared" };
        }
        const now = readBytes(o.applied.address, o.applied.original.length);
        const verified = sameBytes(now, o.applied.original);
        const detail = verified
            ? `reverted; ${sameAsOriginal(now.length)}`
            : `reverted, but the code differs from the original: expected ${hex(o.applied.original)}, found ${hex(now)} (another hook on this function?)`;
        return { id, where, ok: true, verified, detail };
    }

    /** A code write made by another script: put the original back if nothing else changed it. */
    private revertWrite(e: LedgerEntry): RevertResult {
        const address = ptr(e.address);
        const original = unhex(e.original);
        const patched = unhex(e.patched);
        const now = readBytes(address, original.length);
        const base = { id: e.id, where: e.where };
        if (!sameBytes(now, patched) && !sameBytes(now, original)) {
            return { ...base, ok: false, verified: false, detail: `the code changed since it was patched: expected ${e.patched}, found ${hex(now)}; left alone` };
        }
        const verified = writeVerified(address, original);
        if (verified) this.forget([e.id]);
        return { ...base, ok: verified, verified, detail: verified ? `reverted; ${sameAsOriginal(original.length)}` : "the original bytes did not read back" };
    }

    /** Ask the script that owns hooks to revert them, through its doorbell. */
    private ring(bell: string | undefined, ids: number[], entries: LedgerEntry[]): RevertResult[] {
        const fail = (detail: string): RevertResult[] =>
            ids.map((id) => ({ id, where: entries.find((e) => e.id === id)?.where ?? "", ok: false, verified: null, detail }));
        if (bell === undefined) return fail("the script that made this patch is gone");
        const address = ptr(bell);
        const r = Process.findRangeByAddress(address);
        if (r === null || !r.protection.includes("x")) return fail("the script that made this patch is gone");
        const call = new NativeFunction(address, "pointer", ["pointer"]);
        const reply = call(Memory.allocUtf8String(JSON.stringify({ op: "revert", ids }))) as NativePointer;
        return JSON.parse(reply.readUtf8String() ?? "[]") as RevertResult[];
    }

    private forget(ids: number[]): void {
        this.ledger.update((d) => {
            d.entries = d.entries.filter((e) => !ids.includes(e.id));
            if (!d.entries.some((e) => e.owner === this.key)) delete d.owners[this.key];
        });
    }

    private bell(): NativePointer {
        if (this.doorbell === null) {
            this.doorbell = new NativeCallback(
                (request: NativePointer): NativePointer => {
                    let out: RevertResult[] = [];
                    try {
                        const req = JSON.parse(request.readUtf8String() ?? "{}") as { op: string; ids: number[] };
                        if (req.op === "revert") out = req.ids.map((id) => (this.owned.has(id) ? this.revertOwned(id) : { id, where: "", ok: false, verified: null, detail: `patch #${id} is not owned here` }));
                    } catch (e) {
                        out = [{ id: 0, where: "", ok: false, verified: null, detail: e instanceof Error ? e.message : String(e) }];
                    }
                    this.reply = Memory.allocUtf8String(JSON.stringify(out)); // kept until the next call
                    return this.reply;
                },
                "pointer",
                ["pointer"],
            );
        }
        return this.doorbell;
    }
}

export const patcher = new Patcher();
