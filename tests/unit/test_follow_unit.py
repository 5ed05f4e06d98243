"""-F on the host, without Frida: the dispatcher's sources (one per process
image) and the merge of their aggregation snapshots (docs/follow.md)."""

from __future__ import annotations

from instr.aggregate.merge import merge_snapshots
from instr.aggregate.model import AggRow, AggSnapshot, AggTable, Bucket
from instr.collectors.encode import encode_record
from instr.dispatch import Dispatcher
from instr.events import Ending, Event, ProcessEnding, RunContext, RunInfo, RunSummary
from instr.probes.ir import Capture, FunctionPoint, Probe, ProbeTable
from instr.protocol import PROTOCOL_VERSION

WAIT = 10.0


def _table() -> ProbeTable:
    t = ProbeTable()
    t.add(Probe(1, "s/one", FunctionPoint("x", "f"), (Capture("n", "arg", "u64"),), None))
    return t


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.snaps: list[AggSnapshot] = []
        self.closed: list[RunSummary] = []

    def open(self, ctx: RunContext, info: RunInfo) -> None:
        pass

    def on_events(self, events: list[Event]) -> None:
        self.events += events

    def on_aggregations(self, snap: AggSnapshot) -> None:
        self.snaps.append(snap)

    def close(self, summary: RunSummary) -> None:
        self.closed.append(summary)


def _batch(seq: int, n: int, drops: int = 0) -> tuple[dict, bytes]:
    data = b"".join(encode_record(1, 0, [i]) for i in range(n))
    env = {"v": PROTOCOL_VERSION, "type": "batch", "seq": seq, "records": n, "drops": {"1": drops}}
    return {"type": "send", "payload": env}, data


def _sources(d: Dispatcher) -> None:
    d.follow = True
    d.add_source(0, 100, None, "root")
    d.add_source(1, 101, 100, "fork")
    d.add_source(2, 100, 100, "exec")


def test_each_source_has_its_own_batch_numbers_drops_pid_and_ending() -> None:
    rec = Recorder()
    acks: list[int] = []
    d = Dispatcher(RunContext(_table()), [rec], on_ending=lambda e, tok: acks.append(tok))
    d.on_ending = lambda e, tok: acks.append(d.source * 100 + tok)  # which agent is acked
    _sources(d)
    for source, seqs in ((0, (1, 2)), (1, (1, 2, 3)), (2, (1,))):
        for seq in seqs:
            d.post(*_batch(seq, 2, drops=seq), source)
    ending = {"v": PROTOCOL_VERSION, "type": "ending", "token": 7}
    d.post({"type": "send", "payload": {**ending, "reason": "exec"}}, None, 0)
    d.post({"type": "send", "payload": {**ending, "reason": "exit", "code": 10}}, None, 1)
    d.post({"type": "send", "payload": {**ending, "reason": "exit", "code": 4}}, None, 2)
    summary = d.close(None)
    assert summary.lost_batches == 0 and summary.errors == []  # seq 1 again is no loss
    assert summary.drops == 2 + 3 + 1  # the last cumulative count of each agent, added
    assert [e.pid for e in rec.events] == [100] * 4 + [101] * 6 + [100] * 2
    assert [e.seq for e in rec.events] == list(range(1, 13))
    assert acks == [7, 107, 207]
    assert summary.ending == Ending("exit", code=4)  # the root's last image
    assert summary.processes == [
        ProcessEnding(100, None, "root", Ending("exec")),
        ProcessEnding(101, 100, "fork", Ending("exit", code=10)),
        ProcessEnding(100, 100, "exec", Ending("exit", code=4)),
    ]


def test_a_gap_in_one_source_is_a_loss_of_that_pid() -> None:
    d = Dispatcher(RunContext(_table()))
    _sources(d)
    d.post(*_batch(1, 1), 0)
    d.post(*_batch(3, 1), 1)
    summary = d.close(None)
    assert summary.lost_batches == 2
    assert summary.errors == ["pid 101: lost 2 batches (seq 1-2)"]


def test_an_image_ended_without_its_agent_saying_keeps_the_first_reason() -> None:
    d = Dispatcher(RunContext(_table()))
    _sources(d)
    d.source_ended(1, Ending("killed"))
    d.source_ended(1, Ending("detach"))
    summary = d.close(None)
    assert [p.ending for p in summary.processes] == [None, Ending("killed"), None]
    assert summary.processes[1].describe() == "pid 101 (forked by 100): was killed"
    assert summary.processes[0].describe() == "pid 100 (the program): still running"


def _t(name: str, func: str, rows: tuple[AggRow, ...], overflow: int = 0) -> AggTable:
    keys = ("pid",) if rows and rows[0].keys else ()
    return AggTable(name, "s/p", func, "v", keys, rows, overflow, 16)  # type: ignore[arg-type]


def test_snapshots_of_the_processes_merge_into_one_table_each() -> None:
    a = AggSnapshot(5, 3, True, (
        _t("s/by", "count", (AggRow((100,), 1000),)),
        _t("s/sum", "sum", (AggRow((), 10, total=45),), overflow=1),
        _t("s/q", "quantize", (AggRow((), 3, buckets=(Bucket(0, 1, 1), Bucket(1, 2, 2))),)),
        _t("s/min", "min", (AggRow((), 2, min=-3),)),
    ))  # fmt: skip
    b = AggSnapshot(9, 1, True, (
        _t("s/by", "count", (AggRow((101,), 1000),)),
        _t("s/sum", "sum", (AggRow((), 5, total=10),), overflow=2),
        _t("s/q", "quantize", (AggRow((), 2, buckets=(Bucket(1, 2, 1), Bucket(4, 8, 1))),)),
        _t("s/min", "min", (AggRow((), 1, min=-7),)),
    ))  # fmt: skip
    m = merge_snapshots([a, b], seq=4, final=True)
    assert (m.ts_ns, m.seq, m.final) == (9, 4, True)
    by = {t.name: t for t in m.tables}
    assert list(by) == ["s/by", "s/sum", "s/q", "s/min"]
    assert by["s/by"].rows == (AggRow((100,), 1000), AggRow((101,), 1000))
    assert by["s/sum"].rows == (AggRow((), 15, total=55),) and by["s/sum"].overflow == 3
    assert by["s/q"].rows == (
        AggRow((), 5, buckets=(Bucket(0, 1, 1), Bucket(1, 2, 3), Bucket(4, 8, 1))),
    )
    assert by["s/min"].rows[0].min == -7 and by["s/min"].rows[0].count == 3


def test_the_merged_final_snapshot_goes_out_once_at_the_close() -> None:
    rec = Recorder()
    table = _table()
    d = Dispatcher(RunContext(table), [rec])
    _sources(d)
    snap = {"v": PROTOCOL_VERSION, "type": "aggs", "seq": 0, "final": True, "tables": []}
    for source in (0, 1, 2):
        d.post({"type": "send", "payload": snap}, b"", source)
    assert d.drain(WAIT)
    assert rec.snaps == []  # not one report per process
    d.close(None)
    assert [s.final for s in rec.snaps] == [True]


def test_a_live_snapshot_is_merged_when_the_session_has_asked_every_image() -> None:
    rec = Recorder()
    d = Dispatcher(RunContext(_table()), [rec])
    _sources(d)
    snap = {"v": PROTOCOL_VERSION, "type": "aggs", "seq": 0, "final": False, "tables": []}
    for source in (1, 0):
        d.post({"type": "send", "payload": snap}, b"", source)
    assert d.drain(WAIT)
    assert rec.snaps == []
    d.post({"v": PROTOCOL_VERSION, "type": "merge-aggs"}, None)
    assert d.drain(WAIT)
    assert [(s.seq, s.final) for s in rec.snaps] == [(0, False)]
    d.close(None)
    assert [(s.seq, s.final) for s in rec.snaps] == [(0, False), (1, True)]


def test_resuming_a_child_the_stop_killed_is_not_an_error() -> None:
    """A child still being armed when the run stops is killed with the tree;
    Frida's resume then says "invalid PID": the adopting thread must not die
    with a traceback (seen with instr dtrace -F and exit() at a tick)."""
    import frida

    from instr.follow import Children

    class Device:
        def __init__(self) -> None:
            self.asked: list[int] = []

        def resume(self, pid: int) -> None:
            self.asked.append(pid)
            raise frida.InvalidArgumentError("invalid PID")

    class Proc:
        device = Device()

    kids = Children(Proc(), print, print, print, print, print)  # type: ignore[arg-type]
    kids._resume(4321)
    assert Proc.device.asked == [4321]
