"""The published JSON Schema agrees with the compiler on what a valid file is."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

jsonschema = pytest.importorskip("jsonschema")

from instr.errors import ProbeSetError  # noqa: E402
from instr.probes import load_text  # noqa: E402
from instr.probes.captures import ALIASES, TYPE_NAMES  # noqa: E402
from instr.probes.diag import Diagnostics  # noqa: E402
from instr.probes.ir import INT_TYPES  # noqa: E402
from instr.probes.loader import parse_yaml, to_data  # noqa: E402
from instr.schema import PROBES_SCHEMA, probes_schema  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def data(text: str) -> Any:
    node = parse_yaml(textwrap.dedent(text).lstrip("\n"), "t.yaml", Diagnostics())
    assert node is not None
    return to_data(node)


def validator() -> Any:
    schema = probes_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def doc(probe: str) -> str:
    return "version: 1\nsets:\n  s:\n    probes:\n      - " + probe + "\n"


def test_schema_is_packaged_next_to_the_code() -> None:
    assert PROBES_SCHEMA.parent == REPO / "instr" / "schema"
    assert probes_schema()["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_accepts_the_repo_probes_yaml() -> None:
    text = (REPO / "probes.yaml").read_text()
    errors = list(validator().iter_errors(data(text)))
    assert errors == []


GOOD = [
    "{function: f}",
    "{function: 'libc.so*!malloc', exclude: 'libc.so*!__*'}",
    "{function: '*!open*', exclude: ['a!b', c], max_sites: 3}",
    "{address: 0x401000, on: exit}",
    "{address: '0x401000'}",
    "{offset: 'libstdc++.so.6+0x10', tier: js}",
    "{function: f, on: [entry, exit], emit: true, where: 'n > 1', capture: {n: arg0}}",
    "{function: f, capture: {a: 'arg0:char*(32)', b: 'arg1:bytes(arg2, 64)@exit', c: 'retval:ssize_t'}}",
    "{function: f, capture: {a: caller, b: backtrace(8), c: duration, d: 'arg3 : u8 @ entry'}}",
    "{function: f, capture: {n: arg0}, aggregate: {s: 'sum(n) by caller', q: 'quantize(n)'}}",
    "{function: f, emit: false, max_keys: 10, aggregate: {c: 'count() by tid'}}",
    "{syscall: read}",
    "{syscall: all, aggregate: {c: 'count() by syscall'}}",
    "{syscall: [read, '%network'], on: exit, capture: {f: 'fd:path', n: retval, e: 'errno:str'}}",
    "{syscall: openat, capture: {p: filename, fl: 'flags:str'}, where: 'len(p) > 0'}",
    "{syscall: [write], capture: {b: 'buf:raw', t: duration}, aggregate: {s: 'sum(t) by fd'}}",
    "{function: f, patch: {ret: 0}}",
    "{function: f, capture: {n: arg0}, where: 'n == 7', patch: {ret: -1}}",
    "{address: 0x401000, patch: {skip: 18446744073709551615}}",
    "{function: f, patch: {replace_c: 'int replacement(void) { return 1; }'}}",
    "{function: f, patch: {replace_c: 'int g(int x) { return x; }', fn: g}}",
    "{function: f, patch: {replace_js: 'return original(a0) + 1;', returns: int, params: [int]}}",
    "{function: f, patch: {replace_js: 'return 0;'}}",
    "{function: f, capture: {n: arg0}, where: 'n > 1', patch: {args: {arg0: 1, arg2: hi}}}",
    "{offset: 'demo+0x1139', patch: {bytes: {expect: 'b82a000000', new: 'b801 000000'}}}",
    "{address: 0x401000, patch: {nop: 2}}",
    "{function: f, patch: {nop: 1, expect: '90'}}",
]

BAD = [
    "{name: x}",  # no point
    "{function: f, address: 1}",  # two points
    "{address: 0x10, exclude: x}",  # exclude without function
    "{function: f, aggregate: {n: 5}}",  # not a spec string
    "{function: f, aggregate: {n: 'total(x)'}}",  # unknown function
    "{function: f, captur: {}}",  # unknown key
    "{function: f, capture: {a: 'arg0:u63'}}",  # unknown type
    "{function: f, capture: {a: 'retval:cstr'}}",  # retval as a string
    "{function: f, capture: {a: 'caller@exit'}}",  # caller only at entry
    "{function: f, capture: {tid: arg0}}",  # reserved capture name
    "{function: f, capture: {a: 5}}",  # spec is not a string
    "{function: f, tier: fast}",
    "{function: f, on: [entry, entry]}",
    "{function: f, on: []}",
    "{function: f, emit: false}",
    "{function: f, where: 3}",
    "{function: 'a!b!c'}",
    "{function: '!f'}",
    "{offset: demo}",
    "{function: f, name: 'a/b'}",
    "{syscall: reed}",  # unknown syscall
    "{syscall: '%fil'}",  # unknown category
    "{syscall: []}",
    "{syscall: read, function: f}",  # two points
    "{syscall: read, on: entry}",  # syscall points emit at exit
    "{syscall: read, tier: js}",
    "{syscall: read, capture: {f: 'fd:pth'}}",  # unknown form
    "{syscall: read, exclude: x}",
    "{function: f, patch: {ret: abc}}",  # not an integer
    "{function: f, patch: {ret: 1, skip: 2}}",  # one action
    "{function: f, patch: {retval: 0}}",  # unknown action
    "{function: f, patch: {}}",
    "{function: f, patch: 0}",
    "{function: f, patch: {ret: 18446744073709551616}}",  # over 64 bits
    "{syscall: read, patch: {ret: 0}}",  # not a function
    "{function: f, aggregate: {c: 'count()'}, patch: {ret: 0}}",
    "{function: f, emit: true, patch: {ret: 0}}",
    "{function: f, on: exit, patch: {ret: 0}}",
    "{function: f, patch: {replace_c: ''}}",
    "{function: f, patch: {replace_c: 'int g(void){return 0;}', fn: '1g'}}",
    "{function: f, patch: {ret: 0, fn: g}}",  # fn belongs to replace_c
    "{function: f, patch: {replace_js: 'return 0;', returns: integer}}",
    "{function: f, patch: {replace_js: 'return 0;', params: [void]}}",
    "{function: f, patch: {replace_js: 'return 0;', params: int}}",
    "{function: f, patch: {args: {}}}",
    "{function: f, patch: {args: {argv: 1}}}",
    "{function: f, patch: {args: {arg16: 1}}}",
    "{function: f, patch: {args: [1]}}",
    "{function: f, patch: {bytes: {expect: '90'}}}",
    "{function: f, patch: {bytes: {expect: '9', new: '90'}}}",
    "{function: f, patch: {bytes: 'b801000000'}}",
    "{function: f, patch: {nop: 0}}",
    "{function: f, patch: {nop: 65}}",
    "{function: f, patch: {nop: 1, expect: 'zz'}}",
    "{function: f, capture: {n: arg0}, where: 'n > 1', patch: {replace_c: 'int replacement(void){return 0;}'}}",
    "{function: f, capture: {n: arg0}, where: 'n > 1', patch: {nop: 1}}",
]


@pytest.mark.parametrize("probe", GOOD)
def test_both_accept(probe: str) -> None:
    assert list(validator().iter_errors(data(doc(probe)))) == []
    load_text(doc(probe), "t.yaml")


@pytest.mark.parametrize("probe", BAD)
def test_both_reject(probe: str) -> None:
    assert list(validator().iter_errors(data(doc(probe)))) != []
    with pytest.raises(ProbeSetError):
        load_text(doc(probe), "t.yaml")


@pytest.mark.parametrize(
    "text",
    [
        "sets: {s: {probes: [{function: f}]}}\n",  # no version
        "version: 2\nsets: {s: {probes: [{function: f}]}}\n",
        "version: 1\nsets: {}\n",
        "version: 1\nsets: {s: {probes: []}}\n",
        "version: 1\nsets: {s: {description: x}}\n",
        "version: 1\nsets: {'bad name': {probes: [{function: f}]}}\n",
        "version: 1\nsets: {s: {probes: [{function: f}]}}\nextra: 1\n",
    ],
)
def test_both_reject_files(text: str) -> None:
    assert list(validator().iter_errors(data(text))) != []
    with pytest.raises(ProbeSetError):
        load_text(text, "t.yaml")


def test_every_capture_type_is_in_the_schema() -> None:
    v = validator()
    for name in TYPE_NAMES:
        canonical = ALIASES.get(name, name)
        spec = {"bytes": f"arg0:{name}(8)"}.get(canonical, f"arg0:{name}")
        assert v.is_valid(data(doc(f"{{function: f, capture: {{a: '{spec}'}}}}"))), spec
        retval = f"retval:{name}"
        ok = v.is_valid(data(doc(f"{{function: f, capture: {{a: '{retval}'}}}}")))
        assert ok == (canonical in INT_TYPES), retval
