// Resolution of points to sites (addresses to hook).
//
// function: `module` glob over module names (null: every module), `symbol`
// glob. Exact names use findExportByName, then findSymbolByName (static
// functions of a binary with a symbol table). Globs use ApiResolver("module")
// for exports plus Module.enumerateSymbols() (functions) for the rest,
// deduplicated by address. `exclude` removes matches. A symbol pattern in
// C++ syntax (`ns::Widget::twice*`) matches demangled names (core/demangle.ts),
// with or without their parameter list.
//
// An exact symbol with no module (`malloc`, `*!malloc`) is the definition
// the dynamic linker binds the program's calls to: the first module in link
// map order that exports it (Module.findGlobalExportByName), so an allocator
// that interposes libc's (jemalloc, the program's own) is the one found. A
// plain module name may be a symlink to a loaded module (core/modalias.ts).

import { closest, didYouMean, functionNames } from "./suggest.js";
import { cxxPattern, demangle, withoutParams } from "./demangle.js";
import { Point } from "../protocol.js";
import { globMatch, isGlob } from "./util.js";
import { mappingOf } from "./maps.js";
import { aliasNote, aliasable, isAliasOf } from "./modalias.js";

export interface Site {
    address: NativePointer;
    module: string | null;
    symbol: string | null;
}

/** A matching function instr leaves out, and why (said in the probe's status). */
export interface LeftOut {
    name: string;
    why: string;
}

export type Resolution =
    | { kind: "sites"; sites: Site[]; leftOut?: LeftOut[]; notes?: string[] }
    | { kind: "pending"; reason: string }
    | { kind: "failed"; reason: string };

type FunctionPoint = Extract<Point, { kind: "function" }>;

function moduleMatches(glob: string | null, m: Module): boolean {
    return glob === null || globMatch(glob, m.name) || (glob.includes("/") && globMatch(glob, m.path)) || isAliasOf(glob, m);
}

/** `symbol` matches `glob` as it is, or demangled when the glob is C++ (`ns::f*`). */
function symbolMatches(glob: string, symbol: string): boolean {
    if (globMatch(glob, symbol)) return true;
    if (!cxxPattern(glob)) return false;
    const d = demangle(symbol);
    return d !== null && (globMatch(glob, d) || globMatch(glob, withoutParams(d)));
}

/** Does an exclude's module glob name module `name`, by its name or a symlink's? */
function excludeModule(glob: string, name: string): boolean {
    if (globMatch(glob, name)) return true;
    if (!aliasable(glob)) return false;
    const m = Process.findModuleByName(name);
    return m !== null && isAliasOf(glob, m);
}

function excluded(point: FunctionPoint, module: string, symbol: string): boolean {
    for (const e of point.exclude) {
        if (e.module !== null && !excludeModule(e.module, module)) continue;
        if (symbolMatches(e.symbol, symbol)) return true;
    }
    return false;
}

/**
 * Functions instr's hooks and Gum's call while in a hook: a hook on one
 * would call itself before its re-entry guard is set (Gum's thread-local
 * storage is pthread_getspecific: tracing `libc.so*!*` killed the program
 * with SIGSEGV, and `libc.so*!pthread_getspecific` alone did). By address,
 * so that aliases (tss_get, __pthread_getspecific) are left out too.
 */
const HOOK_INTERNALS = ["pthread_getspecific", "pthread_setspecific"];
let internals: Map<string, string> | null = null;

function hookInternal(address: NativePointer): string | null {
    if (internals === null) {
        internals = new Map();
        for (const name of HOOK_INTERNALS) {
            const a = Module.findGlobalExportByName(name);
            if (a !== null) internals.set(a.toString(), name);
        }
    }
    // Gum hooks the target of a function that starts with a direct jump
    // (tss_get is `jmp pthread_getspecific`): follow such jumps.
    let a = address;
    for (let hop = 0; hop < 4; hop++) {
        const name = internals.get(a.toString());
        if (name !== undefined) return name;
        const next = jumpTarget(a);
        if (next === null) return null;
        a = next;
    }
    return null;
}

const CALLS_ITSELF = "instr's own hooks call them";

/**
 * Code in the kernel's vDSO (glibc's gettimeofday, time, clock_gettime and
 * getcpu resolve there through IFUNCs): its pages cannot be made writable
 * (mprotect fails), and Gum aborts the program when a hook's write fails.
 */
function kernelCode(address: NativePointer): string | null {
    const m = mappingOf(address);
    if (m === null || (m.path !== "[vdso]" && m.path !== "[vsyscall]")) return null;
    let name = address.toString();
    try {
        const ds = DebugSymbol.fromAddress(address);
        if (ds.name !== null) name = `${ds.moduleName ?? m.path}!${ds.name}`;
    } catch {
        // the address alone
    }
    return `it runs in the kernel's ${m.path.slice(1, -1)} (${name}), whose code cannot be made writable to hook`;
}

/** Why a site must not be hooked, or null. */
function unhookable(address: NativePointer): string | null {
    return hookInternal(address) !== null ? CALLS_ITSELF : kernelCode(address);
}

/** The names left out, grouped by why: [why, names] in first-seen order. */
export function leftOutByWhy(leftOut: Iterable<LeftOut>): [string, string[]][] {
    const byWhy = new Map<string, string[]>();
    for (const l of leftOut) byWhy.set(l.why, [...(byWhy.get(l.why) ?? []), l.name]);
    return [...byWhy];
}

function leftOutReason(leftOut: LeftOut[]): string {
    return leftOutByWhy(leftOut).map(([why, names]) => `${names.join(", ")} cannot be hooked: ${why}`).join("; ");
}

/**
 * Where Gum writes a hook on `address`: past the direct jumps a function may
 * start with (jemalloc's `operator new[]` is `jmp operator new`), as Gum does.
 * jemalloc's `operator delete` and `delete[]` both jump to its PLT entry for
 * free, and Gum hooks that entry: the second one failed as "already replaced".
 */
export function hookTarget(address: NativePointer): NativePointer {
    let a = address;
    for (let hop = 0; hop < 4; hop++) {
        const next = jumpTarget(a);
        if (next === null) break;
        a = next;
    }
    return a;
}

function jumpTarget(a: NativePointer): NativePointer | null {
    try {
        let insn = Instruction.parse(a);
        if (insn.mnemonic === "endbr64" || insn.mnemonic === "bti") insn = Instruction.parse(insn.next);
        const op = (insn as { operands?: { type: string; value: unknown }[] }).operands?.[0];
        if ((insn.mnemonic === "jmp" || insn.mnemonic === "b") && op !== undefined && op.type === "imm") {
            return ptr(String(op.value));
        }
    } catch {
        return null;
    }
    return null;
}

function inModule(m: Module, a: NativePointer): boolean {
    return a.compare(m.base) >= 0 && a.compare(m.base.add(m.size)) < 0;
}

/** Only `*` and `?` are understood by ApiResolver; other globs are post-filtered. */
function resolverGlob(glob: string): string {
    return /[[\]]/.test(glob) ? "*" : glob;
}

function basename(path: string): string {
    const i = path.lastIndexOf("/");
    return i < 0 ? path : path.slice(i + 1);
}

function exactIn(m: Module, symbol: string): NativePointer | null {
    const a = m.findExportByName(symbol);
    if (a !== null) return a;
    try {
        return m.findSymbolByName(symbol);
    } catch {
        return null;
    }
}

function globIn(point: FunctionPoint, modules: Module[], onlyModule: boolean, aliased: boolean): Site[] {
    const sites: Site[] = [];
    const names = new Set(modules.map((m) => m.name));
    // Exports, through one resolver query (by path for one module: a symlink's
    // name is not the module's).
    const one = onlyModule || (aliased && modules.length === 1);
    const modGlob = one ? modules[0].path : point.module === null || aliased ? "*" : resolverGlob(point.module);
    try {
        const r = new ApiResolver("module");
        for (const m of r.enumerateMatches(`exports:${modGlob}!${resolverGlob(point.symbol)}`)) {
            const bang = m.name.lastIndexOf("!");
            const mod = basename(m.name.slice(0, bang));
            const sym = m.name.slice(bang + 1);
            if (!names.has(mod) || !globMatch(point.symbol, sym)) continue;
            sites.push({ address: m.address, module: mod, symbol: sym });
        }
    } catch {
        // Fall back to the symbol tables below.
    }
    // Non-exported functions, from each module's symbol table.
    for (const m of modules) {
        let syms: ModuleSymbolDetails[];
        try {
            syms = m.enumerateSymbols();
        } catch {
            continue;
        }
        for (const s of syms) {
            if (s.type !== "function" || s.address.isNull() || !inModule(m, s.address)) continue;
            if (!globMatch(point.symbol, s.name)) continue;
            sites.push({ address: s.address, module: m.name, symbol: s.name });
        }
    }
    return sites;
}

/** `module!_ZN2ns1fEv` -> `module!ns::f()`, for what people read (a "did you mean"). */
function readable(name: string): string {
    const bang = name.indexOf("!");
    const d = demangle(name.slice(bang + 1));
    return d === null ? name : name.slice(0, bang + 1) + d;
}

/** Functions whose demangled names match a C++ pattern, from exports and symbol tables. */
function cxxIn(point: FunctionPoint, modules: Module[]): Site[] {
    const sites: Site[] = [];
    for (const m of modules) {
        const named: [string, NativePointer][] = [];
        try {
            for (const e of m.enumerateExports()) if (e.type === "function") named.push([e.name, e.address]);
        } catch {
            // the symbol table below
        }
        try {
            for (const s of m.enumerateSymbols()) if (s.type === "function" && !s.address.isNull()) named.push([s.name, s.address]);
        } catch {
            // the exports above
        }
        for (const [name, address] of named) {
            if (inModule(m, address) && symbolMatches(point.symbol, name)) sites.push({ address, module: m.name, symbol: name });
        }
    }
    return sites;
}

function resolveFunction(point: FunctionPoint, only: Module | null): Resolution {
    const modules = (only !== null ? [only] : Process.enumerateModules()).filter((m) => moduleMatches(point.module, m));
    const what = `${point.module ?? "*"}!${point.symbol}`;
    const notes = point.module === null ? [] : modules.filter((m) => isAliasOf(point.module as string, m)).map((m) => aliasNote(point.module as string, m));
    if (modules.length === 0) {
        if (point.module === null) return { kind: "failed", reason: `no function matches '${what}'` };
        const loaded = Process.enumerateModules().map((m) => m.name);
        const hint = didYouMean(closest(point.module, loaded));
        return { kind: "pending", reason: `no loaded module matches '${point.module}' (armed if one loads)${hint}` };
    }
    let found: Site[] = [];
    if (cxxPattern(point.symbol)) {
        found = cxxIn(point, modules);
    } else if (!isGlob(point.symbol)) {
        const global = point.module === null && only === null ? Module.findGlobalExportByName(point.symbol) : null;
        if (global !== null) {
            const m = Process.findModuleByAddress(global);
            found.push({ address: global, module: m?.name ?? null, symbol: point.symbol });
        } else {
            for (const m of modules) {
                const a = exactIn(m, point.symbol);
                if (a !== null) found.push({ address: a, module: m.name, symbol: point.symbol });
            }
        }
    } else {
        found = globIn(point, modules, only !== null, notes.length > 0);
    }
    const seen = new Set<string>();
    const sites: Site[] = [];
    const leftOut: LeftOut[] = [];
    for (const s of found) {
        const key = s.address.toString();
        if (seen.has(key)) continue;
        if (s.module !== null && s.symbol !== null && excluded(point, s.module, s.symbol)) continue;
        seen.add(key);
        const why = unhookable(s.address);
        if (why !== null) {
            leftOut.push({ name: s.symbol ?? key, why });
            continue;
        }
        sites.push(s);
    }
    if (sites.length === 0 && leftOut.length > 0) return { kind: "failed", reason: leftOutReason(leftOut) };
    if (sites.length === 0) {
        const names = functionNames(modules);
        const hint = didYouMean(closest(point.symbol, names.keys()).map((n) => readable(names.get(n) ?? n)));
        // A name for "the one the program calls" that nothing defines: say
        // where it was looked for.
        const plain = point.module === null && !isGlob(point.symbol) && !cxxPattern(point.symbol);
        const where = plain ? ": no loaded module exports it or names it in a symbol table" : "";
        return { kind: "failed", reason: `no function matches '${what}'${where}${hint}` };
    }
    sites.sort((a, b) => a.address.compare(b.address));
    if (point.module !== null && !isGlob(point.symbol) && !cxxPattern(point.symbol)) notes.push(...interposed(point.symbol, sites, modules));
    const r: Resolution = { kind: "sites", sites };
    if (leftOut.length > 0) r.leftOut = leftOut;
    if (notes.length > 0) r.notes = notes;
    return r;
}

/**
 * Sites named by module (`libc.so*!malloc`) that the program's calls do not
 * reach because another module's export of the name comes first in link map
 * order (jemalloc's malloc, the program's own): the note says which is called.
 */
function interposed(symbol: string, sites: Site[], modules: Module[]): string[] {
    const bound = Module.findGlobalExportByName(symbol);
    if (bound === null) return [];
    const winner = Process.findModuleByAddress(bound);
    if (winner === null) return [];
    const out: string[] = [];
    for (const s of sites) {
        if (s.module === null || s.module === winner.name) continue;
        const m = modules.find((x) => x.name === s.module);
        if (m === undefined || m.findExportByName(symbol)?.equals(s.address) !== true) continue; // a local function of that name
        out.push(`calls to ${symbol} bind to ${winner.name}!${symbol}, which comes first in link map order, not to ${s.module}'s: write '${symbol}' for the one the program calls`);
    }
    return out;
}

/** `address` - its module's base, or null when it is in no module. */
export function moduleOffset(address: NativePointer): number | null {
    const m = Process.findModuleByAddress(address);
    return m === null ? null : address.sub(m.base).toUInt32();
}

function siteAt(address: NativePointer): Site {
    const m = Process.findModuleByAddress(address);
    let symbol: string | null = null;
    try {
        const ds = DebugSymbol.fromAddress(address);
        if (ds.name !== null && !ds.name.startsWith("0x")) symbol = ds.name;
    } catch {
        symbol = null;
    }
    return { address, module: m?.name ?? null, symbol };
}

function single(site: Site): Resolution {
    const why = kernelCode(site.address);
    if (why === null) return { kind: "sites", sites: [site] };
    return { kind: "failed", reason: leftOutReason([{ name: site.symbol ?? site.address.toString(), why }]) };
}

/**
 * Resolve a point over every loaded module, or (for modules that load later)
 * over `only`. A `pending` result means: try again when a matching module loads.
 */
export function resolvePoint(point: Point, only: Module | null = null): Resolution {
    switch (point.kind) {
        case "function":
            return resolveFunction(point, only);
        case "address": {
            if (only !== null) return { kind: "sites", sites: [] };
            let address: NativePointer;
            try {
                address = ptr(point.address);
            } catch (e) {
                return { kind: "failed", reason: `bad address '${point.address}'` };
            }
            return single(siteAt(address));
        }
        case "offset": {
            const candidates = only !== null ? [only] : Process.enumerateModules();
            const m = candidates.find((x) => x.name === point.module || globMatch(point.module, x.name) || isAliasOf(point.module, x));
            if (m === undefined) return { kind: "pending", reason: `module '${point.module}' is not loaded` };
            if (point.offset < 0 || point.offset >= m.size) {
                return { kind: "failed", reason: `offset 0x${point.offset.toString(16)} is outside ${m.name}` };
            }
            const r = single(siteAt(m.base.add(point.offset)));
            if (r.kind === "sites" && isAliasOf(point.module, m)) r.notes = [aliasNote(point.module, m)];
            return r;
        }
    }
}

/**
 * Whether two points could name one function (so neither can be replaced:
 * replaceFast excludes other hooks). By symbol alone: `malloc` and
 * `libjemalloc.so*!malloc` can be one function, as can a module and its symlink.
 */
export function mayOverlap(a: Point, b: Point): boolean {
    if (a.kind !== "function" || b.kind !== "function") return true;
    if (isGlob(a.symbol) || isGlob(b.symbol)) return true;
    return a.symbol === b.symbol;
}

/** Can `point` gain sites when module `m` loads? */
export function mayMatchModule(point: Point, m: Module): boolean {
    if (point.kind === "function") return point.module !== null && moduleMatches(point.module, m);
    if (point.kind === "offset") return point.module === m.name || globMatch(point.module, m.name) || isAliasOf(point.module, m);
    return false;
}
