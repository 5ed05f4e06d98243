"""C strings and predicates in the native tier: the same events as the JS tier,
record for record, for good strings, NULL, truncation at N, bad pointers
(unmapped, PROT_NONE, non-canonical, running into a PROT_NONE page) and
integer predicates at the edges of 64 bits; the target survives every bad
pointer; exact counts from 4 threads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers import run_instr, start_instr, start_target
from jsonl import read_jsonl

pytestmark = pytest.mark.frida

CAPS = '{s: "arg0:cstr(16)", i: "arg1:i64", u: "arg2:u64", k: "arg3:i32"}'
# Each probe hooks the same function with another predicate; {tier} is forced.
WHERES = [
    None,
    "i % 2 == 0",
    's == "alpha" or s.startswith("abc") or s.endswith("ta") or "ph" in s',
    's != "alpha"',
    "u > 9223372036854775807 or k < -5 or (u & 0xff) == 3 or -k > 100",
    's in ("beta", "gamma", "") and not (i > 16)',
    "u >> 60 == 8 or k // 7 == -1 or k % 5 == 4 or (k ^ 3) == -2 or tid < 0",
    's.startswith("") and not s.endswith("") or s == "\\u00e9"',
]


def probe_set(tier: str) -> str:
    probes = []
    for n, where in enumerate(WHERES):
        probes.append(f'      - name: p{n}\n        function: "strings!target_sp"\n'
                      f"        capture: {CAPS}\n        tier: {tier}\n")  # fmt: skip
        if where is not None:
            probes[-1] += f"        where: '{where.replace(chr(39), chr(39) * 2)}'\n"
    # a short string taken at exit (the pointer kept from entry), with the return
    probes.append(f'      - name: at-exit\n        function: "strings!target_sp"\n'
                  f'        capture: {{s: "arg0:cstr(4)@exit", r: "retval:i64"}}\n'
                  f"        tier: {tier}\n")  # fmt: skip
    # an exit predicate over entry captures (a string too) and the return value:
    # the entry record waits for it (in C, in Gum's invocation data)
    probes.append(f'      - name: held\n        function: "strings!target_sp"\n'
                  f'        capture: {{s: "arg0:cstr(16)", k: "arg3:i32", r: "retval:i64"}}\n'
                  f"        where: 'r % 3 == 0 and s != \"beta\" or k < -100 and r > 1'\n"
                  f"        tier: {tier}\n")  # fmt: skip
    # bytes: a length from an argument (i: 0..18, so truncated at 8 from 9 on) and a
    # constant one, and a caller after them (its offset in the record moves with them)
    probes.append(f'      - name: bytes\n        function: "strings!target_sp"\n'
                  f'        capture: {{b: "arg0:bytes(arg1, 8)", c: "arg0:bytes(4)", i: arg1, who: caller}}\n'
                  f"        tier: {tier}\n")  # fmt: skip
    return "version: 1\nsets:\n  s:\n    probes:\n" + "".join(probes)


def comparable(events: list[dict[str, Any]]) -> dict[str, list[tuple[Any, ...]]]:
    """Per probe, in call order, what both tiers must agree on (not times,
    sequence numbers or thread ids)."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    for e in events:
        args = {  # addresses move with ASLR between the runs; symbols do not
            k: v["symbol"] if isinstance(v, dict) else v for k, v in (e.get("args") or {}).items()
        }
        rec = (e["phase"], args, e.get("args_status"), e.get("retval"))
        out.setdefault(e["probe"], []).append(rec)
    return out


def run_cases(targets, probe_file, tier: str, tmp_path: Path) -> list[dict[str, Any]]:
    out = tmp_path / f"{tier}.jsonl"
    probes = probe_file(probe_set(tier))
    res = run_instr("run", "-q", "-P", probes, "-s", "s", "-o", out,
                    "--", targets.path("strings"), "cases")  # fmt: skip
    # every bad pointer was survived: the program ran to its end and exited 0
    assert res.returncode == 0, res.stderr
    assert "cases=19 sum=171" in res.stdout
    events, summary = read_jsonl(out)
    assert {p["tier"] for p in summary["probes"]} == {tier}
    # several probes on one function: listeners, never replaceFast stubs
    assert not any("replaceFast" in (p["reason"] or "") for p in summary["probes"])
    assert summary["drops"] == 0
    assert summary["ending"]["reason"] == "exit"
    return events


def test_native_and_js_tiers_agree_record_for_record(targets, probe_file, tmp_path: Path):
    native = run_cases(targets, probe_file, "native", tmp_path)
    js = run_cases(targets, probe_file, "js", tmp_path)
    assert comparable(native) == comparable(js)
    check_bytes(native)
    held = [
        (e["phase"], e.get("retval", e["args"].get("k"))) for e in native if e["probe"] == "s/held"
    ]
    # r % 3 == 0, but 15 is "beta"; and k < -100 at 4 (INT32_MIN) and 7 (-101):
    # each an entry record and its exit record
    want = [i for i in range(19) if (i % 3 == 0 and i != 15) or i in (4, 7)]
    assert [r for ph, r in held if ph == "exit"] == want
    assert [ph for ph, _ in held] == ["entry", "exit"] * len(want)

    by_probe: dict[str, list[int]] = {f"p{n}": [] for n in range(len(WHERES))}
    all_args: dict[int, tuple[Any, Any]] = {}
    for e in native:
        name = e["probe"].split("/")[1]
        if name in ("at-exit", "bytes", "held"):
            continue
        by_probe.setdefault(name, []).append(e["args"]["i"])
        if name == "p0":
            all_args[e["args"]["i"]] = (e["args"]["s"], (e.get("args_status") or {}).get("s"))
    # what each string became, exactly
    assert all_args == {
        0: ("alpha", None),
        1: ("", None),
        2: (None, "null"),
        3: ("abcdefghijklmnop", None),  # exactly N bytes: whole
        4: ("abcdefghijklmnop", "truncated"),
        5: ("the quick brown ", "truncated"),
        6: (None, "unreadable"),  # address 16
        7: (None, "unreadable"),  # PROT_NONE
        8: (None, "unreadable"),  # unmapped
        9: ("xyz", "unreadable"),  # runs into a PROT_NONE page
        10: ("0123456789abcdef", "unreadable"),  # N bytes, then the fault on the N+1th
        11: ("ok", None),  # NUL on the readable page's last byte
        12: ("\\xe0\\x81\\x81lpha", None),
        13: ("\\xe2a", None),
        14: ("/etc/passwd", None),
        15: ("beta", None),
        16: (None, "unreadable"),  # not a canonical address
        17: ("gamma", None),
        18: ("ph", None),
    }
    assert by_probe == {
        "p0": list(range(19)),
        "p1": list(range(0, 19, 2)),
        # startswith("abc") 3, 4; endswith("ta") 15; "ph" in: 0, 12 (the text after
        # the overlong form), 18
        "p2": [0, 3, 4, 12, 15, 18],
        # None != "alpha" is true
        "p3": list(range(1, 19)),
        # u > 2**63 - 1: 4, 5; k < -5: 4, 6, 7, 18; u & 0xff == 3: 3, 7; -k > 100: 4, 7
        "p4": [3, 4, 5, 6, 7, 18],
        # "gamma" is 17, but 17 > 16
        "p5": [1, 15],
        # u >> 60 == 8: 5; k // 7 == -1: 1, 2, 6; k % 5 == 4: 1, 6, 7, 12, 17
        "p6": [1, 2, 5, 6, 7, 12, 17],
        "p7": [],
    }
    exits = sorted(
        (e["retval"], e["args"]["s"])
        for e in native
        if e["probe"] == "s/at-exit" and e["phase"] == "exit"
    )
    assert exits[:4] == [(0, "alph"), (1, ""), (2, None), (3, "abcd")]
    assert len(exits) == 19


def check_bytes(events: list[dict[str, Any]]) -> None:
    got = {
        e["args"]["i"]: (e["args"]["b"], e["args"]["c"], e.get("args_status") or {})
        for e in events
        if e["probe"] == "s/bytes"
    }
    assert len(got) == 19
    assert got[0] == ("", "616c7068", {})  # no bytes asked; "alph"
    # "": its NUL, and 4 bytes of .rodata from there (readable, whatever they are)
    assert (got[1][0], len(got[1][1]), got[1][2]) == ("00", 8, {})
    assert got[2] == (None, None, {"b": "null", "c": "null"})
    assert got[6] == (None, None, {"b": "unreadable", "c": "unreadable"})
    assert got[9] == ("78797a", "78797a", {"b": "unreadable", "c": "unreadable"})
    assert got[14] == ("2f6574632f706173", "2f657463", {"b": "truncated"})
    assert got[16] == (None, None, {"b": "unreadable", "c": "unreadable"})
    whos = {e["args"]["who"]["symbol"] for e in events if e["probe"] == "s/bytes"}
    assert len(whos) == 1 and next(iter(whos)).startswith("strings!run_cases+"), whos


def test_four_threads_exact_counts_with_strings(targets, probe_file, tmp_path: Path):
    n, t = 100_000, 4
    text = (
        "version: 1\nsets:\n  s:\n    probes:\n"
        '      - function: "strings!target_sp"\n'
        '        capture: {s: "arg0:cstr(16)", j: "arg1:i64", t: "arg2:u64"}\n'
        "        where: 'j % 2 == 0 and s != \"beta\"'\n"
        "        tier: native\n"
    )
    out = tmp_path / "threads.jsonl"
    res = run_instr("run", "-q", "-P", probe_file(text), "-s", "s", "-o", out,
                    "--", targets.path("strings"), "threads", n, t, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert f"total={n * t}" in res.stdout
    tids = {}
    for line in res.stdout.splitlines():
        if line.startswith("thread="):
            f = dict(kv.split("=") for kv in line.split())
            tids[int(f["tid"])] = int(f["thread"])
    events, summary = read_jsonl(out)
    assert summary["drops"] == 0 and summary["lost_batches"] == 0
    # alone on a function that starts with straight-line code: no listener
    assert "no listener at 1 of 1 site(s): replaceFast" in summary["probes"][0]["reason"]
    names = ["alpha", "beta", "a-name-longer-than-sixteen", "gamma"]
    got: dict[int, list[tuple[int, str | None]]] = {w: [] for w in range(t)}
    for e in events:
        w = tids[e["tid"]]
        assert e["args"]["t"] == w
        got[w].append((e["args"]["j"], e["args"]["s"]))
    for w in range(t):
        want = [
            (j, names[(w + j) & 3][:16]) for j in range(0, n, 2) if names[(w + j) & 3] != "beta"
        ]
        assert got[w] == want, w


def test_leaving_while_threads_call_through_entry_stubs(targets, probe_file, tmp_path: Path):
    """--duration leaves an attached program while 4 threads call the replaced
    function: it is reverted under them and they run on to the end, with no
    hook. (Attached, not spawned: a spawned program is ended with the run.)"""
    k, t = 30_000_000, 4
    text = (
        "version: 1\nsets:\n  s:\n    probes:\n"
        '      - function: "strings!target_sp"\n'
        '        capture: {s: "arg0:cstr(16)", j: "arg1:i64"}\n'
        "        where: 'j % 1000 == 0'\n"
    )
    out = tmp_path / "leave.jsonl"
    with start_target(targets.path("strings"), "threads", k, t) as prog:
        instr = start_instr("run", "-P", probe_file(text), "-s", "s", "-o", out,
                            "--duration", 1, "-p", prog.pid)  # fmt: skip
        with instr:
            instr.wait_armed()
            prog.go()
            res = instr.finish(timeout=120)
        assert res.returncode == 0, res.err
        # the program, unhooked, finishes every call on its own
        done = prog.finish(timeout=300)
    assert done.returncode == 0, done.err
    assert f"total={k * t}" in done.out, done.out[-300:]
    events, summary = read_jsonl(out)
    # the leave came in the middle: the hook was reverted under the threads
    assert 0 < len(events) < k * t // 1000
    assert "replaceFast" in summary["probes"][0]["reason"]
    # Unhooked, the rest of its calls take a fraction of a second: it often
    # ends while Frida detaches, and instr says so (its own status is above).
    ending = summary["ending"]
    if ending["reason"] == "lost":
        assert ending["signal"] == "the target ended while Frida's agent left it", ending
    else:
        assert ending["reason"] in ("detach", "exit") and ending["code"] in (None, 0), ending
