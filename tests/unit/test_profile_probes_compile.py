"""Profile probes in probe sets (``profile: 99``): the compiled IR, and every
problem reported at its file:line:col."""

from __future__ import annotations

from test_probes_diagnostics import probe

from instr.probes import load_text
from instr.probes.ir import AggKey, ProfilePoint

SETS = """\
version: 1
sets:
  cpu:
    probes:
      - profile: 99
        aggregate:
          stacks: count() by backtrace
          top: count() by backtrace(5), tid
          leaf: count() by probefunc, module
      - profile: "hz:997"
        name: fast
        max_keys: 10
        aggregate:
          n: count() by pid, execname
"""


def test_the_ir_of_profile_probes() -> None:
    table = load_text(SETS, "p.yaml").compile(["cpu"])
    slow, fast = table.profile_probes()
    assert (slow.name, slow.point, fast.name, fast.point) == (
        "cpu/profile-99", ProfilePoint(99), "cpu/fast", ProfilePoint(997)
    )  # fmt: skip
    assert (slow.emit, slow.entry, slow.exit, slow.agg_tier) == (False, None, None, "host")
    assert [(a.name, a.func, a.arg, a.keys) for a in slow.aggregations] == [
        ("stacks", "count", None, (AggKey("backtrace", "backtrace", depth=1024),)),
        ("top", "count", None, (AggKey("backtrace", "backtrace", depth=5), AggKey("tid", "tid"))),
        ("leaf", "count", None, (AggKey("probefunc", "probefunc"), AggKey("module", "module"))),
    ]  # fmt: skip
    assert [(a.keys, a.max_keys) for a in fast.aggregations] == [
        ((AggKey("pid", "pid"), AggKey("execname", "execname")), 10)
    ]
    # the probe agent arms none of them: the sampler takes the samples
    assert table.plan()["probes"] == []


def test_profile_probe_errors() -> None:
    assert probe("profile: 0\naggregate: {n: count()}\n") == [
        "p.yaml:5:18: error: 'profile' must be between 1 and 5000 Hz, not 0"
    ]
    assert probe("profile: fast\naggregate: {n: count()}\n") == [
        "p.yaml:5:18: error: 'profile' must be a rate in Hz, not the string 'fast'\n"
        "  hint: e.g. profile: 99 (samples a second of each thread's CPU time)"
    ]
    assert probe("profile: 99\n") == [
        "p.yaml:5:9: error: a profile probe needs 'aggregate'\n"
        "  hint: samples are counted into aggregations: e.g. stacks: count() by backtrace"
    ]
    assert probe("profile: 99\nwhere: 'tid == 1'\ncapture: {n: arg0}\naggregate: {n: count()}\n") == [
        "p.yaml:6:9: error: a profile probe cannot have 'where'\n"
        "  hint: profile probes take every sample; key the aggregation by tid to tell threads apart",
        "p.yaml:7:9: error: a profile probe cannot have 'capture'\n"
        "  hint: a sample has no arguments or return value to capture",
    ]  # fmt: skip
    assert probe("profile: 99\naggregate: {n: sum(tid)}\n") == [
        "p.yaml:6:24: error: a profile probe counts samples: its aggregations use count()\n"
        "  hint: e.g. stacks: count() by backtrace"
    ]
    assert probe("profile: 99\naggregate: {n: count() by size}\n") == [
        "p.yaml:6:35: error: 'size' has no value in a profile probe\n"
        "  hint: keys here: 'backtrace', 'probefunc', 'module', 'tid', 'pid' or 'execname', "
        "backtrace(N)"
    ]
    assert probe("profile: 99\naggregate: {n: count() by backtrace(2000)}\n") == [
        "p.yaml:6:35: error: backtrace()'s depth must be from 1 to 1024, not 2000"
    ]
    assert probe("profile: 99\nfunction: f\naggregate: {n: count()}\n") == [
        "p.yaml:5:9: error: 'profile' cannot be combined with 'function'\n"
        "  hint: a probe has exactly one point; write one probe per point"
    ]


def test_the_published_schema_takes_them() -> None:
    import json
    from pathlib import Path

    import jsonschema
    import yaml

    import instr

    schema = json.loads((Path(instr.__file__).parent / "schema/probes.schema.json").read_text())
    jsonschema.validate(yaml.safe_load(SETS), schema)
    bad = yaml.safe_load(SETS.replace("profile: 99", "profile: 0"))
    assert not jsonschema.Draft202012Validator(schema).is_valid(bad)
