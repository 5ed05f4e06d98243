"""The ``patch:`` key of a probe (applied with ``instr run -w``), validated.

One action per probe, with its own parameters::

    patch: {ret: 0}                         force the return value (the function runs)
    patch: {skip: -1}                       do not run the function; return -1
    patch: {replace_c: "C source", fn: NAME}
                                            replace it by NAME (default ``replacement``),
                                            compiled in the target; ``original`` calls it
    patch: {replace_js: "JS body", returns: int, params: [int, pointer]}
                                            replace it by a JavaScript function of
                                            a0, a1, ... and ``original`` (a NativeFunction)
    patch: {args: {arg0: 5, arg1: "text"}}  change arguments before the call
    patch: {bytes: {expect: HEX, new: HEX}} write NEW if the code there is EXPECT
    patch: {nop: 2, expect: HEX}            overwrite 2 instructions (EXPECT optional)
    patch: {signal: 10}                     send the thread signal 10 as the call starts
    patch: {copyout: {arg: 1, data: HEX}}   write DATA where argument 1 points, as the
                                            call starts

``ret``, ``skip``, ``args``, ``signal`` and ``copyout`` can be gated by the probe's
``where``.
"""

from __future__ import annotations

import re

from instr.probes import limits
from instr.probes.diag import Diagnostics, did_you_mean, one_of
from instr.probes.ir import JS_TYPES, PATCH_KINDS, PatchAction, PatchKind
from instr.probes.loader import YMap, YNode, YScalar, YSeq, check_integer, clip, describe

# Parameters each action takes besides its own key.
MODIFIERS: dict[PatchKind, tuple[str, ...]] = {
    "ret": (),
    "skip": (),
    "replace_c": ("fn",),
    "replace_js": ("returns", "params"),
    "args": (),
    "bytes": (),
    "nop": ("expect",),
    "signal": (),
    "copyout": (),
}
ALL_KEYS = (*PATCH_KINDS, "fn", "returns", "params", "expect")
# What a `where` can gate: these decide per call.
GATED: tuple[PatchKind, ...] = ("ret", "skip", "args", "signal", "copyout")
MAX_SIGNAL = 64
MAX_BYTES = 4096
MAX_ARGS = 16
_HEX = re.compile(r"^(?:[0-9a-fA-F]{2})+$")
_C_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ARG = re.compile(r"^arg([0-9]+)$")
EXAMPLE = "e.g. patch: {ret: 0}"


class _Checker:
    def __init__(self, d: Diagnostics) -> None:
        self.d = d

    def integer(self, node: YNode, key: str, low: int, high: int) -> int | None:
        return check_integer(self.d, node, key, low, high)

    def value64(self, node: YNode, key: str) -> int | None:
        """An integer that fits 64 bits, signed or not."""
        return self.integer(node, key, -(2**63), 2**64 - 1)

    def text(self, node: YNode, key: str) -> str | None:
        if isinstance(node, YScalar) and isinstance(node.value, str) and node.value.strip():
            return node.value
        self.d.error(node.loc, f"'{key}' must be a non-empty string, not {describe(node)}")
        return None

    def hexbytes(self, node: YNode, key: str) -> bytes | None:
        t = node.text.replace(" ", "") if isinstance(node, YScalar) else ""
        if not isinstance(node, YScalar) or not _HEX.match(t):
            self.d.error(
                node.loc,
                f"'{key}' must be hex bytes, not {describe(node)}",
                'write pairs of hex digits as a string, e.g. "b82a000000"',
            )
            return None
        data = bytes.fromhex(t)
        if len(data) > MAX_BYTES:
            self.d.error(node.loc, f"'{key}' is {len(data)} bytes; at most {MAX_BYTES} at once")
            return None
        return data

    def js_type(self, node: YNode, key: str) -> str | None:
        t = self.text(node, key)
        if t is None:
            return None
        if t not in JS_TYPES:
            hint = did_you_mean(t, JS_TYPES) or f"types are {one_of(JS_TYPES)}"
            self.d.error(node.loc, f"unknown type '{t}' in '{key}'", hint)
            return None
        return t

    # -- the actions --------------------------------------------------------

    def action(self, node: YMap, kind: PatchKind) -> PatchAction | None:
        main = node.entries[kind].value
        if kind in ("ret", "skip"):
            v = self.value64(main, f"patch: {kind}")
            return None if v is None else PatchAction(kind=kind, loc=node.loc, value=v)
        if kind == "replace_c":
            code = self.text(main, "patch: replace_c")
            fn = "replacement"
            if (f := node.get("fn")) is not None:
                name = self.text(f, "fn")
                if name is not None and not _C_NAME.match(name):
                    self.d.error(f.loc, f"'fn' must be a C function name, not '{name}'")
                    return None
                fn = name or fn
            return None if code is None else PatchAction(kind=kind, loc=node.loc, code=code, fn=fn)
        if kind == "replace_js":
            return self.replace_js(node, main)
        if kind == "args":
            return self.args(main)
        if kind == "bytes":
            return self.bytes_(main)
        if kind == "signal":
            sig = self.integer(main, "patch: signal", 1, MAX_SIGNAL)
            return None if sig is None else PatchAction(kind=kind, loc=node.loc, value=sig)
        if kind == "copyout":
            return self.copyout(main)
        n = self.integer(main, "patch: nop", 1, 64)
        expect = self.hexbytes(e, "expect") if (e := node.get("expect")) is not None else None
        if n is None or (e is not None and expect is None):
            return None
        return PatchAction(kind=kind, loc=node.loc, instructions=n, expect=expect)

    def replace_js(self, node: YMap, main: YNode) -> PatchAction | None:
        code = self.text(main, "patch: replace_js")
        ret = node.get("returns")
        returns = "void" if ret is None else self.js_type(ret, "returns")
        params: list[str] = []
        ok = returns is not None
        if (ps := node.get("params")) is not None:
            if not isinstance(ps, YSeq):
                self.d.error(ps.loc, f"'params' must be a list of types, not {describe(ps)}")
                ok = False
            else:
                for item in ps.items:
                    t = self.js_type(item, "params")
                    ok = ok and t is not None and t != "void"
                    if t == "void":
                        self.d.error(item.loc, "a parameter cannot be 'void'")
                    params.append(t or "")
        if code is None or not ok:
            return None
        return PatchAction(
            kind="replace_js", loc=node.loc, code=code, returns=returns, params=tuple(params)
        )

    def args(self, main: YNode) -> PatchAction | None:
        if not isinstance(main, YMap) or not main.entries:
            self.d.error(
                main.loc,
                f"'patch: args' must be a mapping of arguments to values, not {describe(main)}",
                'e.g. patch: {args: {arg0: 5, arg1: "text"}}',
            )
            return None
        out: list[tuple[int, int | str]] = []
        ok = True
        for key, entry in main.entries.items():
            m = _ARG.match(key)
            if m is None or limits.decimal(m.group(1)) >= MAX_ARGS:
                self.d.error(
                    entry.key_loc,
                    f"'{clip(key)}' is not an argument: write arg0 .. arg{MAX_ARGS - 1}",
                )
                ok = False
                continue
            v = entry.value
            if isinstance(v, YScalar) and isinstance(v.value, str):
                out.append((limits.decimal(m.group(1)), v.value))
            elif (n := self.value64(v, key)) is not None:
                out.append((limits.decimal(m.group(1)), n))
            else:
                ok = False
        if not ok:
            return None
        return PatchAction(kind="args", loc=main.loc, args=tuple(sorted(out)))

    def bytes_(self, main: YNode) -> PatchAction | None:
        if not isinstance(main, YMap) or set(main.entries) != {"expect", "new"}:
            self.d.error(
                main.loc,
                f"'patch: bytes' must be a mapping with 'expect' and 'new', not {describe(main)}"
                if not isinstance(main, YMap)
                else "'patch: bytes' needs exactly the keys 'expect' and 'new'",
                'e.g. patch: {bytes: {expect: "b82a000000", new: "b801000000"}}',
            )
            return None
        expect = self.hexbytes(main.entries["expect"].value, "expect")
        new = self.hexbytes(main.entries["new"].value, "new")
        if expect is None or new is None:
            return None
        if len(expect) != len(new):
            self.d.error(
                main.loc,
                f"'expect' has {len(expect)} and 'new' {len(new)} bytes: they must be the same length",
            )
            return None
        return PatchAction(kind="bytes", loc=main.loc, expect=expect, data=new)

    def copyout(self, main: YNode) -> PatchAction | None:
        if not isinstance(main, YMap) or set(main.entries) != {"arg", "data"}:
            self.d.error(
                main.loc,
                "'patch: copyout' needs exactly the keys 'arg' and 'data'",
                'e.g. patch: {copyout: {arg: 1, data: "68690a00"}}',
            )
            return None
        index = self.integer(main.entries["arg"].value, "arg", 0, MAX_ARGS - 1)
        data = self.hexbytes(main.entries["data"].value, "data")
        if index is None or data is None:
            return None
        return PatchAction(kind="copyout", loc=main.loc, value=index, data=data)


def validate_patch(node: YNode, d: Diagnostics) -> PatchAction | None:
    """A probe's ``patch:`` value, or None after reporting what is wrong."""
    if not isinstance(node, YMap):
        d.error(
            node.loc,
            f"'patch' must be a mapping with one action ({one_of(PATCH_KINDS)}), not {describe(node)}",
            EXAMPLE,
        )
        return None
    kinds = [k for k in node.entries if k in PATCH_KINDS]
    for key, entry in node.entries.items():
        if key not in ALL_KEYS:
            hint = did_you_mean(key, ALL_KEYS) or f"actions are {one_of(PATCH_KINDS)}"
            d.error(entry.key_loc, f"unknown key '{key}' in patch", hint)
            return None
    if len(kinds) != 1:
        d.error(
            node.loc,
            f"'patch' takes one action ({one_of(PATCH_KINDS)}), not {len(kinds)}",
            EXAMPLE if not kinds else f"write one probe per action: {', '.join(kinds)}",
        )
        return None
    kind = next(k for k in PATCH_KINDS if k == kinds[0])
    for key, entry in node.entries.items():
        if key != kind and key not in MODIFIERS[kind]:
            d.error(entry.key_loc, f"'{key}' does not apply to a '{kind}' patch")
            return None
    return _Checker(d).action(node, kind)
