"""The Prometheus exposition of aggregation snapshots (instr.aggregate.prometheus),
read back with the official client's parser; and the metrics sink's handling of
the snapshots a scrape asks for (instr.metrics), without Frida."""

from __future__ import annotations

import io
import threading
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from instr.aggregate.model import AggRow, AggSnapshot, AggTable, Bucket
from instr.aggregate.prometheus import (
    RunFigures,
    escape_label,
    exposition,
    label_name,
    metric_name,
)
from instr.collectors.console import ConsoleCollector
from instr.collectors.failure import output_name
from instr.errors import InstrError
from instr.events import RunInfo, RunSummary
from instr.metrics import Endpoint, Gated, MetricsServer, MetricsSink, parse_address

RUN = RunFigures(pid=77, command="demo", events=12, drops=3, seq=4, age_s=0.5)


def table(name: str, func: str, keys: tuple[str, ...], rows: tuple[AggRow, ...]) -> AggTable:
    return AggTable(name, "set/probe", func, "size" if func != "count" else None, keys, rows, 2, 64)  # type: ignore[arg-type]


def families(text: str) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (s.name, s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples
    ]


def test_names_and_labels_are_cut_to_the_format():
    assert metric_name("cli/bytes") == "instr_cli_bytes"
    assert metric_name("@lat.by-fn") == "instr_lat_by_fn"
    assert metric_name("@") == "instr_agg"
    assert metric_name("a:b") == "instr_a:b"
    assert label_name("arg0") == "arg0"
    assert label_name("0x") == "key_0x"
    assert label_name("__name") == "name"
    assert label_name("ustack()") == "ustack"
    assert label_name("") == "key"


def test_label_values_are_escaped_and_parse_back():
    assert escape_label('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    odd = 'say "hi"\\n\nnext'
    rows = (AggRow((odd, ("f!leaf", "f!main")), 3),)
    text = exposition((table("s/calls", "count", ("what", "stack"), rows),), RUN)
    got = [s for s in samples(text) if s[0] == "instr_s_calls_total"]
    assert got == [("instr_s_calls_total", {"what": odd, "stack": "f!leaf;f!main", "pid": "77"}, 3)]


def test_types_and_values():
    tables = (
        table("s/n", "count", ("tid",), (AggRow((7,), 5), AggRow((8,), 2))),
        table("s/bytes", "sum", (), (AggRow((), 3, total=-40),)),
        table("s/lo", "min", (), (AggRow((), 3, min=-9),)),
        table("s/hi", "max", (), (AggRow((), 3, max=1 << 70),)),
        table("s/mean", "avg", (), (AggRow((), 4, total=10),)),
        table("s/none", "max", (), (AggRow((), 0),)),  # no update yet: no sample
    )
    text = exposition(tables, RUN)
    fams = families(text)
    assert {n: f.type for n, f in fams.items() if n.startswith("instr_s_")} == {  # type: ignore[attr-defined]
        "instr_s_n": "counter",
        "instr_s_bytes": "gauge",
        "instr_s_lo": "gauge",
        "instr_s_hi": "gauge",
        "instr_s_mean": "gauge",
        "instr_s_none": "gauge",
    }
    got = {(n, tuple(sorted(lab.items()))): v for n, lab, v in samples(text)}
    pid = (("pid", "77"),)
    assert got[("instr_s_n_total", (("pid", "77"), ("tid", "7")))] == 5
    assert got[("instr_s_n_total", (("pid", "77"), ("tid", "8")))] == 2
    assert got[("instr_s_bytes", pid)] == -40
    assert got[("instr_s_lo", pid)] == -9
    assert got[("instr_s_hi", pid)] == float(1 << 70)
    assert got[("instr_s_mean", pid)] == 2.5
    assert 'instr_s_hi{pid="77"} 1180591620717411303424\n' in text  # exact, not a float
    assert not [n for n, _, _ in samples(text) if n == "instr_s_none"]
    assert got[("instr_events_total", pid)] == 12
    assert got[("instr_drops_total", pid)] == 3
    assert got[("instr_run_info", (("command", "demo"), ("pid", "77")))] == 1
    assert got[("instr_aggregation_overflow_total", (("aggregation", "s/n"), ("pid", "77")))] == 2
    assert got[("instr_snapshot_seq", pid)] == 4
    assert got[("instr_snapshot_age_seconds", pid)] == 0.5


def test_histogram_buckets_are_cumulative_and_end_in_inf():
    # quantize: [-3,-1) 1, [0,1) 2, [4,8) 3, and lquantize-style open ends
    a = AggRow(("x",), 6, buckets=(Bucket(-3, -1, 1), Bucket(0, 1, 2), Bucket(4, 8, 3)))
    b = AggRow(("y",), 5, buckets=(Bucket(None, 0, 1), Bucket(2, 4, 1), Bucket(100, None, 3)))
    text = exposition((table("s/lat", "quantize", ("fn",), (a, b)),), RUN)
    fam = families(text)["instr_s_lat"]
    assert fam.type == "histogram"  # type: ignore[attr-defined]
    for row, want in (
        ("x", [("-2", 1), ("-1", 1), ("0", 3), ("3", 3), ("7", 6), ("+Inf", 6)]),
        ("y", [("-2", 0), ("-1", 1), ("0", 1), ("3", 2), ("7", 2), ("+Inf", 5)]),
    ):
        buckets = [
            (lab["le"], v)
            for n, lab, v in samples(text)
            if n == "instr_s_lat_bucket" and lab["fn"] == row
        ]
        assert [(le, int(v)) for le, v in buckets] == want  # every row: the same bounds
        counts = [v for n, lab, v in samples(text) if n == "instr_s_lat_count" and lab["fn"] == row]
        assert counts == [want[-1][1]]
    assert "instr_s_lat_sum" not in text  # the target keeps no sum for histograms


def test_a_key_named_le_or_pid():
    rows = (AggRow((1, 2, 3), 1, buckets=(Bucket(0, 1, 1),)),)
    text = exposition((table("s/h", "quantize", ("le", "pid", "le"), rows),), RUN)
    got = [lab for n, lab, _ in samples(text) if n == "instr_s_h_count"]
    assert got == [{"key_le": "1", "pid": "2", "key_le_2": "3"}]  # the key's pid, not the run's


def test_names_taken_twice_get_a_number():
    rows = (AggRow((), 1),)
    tables = (
        table("a/x_total", "count", (), rows),
        table("a/x", "count", (), rows),
        table("a.x", "count", (), rows),
    )
    names = [n for n, _, _ in samples(exposition(tables, RUN)) if n.startswith("instr_a_")]
    assert names == ["instr_a_x_total_total", "instr_a_x_2_total", "instr_a_x_3_total"]


def test_before_the_first_snapshot():
    text = exposition((), RunFigures(None, "demo"))
    assert [n for n, _, _ in samples(text)] == [
        "instr_run_info",
        "instr_events_total",
        "instr_drops_total",
    ]


@pytest.mark.parametrize(
    ("value", "want"),
    [
        ("9100", ("127.0.0.1", 9100)),
        (":9100", ("127.0.0.1", 9100)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("localhost:65535", ("localhost", 65535)),
        ("[::1]:9100", ("::1", 9100)),
    ],
)
def test_addresses(value, want):
    assert parse_address(value) == want


@pytest.mark.parametrize("value", ["", "host:", "x:65536", "::1:9100", "a b:1", "h:-1", "h:p"])
def test_bad_addresses(value):
    with pytest.raises(ValueError):
        parse_address(value)


def snap(seq: int, final: bool, n: int) -> AggSnapshot:
    return AggSnapshot(seq, seq, final, (table("s/n", "count", (), (AggRow((), n),)),))


class Recorder:
    def __init__(self) -> None:
        self.seen: list[int] = []

    def open(self, ctx, info) -> None:
        pass

    def on_events(self, events) -> None:
        pass

    def on_aggregations(self, snapshot: AggSnapshot) -> None:
        self.seen.append(snapshot.seq)

    def close(self, summary) -> None:
        pass


def test_a_scrape_gets_a_fresh_snapshot_the_other_outputs_do_not_see():
    sink = MetricsSink(fresh=True)
    other = Recorder()
    gated = Gated(other, sink)
    sink.open(None, RunInfo(0, "local", 77, ("/bin/demo",), "cli", ()))  # type: ignore[arg-type]
    calls = iter(range(1, 100))

    def request() -> None:  # the agent answers on the dispatcher's thread
        s = snap(next(calls), False, 10)

        def deliver() -> None:
            sink.on_aggregations(s)
            gated.on_aggregations(s)

        threading.Thread(target=deliver).start()

    sink.bind(request, lambda: (5, 1))
    text = sink.render()
    got = {n: v for n, _, v in samples(text)}
    assert got["instr_s_n_total"] == 10 and got["instr_snapshot_seq"] == 1
    assert got["instr_events_total"] == 5 and got["instr_drops_total"] == 1
    assert 'command="demo"' in text
    for s in (snap(2, True, 11),):  # the final one: everyone
        sink.on_aggregations(s)
        gated.on_aggregations(s)
    assert other.seen == [2]
    sink.close(RunSummary(0, 0, 0, [], None, [], 0))
    text = sink.render()  # no more asking: the final values
    assert {n: v for n, _, v in samples(text)}["instr_s_n_total"] == 11


def test_with_interval_a_scrape_serves_the_latest():
    sink = MetricsSink(fresh=False)
    other = Recorder()
    gated = Gated(other, sink)
    asked: list[int] = []
    sink.bind(lambda: asked.append(1), lambda: (0, 0))
    for s in (snap(0, False, 3), snap(1, False, 4)):
        sink.on_aggregations(s)
        gated.on_aggregations(s)
    assert {n: v for n, _, v in samples(sink.render())}["instr_s_n_total"] == 4
    assert asked == [] and other.seen == [0, 1]


def test_server_serves_metrics_and_refuses_a_port_in_use():
    sink = MetricsSink(fresh=False)
    server = MetricsServer(("127.0.0.1", 0), sink)
    server.start()
    try:
        with urllib.request.urlopen(server.url, timeout=10) as r:
            assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
            assert "instr_run_info" in r.read().decode()
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(server.url.replace("/metrics", "/other"), timeout=10)
        assert e.value.code == 404
        port = int(server.url.rsplit(":", 1)[1].split("/")[0])
        with pytest.raises(InstrError, match=f"cannot serve metrics on 127.0.0.1:{port}: "):
            MetricsServer(("127.0.0.1", port), MetricsSink(fresh=False))
    finally:
        server.stop()


def test_a_scrapes_snapshot_that_comes_after_the_final_one_changes_nothing(monkeypatch):
    monkeypatch.setattr("instr.metrics.FRESH_WAIT_S", 0.01)
    sink = MetricsSink(fresh=True)
    other = Recorder()
    gated = Gated(other, sink)
    sink.bind(lambda: None, lambda: (0, 0))  # asked; the answer comes late
    assert "instr_snapshot_seq" not in sink.render()  # nothing yet: the run's figures only
    for s in (snap(3, True, 9), snap(4, False, 99)):
        sink.on_aggregations(s)
        gated.on_aggregations(s)
    assert other.seen == [3]
    sink.stop_asking()
    assert {n: v for n, _, v in samples(sink.render())}["instr_s_n_total"] == 9


def test_no_asking_once_the_target_has_ended():
    sink = MetricsSink(fresh=True)
    asked: list[int] = []
    sink.bind(lambda: asked.append(1), lambda: (0, 0), alive=lambda: False)
    sink.on_aggregations(snap(0, False, 1))
    assert {n: v for n, _, v in samples(sink.render())}["instr_s_n_total"] == 1
    assert asked == []


def test_a_gated_output_keeps_its_name_and_its_ways():
    sink = MetricsSink(fresh=True)
    console = Gated(ConsoleCollector(io.StringIO()), sink)
    assert output_name(console) == "console"
    assert console.watch_pipe is not None  # the dispatcher's getattr reaches the console's
    assert output_name(Gated(Recorder(), sink)) == "Recorder"


class _Probe:
    def __init__(self, aggregations: tuple[str, ...], is_profile: bool = False) -> None:
        self.aggregations = aggregations
        self.is_profile = is_profile


class _Session:
    """What Endpoint.bind reads of a session."""

    def __init__(self, *probes: _Probe) -> None:
        self.table = probes
        self.asked = 0
        self.progress = (10, 0)
        self.ended = False

    def snapshot(self) -> None:
        self.asked += 1


@pytest.mark.parametrize(
    ("probes", "asks"),
    [
        ((_Probe(()),), False),  # events only: no snapshot would come
        ((_Probe(("n",), is_profile=True),), False),  # profile counts come at the end
        ((_Probe(()), _Probe(("n",))), True),
    ],
)
def test_only_a_run_with_tables_is_asked(monkeypatch, probes, asks):
    monkeypatch.setattr("instr.metrics.FRESH_WAIT_S", 0.01)
    sink = MetricsSink(fresh=True)
    server = MetricsServer(("127.0.0.1", 0), sink)
    try:
        endpoint = Endpoint(sink, server)
        session = _Session(*probes)
        endpoint.bind(session)
        text = sink.render()
        assert session.asked == (1 if asks else 0)
        assert 'instr_events_total{pid="77"} 10' not in text  # no pid before open
        assert "instr_events_total 10" in text
    finally:
        server.stop()
