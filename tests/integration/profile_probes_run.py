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
from instr.profile.probes import ProfilePoints


def main() -> None:
    path, name, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
    table = load_file(path).compile([name])
    with Session.attach(pid, table, stream=False) as session:
        points = ProfilePoints(table.profile_probes(), lambda: session.rpc)
        session.tap("profile", points.post)
        session.start()
        reports = [(r.name, r.state, r.sites) for r in points.arm(pid)]
        print(f"armed at {points.hz} Hz: {json.dumps(reports)}", file=sys.stderr, flush=True)
        sys.stdin.read()
        points.finish()
    tables = [
        {"name": t.name, "tier": t.tier, "key_names": t.key_names,
         "rows": [[list(r.keys), r.count] for r in t.rows]}
        for t in points.tables()
    ]  # fmt: skip
    print(json.dumps({"samples": points.samples, "drops": points.drops, "tables": tables}))


if __name__ == "__main__":
    main()
