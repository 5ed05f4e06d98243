"""instr profile's host side without a target: folded stacks, the top table, the SVG,
the .eh_frame reader (on a target gcc built) and the sample decoder."""

from __future__ import annotations

import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest

from instr.profile.ehframe import RA, EhFrame
from instr.profile.model import FoldedError, Profile, demangle, parse_folded, render_top, top
from instr.profile.svg import render_svg
from instr.profile.unwind import SLOT_HEADER, ModuleSpan, Sample, Unwinder, decode_samples

SVG = "{http://www.w3.org/2000/svg}"
STACKS: Counter[tuple[str, ...]] = Counter(
    {
        ("main", "hot_a"): 60,
        ("main", "hot_b"): 20,
        ("main", "recurse", "recurse", "leaf<int>"): 15,
        ("main", "recurse", "leaf<int>"): 5,
    }
)


def test_folded_round_trip() -> None:
    text = Profile(STACKS).folded()
    assert text.splitlines()[0] == "main;hot_a 60"
    assert parse_folded(text) == STACKS
    assert Profile(parse_folded(text)).folded() == text


@pytest.mark.parametrize("bad", ["main;hot_a", "main;hot_a x", " 12", "main;hot_a -1"])
def test_folded_parser_refuses_malformed_lines(bad: str) -> None:
    with pytest.raises(FoldedError, match="line 2"):
        parse_folded("main 1\n" + bad + "\n")


def test_top_self_and_total() -> None:
    rows = {r.name: (r.self_samples, r.total_samples) for r in top(STACKS)}
    assert rows == {
        "hot_a": (60, 60),
        "hot_b": (20, 20),
        "leaf<int>": (20, 20),
        "recurse": (0, 20),  # counted once per sample however deep
        "main": (0, 100),
    }
    table = render_top(STACKS, 2).splitlines()
    assert table == [
        "  SELF%  TOTAL%  SAMPLES  FUNCTION",
        "   60.0    60.0       60  hot_a",
        "   20.0    20.0       20  hot_b",
    ]


def test_svg_is_xml_with_one_titled_rectangle_per_frame() -> None:
    root = ET.fromstring(render_svg(STACKS, title="t <&>"))
    frames = root.findall(f"{SVG}g")
    titles = sorted((g.find(f"{SVG}title").text or "") for g in frames)  # type: ignore[union-attr]
    assert titles == sorted(
        [
            "all (100 samples, 100.00%)",
            "main (100 samples, 100.00%)",
            "hot_a (60 samples, 60.00%)",
            "hot_b (20 samples, 20.00%)",
            "recurse (20 samples, 20.00%)",
            "recurse (15 samples, 15.00%)",
            "leaf<int> (15 samples, 15.00%)",
            "leaf<int> (5 samples, 5.00%)",
        ]
    )
    widths = {
        (g.find(f"{SVG}title").text or "").split(" (")[0]: float(
            g.find(f"{SVG}rect").get("width", 0)
        )  # type: ignore[union-attr]
        for g in frames
        if g.get("data-name") in ("hot_a", "hot_b")
    }
    assert widths["hot_a"] == pytest.approx(3 * widths["hot_b"], rel=1e-3)
    assert root.find(f"{SVG}script") is not None


def test_demangle_with_cxxfilt() -> None:
    got = demangle(["_ZN3foo3barEi", "plain", "_ZN3foo3barEi"])
    want = "foo::bar(int)" if shutil.which("c++filt") else "_ZN3foo3barEi"  # without it: as is
    assert got == {"_ZN3foo3barEi": want}


def _symbols(path: Path) -> dict[str, tuple[int, int]]:
    out = subprocess.run(["nm", "-S", path], capture_output=True, text=True, check=True).stdout
    syms = {}
    for line in out.splitlines():
        f = line.split()
        if len(f) == 4 and f[2] in "tT":
            syms[f[3]] = (int(f[0], 16), int(f[1], 16))
    return syms


def _eh_frame_of_file(path: Path) -> EhFrame:
    """What the agent's unwindInfo sends, built from the file (link-time addresses)."""
    data = path.read_bytes()
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    loads, hdr = [], None
    for i in range(phnum):
        p_type, _fl, off, vaddr, _pa, filesz, _memsz = struct.unpack_from(
            "<IIQQQQQ", data, phoff + i * phentsize
        )
        if p_type == 1:
            loads.append((vaddr, off, filesz))
        elif p_type == 0x6474E550:
            hdr = vaddr
    assert hdr is not None
    vaddr, off, size = next(seg for seg in loads if seg[0] <= hdr < seg[0] + seg[2])
    return EhFrame(data[off : off + size], vaddr, hdr)


def test_eh_frame_rows_of_a_gcc_built_target(targets) -> None:
    path = targets.path("profile_split", pie=True)
    eh = _eh_frame_of_file(path)
    syms = _symbols(path)
    for name in ("hot_a", "hot_b", "leaf_work", "recurse", "main"):
        start, size = syms[name]
        row = eh.row(start)
        assert row is not None and (row.cfa_reg, row.cfa_off) == (7, 8), name  # rsp + 8
        assert row.rules[RA] == ("off", -8), name
    # recurse keeps one 8-byte slot (sub $8, %rsp; no frame pointer): CFA = rsp + 16 in its body
    start, size = syms["recurse"]
    offsets = {eh.row(pc).cfa_off for pc in range(start, start + size)}  # type: ignore[union-attr]
    assert offsets == {8, 16}
    assert eh.row(0) is None


def test_unwinding_a_made_up_recursion(targets) -> None:
    """leaf_work interrupted at entry, under 3 frames of recurse and main: the
    return addresses are placed where the CFI says each frame keeps them."""
    path = targets.path("profile_split", pie=True)
    eh = _eh_frame_of_file(path)
    syms = _symbols(path)
    code = path.read_bytes()
    base = 0x5555_0000_0000
    r_start, r_size = syms["recurse"]
    calls = [  # return addresses after each call instruction (e8) inside recurse
        pc + 5 for pc in range(r_start, r_start + r_size - 4) if code[pc] == 0xE8
    ]
    to_recurse, to_leaf = calls[0], calls[1]  # recurse calls itself first, then leaf_work
    sp = 0x7FFF_0000_1000
    stack = b""
    # leaf_work at its entry: [ret into recurse] then recurse's slot, and so on
    for ret in (to_leaf, to_recurse, to_recurse):
        stack += struct.pack("<QQ", base + ret, 0)
    stack += struct.pack("<Q", 0)  # main's return address: 0 ends the walk
    regs = dict.fromkeys(range(17), 0)
    regs[7], regs[16] = sp, base + syms["leaf_work"][0]

    def info(b: int) -> bytes:
        hdr = struct.pack("<QQQQ", base, base + eh.seg, base + eh.hdr, 0)
        return hdr + eh.data

    # The blob's addresses are the file's: shift them by the load base.
    unwinder = Unwinder(lambda: [ModuleSpan("profile_split", str(path), base, 1 << 20)], info)
    shifted = EhFrame(eh.data, base + eh.seg, base + eh.hdr)
    unwinder._cfi[base] = shifted
    walk = unwinder.walk(Sample(1, 0, regs, stack))
    assert [a - base for a in walk.frames] == [
        syms["leaf_work"][0],
        to_leaf - 1,
        to_recurse - 1,
        to_recurse - 1,
    ]
    assert walk.complete


def test_decode_samples_round_trip() -> None:
    regs = list(range(100, 117))
    stack = bytes(range(24))
    slot = struct.pack("<QQQ17QQ", 1, 4242, 123456789, *regs, len(stack)) + stack
    assert len(slot) == SLOT_HEADER + len(stack)
    (s,) = list(decode_samples(slot, 1))
    assert (s.tid, s.ts_ns, s.stack) == (4242, 123456789, stack)
    assert s.regs[16] == 116 and s.regs[7] == 115 and s.regs[6] == 110  # rip, rsp, rbp
    with pytest.raises(ValueError, match="truncated"):
        list(decode_samples(slot[:100], 1))
