// C++ names as people write them, for matching globs (core/resolver.ts):
// `cxx!ns::Widget::twice*` matches `_ZN2ns6Widget5twiceEi`, whose demangled
// name is `ns::Widget::twice(int)`. The target's own demangler does the work
// (`__cxa_demangle`, from libstdc++ or libc++). A program without a C++
// runtime gets the qualified name alone (`ns::Widget::twice`, from
// qualifiedName below), for the names it can spell: no template arguments,
// operators or substitutions. The host demangles what it shows by itself
// (instr/demangle.py): names leave the agent as they are.

let demangler: NativeFunction<NativePointer, [NativePointer, NativePointer, NativePointer, NativePointer]> | null | undefined;
let free: NativeFunction<void, [NativePointer]> | null = null;
const cache = new Map<string, string | null>();
const CACHE_MAX = 1 << 17;

/** A pattern written with C++ syntax: `::`, a parameter list, a template, `operator new`. */
export function cxxPattern(glob: string): boolean {
    return /::|[(< ]/.test(glob);
}

/** An Itanium-ABI mangled name (`_ZN...`, `_ZL...`, `_Z3foo...`). */
export function isMangled(name: string): boolean {
    return name.length > 2 && name.charCodeAt(0) === 0x5f && name.charCodeAt(1) === 0x5a && /[A-Za-z0-9]/.test(name[2]);
}

function find(): typeof demangler {
    let at: NativePointer | null = null;
    try {
        at = Module.findGlobalExportByName("__cxa_demangle");
        if (at === null) at = Process.mainModule.findSymbolByName("__cxa_demangle");
    } catch {
        at = null;
    }
    if (at === null) return null;
    free = new NativeFunction(Module.getGlobalExportByName("free"), "void", ["pointer"]);
    return new NativeFunction(at, "pointer", ["pointer", "pointer", "pointer", "pointer"]);
}

/** `name` demangled, or null (not mangled, no demangler here, or not valid). */
export function demangle(name: string): string | null {
    if (!isMangled(name)) return null;
    const known = cache.get(name);
    if (known !== undefined) return known;
    if (demangler === undefined) demangler = find();
    const fn = demangler;
    let out: string | null = null;
    if (fn !== null && fn !== undefined) {
        const status = Memory.alloc(4);
        const p = fn(Memory.allocUtf8String(name), NULL, NULL, status);
        if (!p.isNull()) {
            if (status.readS32() === 0) out = p.readUtf8String();
            free!(p);
        }
    } else {
        out = qualifiedName(name);
    }
    if (cache.size >= CACHE_MAX) cache.clear();
    cache.set(name, out);
    return out;
}

/**
 * `ns::Widget::twice(int) const` -> `ns::Widget::twice`: the name without its
 * parameter list (the first `(` outside template arguments and operator names).
 */
export function withoutParams(demangled: string): string {
    let depth = 0;
    for (let i = 0; i < demangled.length; i++) {
        if (demangled.startsWith("operator", i)) {
            i += "operator".length;
            if (demangled.startsWith("()", i)) i += 2;
            while (i < demangled.length && "<>=!+-*/%^&|~[],".includes(demangled[i])) i++;
            i--;
            continue;
        }
        const c = demangled[i];
        if (c === "<") depth++;
        else if (c === ">") depth = Math.max(0, depth - 1);
        else if (c === "(" && depth === 0) return demangled.slice(0, i);
    }
    return demangled;
}

/**
 * The qualified name of a mangled function without its parameters, for a
 * process without a demangler: `_ZN2ns6Widget5twiceEi` -> `ns::Widget::twice`,
 * `_ZN2ns6WidgetC2Ev` -> `ns::Widget::Widget`, `_ZL4helpv` -> `help`. Null
 * for what it cannot spell (template arguments, operators, substitutions but
 * `St`, local names).
 */
export function qualifiedName(name: string): string | null {
    let i = 2;
    const parts: string[] = [];
    const source = (): boolean => {
        let n = 0;
        const start = i;
        while (i < name.length && name[i] >= "0" && name[i] <= "9") n = n * 10 + (name.charCodeAt(i++) - 48);
        if (i === start || n === 0 || i + n > name.length) return false;
        parts.push(name.slice(i, i + n));
        i += n;
        return true;
    };
    if (name[i] === "L") i++;
    if (name.startsWith("St", i)) {
        parts.push("std");
        i += 2;
        return source() ? parts.join("::") : null;
    }
    if (name[i] !== "N") return source() ? parts.join("::") : null;
    i++;
    while ("rVKRO".includes(name[i] ?? "")) i++;
    while (i < name.length && name[i] !== "E") {
        const c = name[i];
        if (c >= "0" && c <= "9") {
            if (!source()) return null;
        } else if (name.startsWith("St", i) && parts.length === 0) {
            parts.push("std");
            i += 2;
        } else if ((c === "C" || c === "D") && parts.length > 0 && /[0-5]/.test(name[i + 1] ?? "")) {
            const cls = parts[parts.length - 1];
            parts.push(c === "C" ? cls : "~" + cls);
            i += 2;
        } else {
            return null;
        }
    }
    return i < name.length && parts.length > 0 ? parts.join("::") : null;
}
