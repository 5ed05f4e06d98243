// Arming probes: validate, pick a tier, resolve points to sites, attach, and
// keep pending points (and module globs) armed as libraries load.

import { Capture, ProbePlan, ProbeStatus, SiteInfo } from "../protocol.js";
import { Flusher } from "../core/buffer.js";
import { Aggregator } from "../aggregate/agg.js";
import { JsProbe } from "./jstier.js";
import { Layout, Tier, chooseTier, layoutOf, validate } from "../core/layout.js";
import { Site, leftOutByWhy, mayMatchModule, mayOverlap, moduleOffset, resolvePoint } from "../core/resolver.js";
import { describe, post, reportError } from "../core/util.js";
import { LoadGate } from "../core/loadgate.js";
import { PhaseSlots, SLOT_BACKTRACE, SLOT_INT, SLOT_VAR } from "../core/symbols.js";
import { keepsFramePointers } from "../core/frames.js";
import * as hooks from "../core/hooks.js";

interface ArmedSite {
    site: number;
    address: NativePointer;
    listeners: InvocationListener[];
}

class Probe {
    readonly layout: Layout;
    status: ProbeStatus;
    js: JsProbe | null = null;
    readonly sites = new Map<string, ArmedSite>();
    nextSite = 0;
    /** Sites hooked by a replaceFast entry stub, not a listener (ctier/fast_c.ts). */
    replaced = 0;
    /** Matching functions left out: instr's hooks call them (core/resolver.ts). */
    readonly leftOut = new Map<string, string>(); // name -> why (core/resolver.ts)
    /** What resolving said besides the sites: a module named through a symlink, an interposed function. */
    readonly notes = new Set<string>();

    constructor(
        readonly plan: ProbePlan,
        readonly slot: number,
    ) {
        this.layout = layoutOf(plan);
        this.status = { id: plan.id, state: "failed", tier: null, sites: 0, reason: null };
    }

    get tier(): Tier | "fast" | null {
        return this.status.tier;
    }
}

/** How long the JS thread checks that a new library's hooks were written. */
const COMMIT_CHECKS = 500;

/** A site about to be hooked and its first bytes: written hooks change them. */
interface Pending {
    address: NativePointer;
    before: Uint8Array;
}

const HOOK_BYTES = 5;

function firstBytes(address: NativePointer): Uint8Array {
    return new Uint8Array(address.readByteArray(HOOK_BYTES) as ArrayBuffer);
}

/** A hook's jump is not written yet: the site still has its bytes from before. */
function unchanged(p: Pending): boolean {
    try {
        const now = firstBytes(p.address);
        return now.every((b, i) => b === p.before[i]);
    } catch {
        return false; // unmapped meanwhile: nothing to wait for
    }
}

/**
 * Libraries whose functions instr hooks itself (exit, abort, exec*, dlopen,
 * the syscall wrappers), after the probes: a replaceFast there would make
 * those hooks fail. Probes there keep listeners.
 */
const SYSTEM_LIBS = /^(libc\.so|libc\.musl|ld-linux|ld-musl|libdl\.so|libpthread\.so)/;

export class ProbeSet {
    private readonly probes: Probe[] = [];
    private observer: ModuleObserver | null = null;
    private observing = false;
    /** Bases of the modules already seen (by the observer or a loader hook). */
    private readonly known = new Set<string>();
    private readonly queued: Module[] = [];
    /** Loaders wait in native code until the modules they loaded are armed (loadgate.ts). */
    private readonly gate = new LoadGate(Process.getCurrentThreadId());
    private drainScheduled = false;

    constructor(
        private readonly flusher: Flusher,
        private readonly aggs: Aggregator | null,
        /** Children followed: listeners only, no replaceFast entry stubs (PlanOptions.follow). */
        private readonly noReplace = false,
    ) {}

    /** Probes whose functions no other probe can hook: they may be replaced (replaceFast excludes listeners). */
    private readonly alone = new Set<number>();

    /** Arm every probe of the plan; never throws for one probe's failure. */
    armAll(plans: ProbePlan[]): ProbeStatus[] {
        const ready: [Probe, Site[]][] = [];
        for (const p of plans) {
            if (plans.every((q) => q === p || !mayOverlap(p.point, q.point))) this.alone.add(p.id);
        }
        plans.forEach((plan, slot) => {
            const probe = new Probe(plan, slot);
            this.probes.push(probe);
            try {
                const sites = this.prepare(probe);
                if (sites !== null) ready.push([probe, sites]);
            } catch (e) {
                probe.status = { ...probe.status, state: "failed", reason: describe(e) };
            }
        });
        // Then the hooks alone, with the program's running threads stopped
        // outside the functions' first bytes while Gum writes them (core/hooks.ts).
        const addresses = ready.flatMap(([, sites]) => sites.map((s) => s.address));
        hooks.armStopped(addresses, () => {
            for (const [probe, sites] of ready) {
                try {
                    this.armSites(probe, sites);
                } catch (e) {
                    probe.status = { ...probe.status, state: "failed", reason: describe(e) };
                }
            }
        });
        this.observeModules();
        return this.probes.map((p) => ({ ...p.status }));
    }

    private fail(probe: Probe, reason: string): void {
        probe.status = { ...probe.status, state: "failed", tier: probe.sites.size > 0 ? probe.status.tier : null, reason };
    }

    /** Everything of arming a probe but its hooks: the sites to hook, or null (failed, pending). */
    private prepare(probe: Probe): Site[] | null {
        const plan = probe.plan;
        const invalid = validate(plan);
        if (invalid !== null) {
            this.fail(probe, invalid);
            return null;
        }
        const r = resolvePoint(plan.point);
        // Backtraces are walked by frame pointers (in either tier) where every
        // site's module keeps them, else by Frida's unwinder in JS.
        const backtraces = [...(plan.entry ?? []), ...(plan.exit ?? [])].some((c) => c.src === "backtrace");
        const fp = backtraces && r.kind === "sites" && r.sites.length > 0 && r.sites.every((s) => keepsFramePointers(s.address));
        const choice = plan.emit === false ? { tier: plan.agg_tier } : chooseTier(plan, fp);
        if ("error" in choice) {
            this.fail(probe, choice.error);
            return null;
        }
        probe.status.tier = choice.tier;
        if (plan.emit === false) {
            // Aggregations only: no events, so no event tier.
        } else if (choice.tier === "js") {
            probe.js = new JsProbe(plan, probe.layout, this.flusher, fp);
        } else {
            this.flusher.registerNative(plan.id, probe.slot);
            const slots = (caps: Capture[] | null): PhaseSlots => ({
                kinds: (caps ?? []).map((c) =>
                    c.src === "backtrace" ? SLOT_BACKTRACE : c.src === "arg" && (c.type === "cstr" || c.type === "bytes") ? SLOT_VAR : SLOT_INT,
                ),
                callers: (caps ?? []).flatMap((c, i) => (c.src === "caller" ? [i] : [])),
            });
            this.flusher.symbols.watchNative(plan.id, { entry: slots(plan.entry), exit: slots(plan.exit) });
        }
        if (r.kind === "failed") {
            this.fail(probe, r.reason);
            return null;
        }
        if (r.kind === "pending") {
            probe.status = { ...probe.status, state: "pending", reason: r.reason };
            return null;
        }
        for (const l of r.leftOut ?? []) probe.leftOut.set(l.name, l.why);
        for (const n of r.notes ?? []) probe.notes.add(n);
        return r.sites;
    }

    /** Attach to new sites; sends `sites` for what was armed. Returns how many. */
    private armSites(probe: Probe, sites: Site[]): number {
        const max = probe.plan.max_sites > 0 ? probe.plan.max_sites : Number.MAX_SAFE_INTEGER;
        const fresh = sites.filter((s) => !probe.sites.has(s.address.toString()));
        const room = Math.max(0, max - probe.sites.size);
        const take = fresh.slice(0, room);
        const armed: SiteInfo[] = [];
        const errors: string[] = [];
        for (const s of take) {
            const site = probe.nextSite;
            try {
                const listeners = this.attach(probe, s.address, site, s.module);
                probe.nextSite++;
                probe.sites.set(s.address.toString(), { site, address: s.address, listeners });
                armed.push({ site, address: s.address.toString(), module: s.module, symbol: s.symbol, offset: moduleOffset(s.address) });
            } catch (e) {
                errors.push(`${s.symbol ?? s.address.toString()}: ${describe(e)}`);
            }
        }
        if (armed.length > 0) post("sites", { probe: probe.plan.id, sites: armed });
        const notes: string[] = [...probe.notes];
        if (fresh.length > take.length) {
            notes.push(`${fresh.length - take.length} more matching functions not armed (max_sites ${max})`);
        }
        if (this.aggs !== null && this.aggs.listened.has(probe.plan.id)) {
            notes.push("aggregated through listeners (C callbacks): replaceFast's jump cannot go over a function's first instructions (no room, or code jumps into them)");
        }
        if (probe.replaced > 0) {
            notes.push(`no listener at ${probe.replaced} of ${probe.sites.size} site(s): replaceFast entry stubs`);
        }
        const leftOut = [...probe.leftOut].map(([name, why]) => ({ name, why }));
        for (const [why, names] of leftOutByWhy(leftOut)) notes.push(`left out ${names.join(", ")}: ${why}`);
        if (errors.length > 0) {
            const shown = errors.slice(0, 3).join("; ");
            notes.push(`unable to intercept ${errors.length} function(s): ${shown}${errors.length > 3 ? "; …" : ""}`);
        }
        const n = probe.sites.size;
        probe.status = {
            ...probe.status,
            state: n > 0 ? "armed" : probe.status.state === "pending" && errors.length === 0 ? "pending" : "failed",
            sites: n,
            reason: notes.length > 0 ? notes.join("; ") : n > 0 ? null : probe.status.reason,
        };
        return armed.length;
    }

    private attach(probe: Probe, address: NativePointer, site: number, module: string | null): InvocationListener[] {
        const out = probe.plan.emit === false ? [] : this.attachEvents(probe, address, site, module);
        if (probe.plan.aggs.length > 0 && this.aggs !== null) {
            try {
                out.push(...this.aggs.attach(probe.plan, address, site));
            } catch (e) {
                for (const l of out) l.detach();
                throw e;
            }
        }
        return out;
    }

    private attachEvents(probe: Probe, address: NativePointer, site: number, module: string | null): InvocationListener[] {
        const ring = this.flusher.ring;
        if (probe.tier === "native") {
            const desc = ring.descriptor(probe.plan, probe.layout, probe.slot, site);
            // Entry-only, and the only hook on its function: no listener (fast_c.ts).
            if (!this.noReplace && !probe.layout.hookExit && probe.plan.aggs.length === 0 && this.alone.has(probe.plan.id) && !SYSTEM_LIBS.test(module ?? "libc.so")) {
                const replaced = ring.replaceFast(address, desc);
                if (replaced !== null) {
                    probe.replaced++;
                    return [replaced];
                }
            }
            return [ring.attach(address, probe.layout, desc)];
        }
        const js = probe.js as JsProbe;
        const out: InvocationListener[] = [];
        try {
            // The native pre-listener runs first (listeners run in attach order).
            if (js.stage !== null) {
                out.push(ring.attachStage(address, probe.layout, ring.stageDescriptor(probe.plan, probe.layout, site, js.stage.lists)));
            }
            out.push(hooks.attach(address, js.callbacks(site)));
        } catch (e) {
            for (const l of out) l.detach();
            throw e;
        }
        return out;
    }

    private observeModules(): void {
        if (this.observer !== null) return;
        this.observing = false;
        this.observer = Process.attachModuleObserver({
            onAdded: (m) => {
                if (this.observing) this.queue(m);
            },
            onRemoved: (m) => {
                this.known.delete(m.base.toString());
                if (this.observing) this.moduleRemoved(m);
            },
        });
        // attachModuleObserver reports every loaded module synchronously
        // first; only what loads from now on is news.
        this.observing = true;
        for (const m of Process.enumerateModules()) this.known.add(m.base.toString());
        this.hookLoaders();
    }

    /**
     * Every new module is armed on the JS thread; dlopen's return waits for it
     * (see loadgate.ts for why the wait is native).
     */
    private hookLoaders(): void {
        for (const e of this.gate.install()) reportError(null, new Error(e));
    }

    /** From the module observer, in the loading thread: arm it on the JS thread. */
    private queue(m: Module): void {
        this.queued.push(m);
        this.gate.hold();
        if (this.drainScheduled) return;
        this.drainScheduled = true;
        setTimeout(() => {
            this.drainScheduled = false;
            const sites: Pending[] = [];
            let n = 0;
            while (this.queued.length > 0) {
                const q = this.queued.shift() as Module;
                n++;
                if (this.observing) sites.push(...this.noteModule(q));
            }
            this.confirm(sites, n, 0);
        }, 0);
    }

    /**
     * Release the loaders once the hooks are written: in a later JS turn (a
     * turn's hooks are committed when it ends and no other thread is inside
     * a JS callback), checking the bytes; bounded.
     */
    private confirm(sites: Pending[], n: number, tries: number): void {
        setTimeout(
            () => {
                hooks.commit(); // has Gum write what is pending, and keeps its bytes
                const left = sites.filter((p) => unchanged(p));
                if (left.length === 0 || tries >= COMMIT_CHECKS || !this.observing) {
                    this.gate.release(n);
                    return;
                }
                this.confirm(left, n, tries + 1);
            },
            tries === 0 ? 0 : 1,
        );
    }

    /** A module, from the queue or a loader's return: handled once. */
    private noteModule(m: Module): Pending[] {
        const key = m.base.toString();
        if (this.known.has(key)) return [];
        this.known.add(key);
        return this.moduleAdded(m);
    }

    /** Arm what matches in a new module; returns the sites hooked, with their bytes before. */
    private moduleAdded(m: Module): Pending[] {
        const hooked: Pending[] = [];
        try {
            post("modules", { loaded: [{ name: m.name, base: m.base.toString(), size: m.size, path: m.path }] });
        } catch (e) {
            reportError(null, e);
        }
        for (const probe of this.probes) {
            if (probe.status.tier === null) continue; // failed validation
            if (probe.status.state === "failed" && probe.sites.size === 0) continue;
            if (!mayMatchModule(probe.plan.point, m)) continue;
            try {
                const r = resolvePoint(probe.plan.point, m);
                if (r.kind === "failed" && probe.status.state === "pending") {
                    this.fail(probe, `${r.reason} (in ${m.name})`);
                    post("status", { probe: { ...probe.status } });
                }
                if (r.kind !== "sites") continue;
                const was = JSON.stringify(probe.status);
                const fresh = r.sites.filter((site) => !probe.sites.has(site.address.toString()));
                const before = fresh.map((site) => ({ address: site.address, before: firstBytes(site.address) }));
                for (const l of r.leftOut ?? []) probe.leftOut.set(l.name, l.why);
                for (const n of r.notes ?? []) probe.notes.add(n);
                this.armSites(probe, r.sites);
                for (const p of before) {
                    if (probe.sites.has(p.address.toString()) && !hooked.some((h) => h.address.equals(p.address))) hooked.push(p);
                }
                if (JSON.stringify(probe.status) !== was) post("status", { probe: { ...probe.status } });
            } catch (e) {
                reportError(probe.plan.id, e);
            }
        }
        return hooked;
    }

    private moduleRemoved(m: Module): void {
        const end = m.base.add(m.size);
        for (const probe of this.probes) {
            for (const [key, s] of probe.sites) {
                if (s.address.compare(m.base) >= 0 && s.address.compare(end) < 0) {
                    for (const l of s.listeners) {
                        try {
                            l.detach();
                        } catch {
                            // The code is gone already.
                        }
                    }
                    probe.sites.delete(key);
                }
            }
        }
    }

    statuses(): ProbeStatus[] {
        return this.probes.map((p) => ({ ...p.status }));
    }

    /** Stop arming on module loads (listeners are reverted by Interceptor.detachAll). */
    dispose(): void {
        // Every site's hooks, replacements included (the fast tier's
        // replaceFast: Interceptor.detachAll leaves those), before the leave
        // scans threads; else Frida reverts and frees them at teardown with
        // threads inside (trace --agg on malloc, kill -9: 10 of 60 crashed).
        for (const probe of this.probes) {
            for (const site of probe.sites.values()) {
                for (const l of site.listeners) l.detach();
            }
            probe.sites.clear();
        }
        Interceptor.flush();
        this.gate.dispose();
        if (this.observer !== null) {
            this.observer.detach();
            this.observer = null;
        }
    }
}
