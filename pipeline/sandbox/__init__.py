"""Running untrusted Python (teacher-written exercises, student-written HumanEval answers).

`isolation` builds the bubblewrap sandbox and says why one cannot be had; `forkserver` is the
program that runs inside it, forking one child per program; `pool` is the host side: workers,
limits, outcomes. Standard library only (and `trainers/process_group.py`, which is too), so it runs
under any interpreter and any user.
"""
