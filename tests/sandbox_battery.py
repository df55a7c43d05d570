"""Runs hostile programs through the sandbox and prints their outcomes as JSON; started by
tests/test_sandbox.py as root and as an ordinary user, with the system interpreter and a copy of
`pipeline/sandbox` (the test user cannot read the project's virtual environment).

    python3 sandbox_battery.py SANDBOX_COPY < programs.json > outcomes.json
"""

import json
import sys

sys.path.insert(0, sys.argv[1])
from sandbox.pool import Limits, run_many  # noqa: E402

programs = json.load(sys.stdin)
limits = Limits(wall_s=8, cpu_s=3)
outcomes = run_many(list(programs.values()), limits, workers=2)
json.dump({name: [o.status, o.reason] for name, o in zip(programs, outcomes, strict=True)}, sys.stdout)
