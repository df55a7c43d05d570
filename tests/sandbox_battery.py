"""Runs hostile programs through the sandbox and prints their outcomes as JSON; started by
tests/test_sandbox.py as root and as an ordinary user, with the system interpreter and a copy of
`pipeline/sandbox` (the test user cannot read the project's virtual environment).

    python3 sandbox_battery.py SANDBOX_COPY < programs.json > outcomes.json
"""

import json
import sys

sys.path.insert(0, sys.argv[1])
from sandbox.pool import Limits, run_many  # noqa: E402

# Attempts to get out run two at a time; resource hogs one at a time, so that each one's own
# limit is what stops it (a fork bomb's churn would otherwise starve its neighbour of CPU).
batches = json.load(sys.stdin)
limits = Limits(wall_s=8, cpu_s=3)
found = {}
for workers, programs in ((2, batches["escapes"]), (1, batches["hogs"])):
    outcomes = run_many(list(programs.values()), limits, workers=workers)
    found.update({name: [o.status, o.reason] for name, o in zip(programs, outcomes, strict=True)})
json.dump(found, sys.stdout)
