"""`self->` variables under threads: set at a function's entry, read at its return.

instr pairs them in the hook (instr/dtrace/pairing.py): the return clause becomes a
probe with both hooks, so the aggregations stay in the target and are exact under
four threads of 100,000 calls each (tests/targets/threads.c: thread t calls
target_work(t, k) for k in [0, K), which returns t * 1000000 + k).
"""

from __future__ import annotations

from pathlib import Path

from helpers import Targets, run_instr

K, T = 100_000, 4

PROGRAM = """
pid$target::target_work:entry { self->t = arg0; self->k = arg1; self->ts = timestamp; }
pid$target::target_work:return /self->ts/ { @calls = count(); @lat = quantize(timestamp - self->ts); self->ts = 0; }
pid$target::target_work:return /retval == self->t * 1000000 + self->k/ { @ok[self->t] = count(); @ks[self->t] = sum(self->k); }
pid$target::target_work:return /retval != self->t * 1000000 + self->k/ { @bad = count(); }
END { printa(@calls); printa(@ok); printa(@ks); printa(@bad); }
"""


def test_self_pairs_entry_and_return_under_four_threads(targets: Targets, tmp_path: Path) -> None:
    out = tmp_path / "d.out"
    prog = targets.path("threads")
    res = run_instr("dtrace", "-q", "-o", out, "-n", PROGRAM, "-c", f"{prog} {K} {T}", timeout=300)
    assert res.returncode == 0, res.stderr
    text = out.read_text()
    printed = (
        f"\n{T * K:>17}\n"
        + "\n" + "".join(f"{t:>17}{K:>17}\n" for t in range(T))
        + "\n" + "".join(f"{t:>17}{K * (K - 1) // 2:>17}\n" for t in range(T))
        + "\n"  # @bad: empty, no call saw another call's entry values
    )  # fmt: skip
    assert text.startswith(printed)
    # then the latency histogram (printed at the end, not by END) holds every call
    hist = text[len(printed) :].splitlines()
    assert hist[0] == "" and "Distribution" in hist[1]
    assert sum(int(line.rsplit(" ", 1)[1]) for line in hist[2:] if "|" in line) == T * K


def test_self_set_elsewhere_runs_on_the_host(targets: Targets, tmp_path: Path) -> None:
    """A self-> variable read in a clause of another function is kept per thread on the
    host, from the events (not paired): it still means the thread's last value."""
    out = tmp_path / "d.out"
    prog = targets.path("oneliners")
    res = run_instr(
        "dtrace", "-q", "-o", out, "-c", f"{prog} 6", "-n",
        "pid$target::ol_add:entry { self->last = arg0; } "
        'pid$target::ol_neg:entry { printf("%d %d\\n", arg0, self->last); }',
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert out.read_text() == "0 0\n3 3\n"
