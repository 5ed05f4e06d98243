// fork() and close() under the complete mode with -F (x86_64). The C side is
// syscalls_c_fork.ts; docs/syscalls.md, "Forks under --complete -F", says why.
//
// Frida's child gating hooks fork() and close(); their trampolines are in the
// anonymous code excluded from Stalker, so a followed thread that entered them
// left Stalker for good. Calls of close() (at its address or a PLT stub) and
// of fork()'s PLT stubs are excluded instead: Stalker makes such a call
// natively and goes on following the caller when it returns.
//
// fork()'s GOT slots point at a gate (makeForkStub) that sends the child, not
// back into its copy of the parent's Stalker code (which belongs to the script
// Frida unloads in the child), but to a wait stub where it waits until its own
// agent has followed it.

/** The fork stub's data: the child sets WAITING on entry, its agent sets GO. */
const WAITING = 0;
const GO = 4;
const SLEEP = 8; // struct timespec: how long the stub sleeps between looks
const FORKING = 24; // threads in fork() through the gate (the C's fork_flags[0])
const SENDING = 28; // periodic sends in progress (fork_flags[1])
const PATIENCE_MS = 30000; // then the child goes on unfollowed

export interface ForkStub {
    code: NativePointer; // the wait stub
    data: NativePointer;
    gate: NativePointer; // where fork()'s GOT slots point
}

export interface ArmedForks {
    stub: NativePointer; // the wait stub, which this process's forked children wait in (complete mode)
    restore: () => void; // puts fork()'s GOT slots back
}

export interface CallTargets {
    fn: NativePointer;
    stubs: NativePointer[]; // PLT entries jumping through the slots
    slots: NativePointer[]; // GOT slots holding fn
}

/**
 * Where calls of each of `names` may go: the function, its GOT slots and the
 * PLT stubs that jump through them. One pass over the modules' imports.
 */
export function callTargets(names: string[]): Map<string, CallTargets> {
    const out = new Map<string, CallTargets>();
    for (const name of names) {
        const fn = Module.findGlobalExportByName(name);
        if (fn !== null) out.set(name, { fn, stubs: [], slots: [] });
    }
    for (const m of Process.enumerateModules()) {
        let imports: ModuleImportDetails[];
        try {
            imports = m.enumerateImports();
        } catch {
            continue;
        }
        let sections: ModuleSectionDetails[] | null = null;
        for (const [name, t] of out) {
            const slots = imports.filter((i) => i.name === name && i.slot !== undefined).map((i) => i.slot as NativePointer);
            if (slots.length === 0) continue;
            t.slots.push(...slots);
            sections ??= m.enumerateSections().filter((s) => s.name.startsWith(".plt"));
            for (const s of sections) t.stubs.push(...pltStubs(s.address, s.size, slots));
        }
    }
    return out;
}

/** PLT entries in [base, base+size) that jump through one of `slots`. */
function pltStubs(base: NativePointer, size: number, slots: NativePointer[]): NativePointer[] {
    const out: NativePointer[] = [];
    const bytes = new Uint8Array(base.readByteArray(size) ?? new ArrayBuffer(0));
    const view = new DataView(bytes.buffer);
    for (let i = 0; i + 6 <= bytes.length; i++) {
        // jmp [rip+d32] (ff 25), or bnd jmp (f2 ff 25); an endbr64 before it starts the entry.
        const bnd = bytes[i] === 0xf2 && bytes[i + 1] === 0xff && bytes[i + 2] === 0x25;
        const plain = bytes[i] === 0xff && bytes[i + 1] === 0x25 && (i === 0 || bytes[i - 1] !== 0xf2);
        if (!bnd && !plain) continue;
        const len = bnd ? 7 : 6;
        if (i + len > bytes.length) break;
        const slot = base.add(i + len).add(view.getInt32(i + len - 4, true));
        if (!slots.some((s) => s.equals(slot))) continue;
        const endbr = i >= 4 && bytes[i - 4] === 0xf3 && bytes[i - 3] === 0x0f && bytes[i - 2] === 0x1e && bytes[i - 1] === 0xfa;
        out.push(base.add(endbr ? i - 4 : i));
    }
    return out;
}

const FORK_MAGIC = "0x6b726f665f727473"; // in r10 from the transform (syscalls_c_fork.ts)
const FORK_CALLS = 32; // PLT stubs the transform knows (syscalls_c_fork.ts)

/**
 * The fork gate and the wait stub, in pages mapped with mmap(2) directly so
 * that no script owns them (Frida frees a script's heap when it unloads it,
 * and a forked child runs this code after that). The GOT slots of fork()
 * point at the gate, so a call through a PLT stub lands there. The gate
 * counts the thread in (FORKING), waits while a periodic send is in progress
 * (SENDING; the monitor begins none while FORKING is not 0: see send_begin
 * in syscalls_c_fork.ts), and calls fork(), then counts the thread out:
 *
 * - from a followed thread (r10 holds FORK_MAGIC, r11 the call's return
 *   address in the program; the call itself came natively from Stalker's
 *   code, which is the return address on the stack): the parent returns to
 *   Stalker's code and goes on being followed; the child drops that return
 *   address and goes to the wait stub with the real one;
 * - from anywhere else: both return to the caller.
 *
 * The wait stub says it waits (WAITING), sleeps 1 ms at a time until its
 * agent has followed the thread (GO) or PATIENCE_MS have passed, and returns
 * 0, fork()'s result in a child. Its nanosleep calls are in anonymous code,
 * which the monitor counts as Frida's.
 */
export function makeForkStub(fork: NativePointer): ForkStub | null {
    const mmapFn = Module.findGlobalExportByName("mmap");
    if (mmapFn === null) return null;
    const mmap = new NativeFunction(mmapFn, "pointer", ["pointer", "size_t", "int", "int", "int", "long"]);
    const page = Process.pageSize;
    const PROT_RW = 3;
    const MAP_PRIVATE_ANONYMOUS = 0x22;
    const base = mmap(NULL, 2 * page, PROT_RW, MAP_PRIVATE_ANONYMOUS, -1, 0);
    if (base.equals(ptr("-1"))) return null;
    const code = base;
    const data = base.add(page);
    data.add(SLEEP).writeU64(0);
    data.add(SLEEP + 8).writeU64(1000000);
    const w = new X86Writer(code);
    // The wait stub, at code.
    w.putMovRegAddress("rcx", data);
    w.putMovRegPtrU32("rcx", 1); // WAITING (offset 0)
    w.putMovRegU32("edx", PATIENCE_MS);
    w.putLabel("look");
    w.putMovRegAddress("rcx", data);
    w.putXorRegReg("eax", "eax");
    w.putCmpRegOffsetPtrReg("rcx", GO, "eax");
    w.putJccShortLabel("jne", "done", "no-hint");
    w.putPushReg("rdx");
    w.putLeaRegRegOffset("rdi", "rcx", SLEEP);
    w.putXorRegReg("esi", "esi");
    w.putMovRegU32("eax", 35); // nanosleep
    w.putBytes([0x0f, 0x05]); // syscall
    w.putPopReg("rdx");
    w.putDecReg("edx");
    w.putJccShortLabel("jne", "look", "no-hint");
    w.putLabel("done");
    w.putXorRegReg("eax", "eax");
    w.putRet();
    // The gate.
    const gate = w.pc;
    w.putLockIncImm32Ptr(data.add(FORKING));
    w.putLabel("wait");
    w.putMovRegAddress("rcx", data);
    w.putXorRegReg("eax", "eax");
    w.putCmpRegOffsetPtrReg("rcx", SENDING, "eax");
    w.putJccShortLabel("je", "go", "no-hint");
    w.putPause();
    w.putJmpShortLabel("wait");
    w.putLabel("go");
    w.putMovRegAddress("rax", ptr(FORK_MAGIC));
    w.putCmpRegReg("r10", "rax");
    w.putJccNearLabel("jne", "plain", "no-hint");
    w.putPushReg("r11"); // the real return address; fork() is entered aligned
    w.putCallAddress(fork);
    w.putPopReg("r11");
    w.putLockDecImm32Ptr(data.add(FORKING));
    w.putTestRegReg("eax", "eax");
    w.putJccShortLabel("je", "child", "no-hint");
    w.putRet(); // the parent: back to Stalker's code
    w.putLabel("child");
    w.putLeaRegRegOffset("rsp", "rsp", 8); // Stalker's return address, the parent's
    w.putPushReg("r11");
    w.putJmpAddress(code);
    w.putLabel("plain");
    w.putLeaRegRegOffset("rsp", "rsp", -8); // fork() is entered aligned
    w.putCallAddress(fork);
    w.putLeaRegRegOffset("rsp", "rsp", 8);
    w.putLockDecImm32Ptr(data.add(FORKING));
    w.putRet();
    w.flush();
    w.dispose();
    Memory.protect(code, page, "r-x");
    return { code, data, gate };
}

/**
 * Point the GOT slots at `to` (a read-only GOT is made writable for it, then
 * put back). Returns what puts the slots' old values back.
 */
export function redirectSlots(slots: NativePointer[], to: NativePointer): () => void {
    const done: [NativePointer, NativePointer][] = [];
    const write = (slot: NativePointer, value: NativePointer): void => {
        const was = Process.findRangeByAddress(slot)?.protection ?? null;
        if (was === null) return;
        if (!was.includes("w")) Memory.protect(slot, Process.pointerSize, "rw-");
        slot.writePointer(value);
        if (!was.includes("w")) Memory.protect(slot, Process.pointerSize, was);
    };
    for (const slot of slots) {
        try {
            const old = slot.readPointer();
            write(slot, to);
            done.push([slot, old]);
        } catch {
            // Not writable: calls through this slot are not handled (docs/syscalls.md).
        }
    }
    return () => {
        for (const [slot, old] of done) {
            try {
                write(slot, old);
            } catch {
                // Gone with its module.
            }
        }
    };
}

/** A forked child's agent: follow the child's thread once it waits in the stub. */
export function followFromStub(stub: NativePointer, follow: () => void, failed: (why: string) => void): void {
    const data = stub.add(Process.pageSize);
    const started = Date.now();
    const timer = setInterval(() => {
        if (data.add(WAITING).readS32() === 0) {
            if (Date.now() - started < PATIENCE_MS) return;
            clearInterval(timer);
            failed("the forked child never reached the fork stub");
            return;
        }
        clearInterval(timer);
        try {
            follow();
        } catch (e) {
            failed(`cannot follow the forked child: ${String(e)}`);
        }
        data.add(GO).writeS32(1);
    }, 1);
}

/**
 * -F: fork()'s GOT slots point at the gate; in the complete mode calls of
 * close() and of fork()'s PLT stubs are also made natively (above). `cm` is
 * the monitor's CModule.
 */
export function armForks(cm: CModule, complete: boolean): ArmedForks | null {
    if (Process.arch !== "x64") return null;
    const targets = callTargets(complete ? ["fork", "close"] : ["fork"]);
    const fork = targets.get("fork");
    if (fork === undefined) return null;
    const stub = makeForkStub(fork.fn);
    if (stub === null) return null;
    new NativeFunction(cm.set_fork_flags, "void", ["pointer"])(stub.data.add(FORKING));
    if (complete) {
        const close = targets.get("close");
        if (close !== undefined) for (const p of [close.fn, ...close.stubs]) Stalker.exclude({ base: p, size: 1 });
        const setCall = new NativeFunction(cm.set_fork_call, "void", ["int", "pointer"]);
        // Only as many as the transform knows (FORK_CALLS): a stub excluded
        // without its hint would send a child back into its parent's Stalker code.
        fork.stubs.slice(0, FORK_CALLS).forEach((p, i) => {
            setCall(i, p);
            Stalker.exclude({ base: p, size: 1 });
        });
    }
    return { stub: stub.code, restore: redirectSlots(fork.slots, stub.gate) };
}
