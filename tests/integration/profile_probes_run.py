"""Run a probe set's profile probes on a Session attached to PID (the Python API),
in a process of its own as ``instr`` runs; print the tables as JSON on stdout.

    python profile_probes_run.py SETS.yaml SET PID

Prints "armed ..." on stderr once the sampler runs; stops when stdin closes.
"""

from __future__ import annotations

import json
import sys

from instr import Session
from instr.probes import load_file


def main() -> None:
    path, name, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
    table = load_file(path).compile([name])
    with Session.attach(pid, table, stream=False) as session:
        session.start()  # the session arms the sampler for the table's profile probes
        points = session.profile
        reports = [(r.name, r.state, r.sites) for r in session.reports]
        print(f"armed at {points.hz} Hz: {json.dumps(reports)}", file=sys.stderr, flush=True)
        sys.stdin.read()
    snapshot = session.aggregations
    assert snapshot is not None
    tables = [
        {"name": t.name, "tier": t.tier, "key_names": t.key_names,
         "rows": [[list(r.keys), r.count] for r in t.rows]}
        for t in snapshot.tables
    ]  # fmt: skip
    print(json.dumps({"samples": points.samples, "drops": points.drops, "tables": tables}))


if __name__ == "__main__":
    main()
