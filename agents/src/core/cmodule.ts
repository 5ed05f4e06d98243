// The agent's large CModules, built either by the host (instr/cbuild.py: gcc
// -O2 into a shared object, mapped here with `new CModule(bytes)`) or, where
// the host cannot build for this process, by Frida's TinyCC in the agent.

import { MEM_C_SOURCE } from "../mem/mem_c.js";
import { SYS_C_SOURCE } from "../syscalls/syscalls_c.js";
import { ownModule } from "./leave.js";

/** The C of each module the host may build. */
const SOURCES: Record<string, string> = {
    syscalls: SYS_C_SOURCE,
    mem: MEM_C_SOURCE,
};

export interface CModuleSource {
    source: string;
    headers: Record<string, string>;
    defines: Record<string, string | boolean>;
    arch: string;
    platform: string;
}

/** What the host needs to build NAME: its C, and this Frida's headers and defines. */
export function cmoduleSource(name: string): CModuleSource {
    const source = SOURCES[name];
    if (source === undefined) throw new Error(`no C module named ${name}`);
    const builtins = CModule.builtins;
    return {
        source,
        headers: builtins.headers,
        defines: builtins.defines,
        arch: Process.arch,
        platform: Process.platform,
    };
}

export interface Built {
    cm: CModule;
    /** "host" (the host's compiler) or "tinycc". */
    toolchain: string;
    /** Why the host's object was not used, when one was given. */
    error: string | null;
}

/** NAME's module: the host's object when given and it maps, else TinyCC's build. */
export function loadCModule(name: string, symbols: CSymbols, object: ArrayBuffer | null): Built {
    let error: string | null = null;
    if (object !== null) {
        try {
            const cm = new CModule(object, symbols);
            ownModule(cm);
            return { cm, toolchain: "host", error: null };
        } catch (e) {
            error = `the host-built ${name} module did not load: ${String(e)}`;
        }
    }
    const source = SOURCES[name];
    if (source === undefined) throw new Error(`no C module named ${name}`);
    const cm = new CModule(source, symbols, { toolchain: "internal" });
    ownModule(cm);
    return { cm, toolchain: "tinycc", error };
}
