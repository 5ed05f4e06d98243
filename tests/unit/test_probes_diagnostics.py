"""Every kind of probe-set diagnostic, with its exact file:line:col and text."""

from __future__ import annotations

import textwrap

import pytest

from instr.errors import ProbeSetError
from instr.probes import load_text


def errors(text: str) -> list[str]:
    with pytest.raises(ProbeSetError) as info:
        load_text(textwrap.dedent(text).lstrip("\n"), "p.yaml")
    assert info.value.exit_code == 2
    return [str(d) for d in info.value.diagnostics]


def probe(body: str) -> list[str]:
    """Diagnostics of one probe written at line 4, keys indented by 8."""
    head = "version: 1\nsets:\n  s:\n    probes:\n      - "
    lines = textwrap.dedent(body).strip("\n").splitlines()
    text = head + lines[0] + "\n" + "".join(f"        {line}\n" for line in lines[1:])
    with pytest.raises(ProbeSetError) as info:
        load_text(text, "p.yaml")
    return [str(d) for d in info.value.diagnostics]


# ---------------------------------------------------------------- file and sets


def test_top_level() -> None:
    assert errors("[1, 2]\n") == [
        "p.yaml:1:1: error: a probe-set file must be a mapping, not a list"
    ]
    assert errors("sets: {}\nverison: 1\n") == [
        "p.yaml:1:1: error: missing 'version'\n  hint: start the file with 'version: 1'",
        "p.yaml:1:7: error: 'sets' is empty\n  hint: define at least one set",
        "p.yaml:2:1: error: unknown key 'verison' in the file\n  hint: did you mean 'version'?",
    ]
    assert errors("version: 2\n") == [
        "p.yaml:1:1: error: missing 'sets'\n  hint: add 'sets:' with at least one named set",
        "p.yaml:1:10: error: unsupported probe-set version 2\n  hint: this instr reads version 1",
    ]
    assert errors("version: '1'\nsets: [a]\n") == [
        "p.yaml:1:10: error: 'version' must be the integer 1, not the string '1'",
        "p.yaml:2:7: error: 'sets' must be a mapping of set names, not a list",
    ]


def test_sets() -> None:
    assert errors(
        """
        version: 1
        sets:
          bad name:
            probes: [{function: f}]
          a:
            descripton: x
            probes: []
          b: 3
          c:
            description: 5
        """
    ) == [
        "p.yaml:3:3: error: invalid set name 'bad name'\n"
        "  hint: set names use letters, digits, '_', '.' and '-'",
        "p.yaml:6:5: error: unknown key 'descripton' in set 'a'\n  hint: did you mean 'description'?",
        "p.yaml:7:13: error: set 'a' has an empty 'probes' list",
        "p.yaml:8:6: error: set 'b' must be a mapping, not the integer 3",
        "p.yaml:9:3: error: set 'c' has no 'probes'\n  hint: add 'probes:' with a list of probes (or 'dtrace:' with a D program)",
        "p.yaml:10:18: error: 'description' must be a string, not the integer 5",
    ]


# ---------------------------------------------------------------- probe keys and points


def test_unknown_and_reserved_keys() -> None:
    assert probe(
        """
        function: f
        captur: {a: arg0}
        aggregate: {n: count()}
        timer: 1
        patch: {retval: 0}
        """
    ) == [
        "p.yaml:6:9: error: unknown key 'captur' in probe\n  hint: did you mean 'capture'?",
        "p.yaml:7:9: error: a probe with 'patch' cannot also 'aggregate'\n"
        "  hint: a patch probe records no events; trace the function with another probe",
        "p.yaml:8:9: error: timer points are not supported yet in version 1",
        "p.yaml:9:17: error: unknown key 'retval' in patch\n  hint: did you mean 'ret'?",
    ]


ACTIONS = (
    "('ret', 'skip', 'replace_c', 'replace_js', 'args', 'bytes', 'nop', 'signal' or 'copyout')"
)


def test_patch_actions() -> None:
    assert probe("function: f\npatch: [ret]\n") == [
        f"p.yaml:6:16: error: 'patch' must be a mapping with one action {ACTIONS}, "
        "not a list\n  hint: e.g. patch: {ret: 0}"
    ]
    assert probe("function: f\npatch: {ret: 1, skip: 2}\n") == [
        f"p.yaml:6:16: error: 'patch' takes one action {ACTIONS}, not 2\n"
        "  hint: write one probe per action: ret, skip"
    ]
    assert probe("function: f\npatch: {ret: 0x1ffffffffffffffff}\n") == [
        "p.yaml:6:22: error: 'patch: ret' must be between -9223372036854775808 and "
        "18446744073709551615, not 36893488147419103231"
    ]
    assert probe("syscall: read\npatch: {ret: 0}\n") == [
        "p.yaml:6:16: error: 'patch' needs a function, address or offset point"
    ]


def test_patch_parameters() -> None:
    assert probe("function: f\npatch: {replace_c: 'int g(void) { return 0; }', fn: 'g()'}\n") == [
        "p.yaml:6:61: error: 'fn' must be a C function name, not 'g()'"
    ]
    assert probe(
        "function: f\npatch: {replace_js: 'return 0;', returns: integer, params: [int, void]}\n"
    ) == [
        "p.yaml:6:51: error: unknown type 'integer' in 'returns'\n  hint: did you mean 'pointer'?",
        "p.yaml:6:74: error: a parameter cannot be 'void'",
    ]
    assert probe("function: f\npatch: {args: {arg0: 1, argv: 2, arg1: [3]}}\n") == [
        "p.yaml:6:33: error: 'argv' is not an argument: write arg0 .. arg15",
        "p.yaml:6:48: error: 'arg1' must be an integer, not a list",
    ]
    assert probe("function: f\npatch: {bytes: {expect: '90', new: '9090'}}\n") == [
        "p.yaml:6:24: error: 'expect' has 1 and 'new' 2 bytes: they must be the same length"
    ]
    assert probe("function: f\npatch: {signal: 0}\n") == [
        "p.yaml:6:25: error: 'patch: signal' must be between 1 and 64, not 0"
    ]
    assert probe("function: f\npatch: {copyout: {arg: 1}}\n") == [
        "p.yaml:6:26: error: 'patch: copyout' needs exactly the keys 'arg' and 'data'\n"
        '  hint: e.g. patch: {copyout: {arg: 1, data: "68690a00"}}'
    ]
    assert probe("function: f\npatch: {copyout: {arg: 16, data: '41'}}\n") == [
        "p.yaml:6:32: error: 'arg' must be between 0 and 15, not 16"
    ]
    assert probe("function: f\npatch: {nop: 2, fn: g}\n") == [
        "p.yaml:6:25: error: 'fn' does not apply to a 'nop' patch"
    ]


def test_patch_where_and_captures() -> None:
    assert probe("function: f\ncapture: {n: arg0}\nwhere: 'n > 1'\npatch: {nop: 2}\n") == [
        "p.yaml:7:16: error: 'where' cannot gate a 'nop' patch\n"
        "  hint: only 'ret', 'skip', 'args', 'signal' or 'copyout' patches decide per call"
    ]
    assert probe("function: f\ncapture: {r: retval}\nwhere: 'r > 1'\npatch: {skip: 2}\n") == [
        "p.yaml:7:16: error: a 'skip' patch decides before the call: "
        "its 'where' can only use entry captures"
    ]
    assert probe("function: f\ncapture: {n: arg0}\npatch: {ret: 2}\n") == [
        "p.yaml:6:19: error: a patch probe records no events: its captures are only for its "
        "'where'\n  hint: add a 'where', or trace the function with another probe"
    ]
    assert probe("function: f\non: exit\npatch: {ret: 2}\n") == [
        "p.yaml:6:9: error: a probe with 'patch' cannot also 'on'\n"
        "  hint: a patch probe records no events; trace the function with another probe"
    ]


def test_syscall_points() -> None:
    assert probe('syscall: [reed, "%fil", write]\n') == [
        "p.yaml:5:19: error: unknown system call 'reed'\n  hint: did you mean 'read'?",
        "p.yaml:5:25: error: unknown syscall category '%fil'\n  hint: did you mean '%file'?",
    ]
    assert probe(
        """
        syscall: [read, openat]
        capture: {a: fdd, b: "fd:pth", c: "count:path", d: "flags:raw"}
        on: [entry, exit]
        tier: js
        where: "a > 0"
        """
    ) == [
        "p.yaml:6:22: error: 'fdd' is not an argument of any of read, openat\n"
        "  hint: did you mean 'fd'?",
        "p.yaml:6:34: error: unknown form 'pth' for a syscall capture\n  hint: did you mean 'path'?",
        "p.yaml:6:50: error: ':path' needs an fd argument (or the fd a call returns)",
        "p.yaml:6:67: error: ':raw' needs a memory argument; 'flags' is a number",
        "p.yaml:7:13: error: syscall points have one event per call, at exit\n"
        "  hint: remove 'on', or write 'on: exit'",
        "p.yaml:8:15: error: 'tier' does not apply to syscall points",
    ]
    assert probe("syscall: read\naggregate: {n: count() by caller}\n") == [
        "p.yaml:6:35: error: 'caller' is not available at syscall points"
    ]
    assert probe("function: f\naggregate: {n: count() by syscall}\n") == [
        "p.yaml:6:21: error: the key 'syscall' needs a syscall point"
    ]


def test_points() -> None:
    assert probe("name: x\n") == [
        "p.yaml:5:9: error: probe has no point\n"
        "  hint: give one of 'function: MODULE!SYMBOL', 'address: 0x...', "
        "'offset: MODULE+0x...', 'syscall: [NAME, %CATEGORY, ...]' or 'profile: HZ'"
    ]
    assert probe("function: f\naddress: 0x10\n") == [
        "p.yaml:6:9: error: 'address' cannot be combined with 'function'\n"
        "  hint: a probe has exactly one point; write one probe per point"
    ]
    assert probe("function: 'libc!'\n") == [
        "p.yaml:5:19: error: 'libc!' has no symbol; write MODULE!SYMBOL or SYMBOL"
    ]
    assert probe("function: '!f'\nexclude: ['a!b!c']\n") == [
        "p.yaml:5:19: error: '!f' has an empty module; write MODULE!SYMBOL, or SYMBOL for any module",
        "p.yaml:6:19: error: 'a!b!c' has more than one '!'; write MODULE!SYMBOL",
    ]
    assert probe("address: 0x10\nexclude: x\n") == [
        "p.yaml:6:9: error: 'exclude' only applies to 'function' points"
    ]
    assert probe("address: zz\n") == [
        "p.yaml:5:18: error: invalid address 'zz'\n  hint: write it like 0x401000"
    ]
    assert probe("address: 0\n") == ["p.yaml:5:18: error: address 0x0 is out of range"]
    assert probe("offset: demo\n") == [
        "p.yaml:5:17: error: invalid offset 'demo'\n  hint: write MODULE+OFFSET, e.g. demo+0x1234"
    ]
    assert probe("offset: demo+0xZZ\n") == [
        "p.yaml:5:22: error: invalid offset '0xZZ'\n  hint: write it like 0x1234"
    ]


def test_value_types_and_choices() -> None:
    assert probe(
        """
        function: f
        name: a/b
        where: 3
        emit: false
        tier: nativ
        on: [entry, exti]
        max_sites: 0
        """
    ) == [
        "p.yaml:6:15: error: invalid probe name 'a/b'\n  hint: no '/', ',' or spaces",
        "p.yaml:7:16: error: 'where' must be a string, not the integer 3",
        "p.yaml:8:15: error: 'emit: false' without 'aggregate': this probe would do nothing\n"
        "  hint: add 'aggregate:', or remove 'emit: false'",
        "p.yaml:9:15: error: unknown tier 'nativ'\n  hint: did you mean 'native'?",
        "p.yaml:10:21: error: unknown phase 'exti'\n  hint: did you mean 'exit'?",
        "p.yaml:11:20: error: 'max_sites' must be between 1 and 1000000, not 0",
    ]
    assert probe("function: f\nemit: yes\non: []\n") == [
        "p.yaml:6:15: error: 'emit' must be true or false, not the string 'yes'",
        "p.yaml:7:13: error: 'on' is empty\n  hint: use on: entry, on: exit or on: [entry, exit]",
    ]


def test_duplicate_probe_names() -> None:
    assert errors(
        """
        version: 1
        sets:
          s:
            probes:
              - {function: f, name: x}
              - {function: g, name: x}
        """
    ) == ["p.yaml:6:29: error: duplicate probe name 'x' in set 's'\n  hint: the first is at line 5"]


# ---------------------------------------------------------------- captures


def test_capture_specs_point_into_the_string() -> None:
    assert probe(
        """
        function: f
        capture:
          a: arg0:u63
          b: "arg1:cstr(64)@exti"
          c: ret
          d: 5
          e: arg1:bytes(5000)
          tid: arg2
          2x: arg3
        """
    ) == [
        "p.yaml:7:19: error: unknown capture type 'u63'\n  hint: did you mean 'u64'?",
        "p.yaml:8:29: error: unknown phase 'exti' in capture 'b'\n  hint: did you mean 'exit'?",
        "p.yaml:9:14: error: unknown capture source 'ret'\n  hint: did you mean 'retval'?",
        "p.yaml:10:14: error: capture 'd' must be a spec string, not the integer 5\n"
        "  hint: e.g. 'arg0:u64', 'arg1:cstr', 'retval:i32', 'caller'",
        "p.yaml:11:25: error: bytes length must be between 1 and 4096, not 5000",
        "p.yaml:12:11: error: 'tid' is reserved and cannot name a capture",
        "p.yaml:13:11: error: invalid capture name '2x'\n"
        "  hint: capture names are identifiers: letters, digits and '_', not starting with a digit",
    ]


def test_capture_phases_against_on() -> None:
    assert probe(
        """
        function: f
        capture:
          size: arg0:u64
          rv: retval
          took: duration
          buf: arg1:bytes(arg2)@exit
        on: exit
        """
    ) == [
        "p.yaml:7:11: error: capture 'size' is taken at entry, but 'on' does not include entry\n"
        "  hint: add entry to 'on', or read it at exit with '@exit'",
        "p.yaml:9:11: error: capture 'took' needs the entry hook: "
        "a duration is measured from entry to exit\n  hint: add entry to 'on'",
        "p.yaml:10:11: error: capture 'buf' needs the entry hook: "
        "arguments read at exit are saved at entry\n  hint: add entry to 'on'",
    ]
    assert probe("function: f\ncapture: {rv: retval}\non: [entry]\n") == [
        "p.yaml:6:19: error: capture 'rv' is taken at exit, but 'on' does not include exit\n"
        "  hint: add exit to 'on'"
    ]


def test_native_tier_and_record_size() -> None:
    assert probe(
        """
        function: f
        capture: {p: arg0:cstr, bt: backtrace}
        where: "len(p) > 0"
        tier: native
        """
    ) == [
        "p.yaml:8:15: error: 'tier: native' cannot run "
        "len() in 'where' (len() of an unreadable string fails in JS)\n"
        "  hint: use 'tier: auto' (native when possible) or 'tier: js'"
    ]
    caps = ", ".join(f"c{i}: arg{i}:bytes(4096)" for i in range(16))
    assert probe(f"function: f\ncapture: {{{caps}}}\n") == [
        "p.yaml:5:9: error: the entry record of this probe can reach 65688 bytes; the limit is 65535\n"
        "  hint: lower the cstr/bytes lengths or the backtrace depth"
    ]


# ---------------------------------------------------------------- predicates


def test_predicate_errors_point_into_the_expression() -> None:
    assert probe(
        """
        function: f
        capture: {size: arg0:u64, path: arg1:cstr}
        where: "sise > 10 and path.upper() == 'X'"
        """
    ) == [
        "p.yaml:7:17: error: unknown name 'sise'\n  hint: did you mean 'size'?",
        "p.yaml:7:36: error: method 'upper' cannot be used in predicates\n"
        "  hint: the only methods are startswith() and endswith()",
    ]
    assert probe("function: f\nwhere: |\n  size >\n") == [
        "p.yaml:7:11: error: invalid predicate: invalid syntax",
    ]
    assert probe("function: f\nwhere: x > 1\n") == [
        "p.yaml:6:16: error: unknown name 'x'\n"
        "  hint: this probe captures nothing; add the value under 'capture:'"
    ]


def test_a_broken_capture_is_reported_once() -> None:
    assert probe(
        """
        function: f
        capture: {size: arg0:u63}
        where: "size > 1 and sise > 2"
        """
    ) == [
        "p.yaml:6:30: error: unknown capture type 'u63'\n  hint: did you mean 'u64'?",
        "p.yaml:7:30: error: unknown name 'sise'\n  hint: did you mean 'size'?",
    ]


def test_all_problems_are_reported_in_order() -> None:
    found = errors(
        """
        version: 1
        sets:
          a:
            probes:
              - function: f
                capture: {x: arg0:u63}
          b:
            probes:
              - function: g
                tier: fast
        """
    )
    assert found == [
        "p.yaml:6:27: error: unknown capture type 'u63'\n  hint: did you mean 'u64'?",
        "p.yaml:10:15: error: unknown tier 'fast'\n  hint: use 'auto', 'native' or 'js'",
    ]
