"""The sandbox against hostile programs, as root and as an ordinary user, checked from outside;
HumanEval's own solutions through it; the error when a machine cannot isolate."""

import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import polars as pl
import pytest

from pipeline.curation.curate import curate
from pipeline.curation.exercises import exercise_parts
from pipeline.exam.data import read_humaneval
from pipeline.sandbox import isolation
from pipeline.sandbox.isolation import SandboxUnavailable, check_isolation
from pipeline.sandbox.pool import Limits, run_many, run_python
from pipeline.settings import CurationSettings

ROOT = Path(__file__).resolve().parents[1]
FAST = Limits(wall_s=5, cpu_s=2)
TEST_USER = "schoolhouse-sandbox-test"


def test_a_correct_program_passes_and_a_wrong_one_fails():
    assert run_python("import math\nassert math.gcd(12, 18) == 6", FAST).passed
    outcome = run_python("assert 1 + 1 == 3", FAST)
    assert outcome.status == "failed" and "AssertionError" in outcome.reason


@pytest.mark.parametrize(
    "source, statuses, reason",
    [
        ("while True:\n    pass", {"timeout"}, "CPU time"),
        ("import time\ntime.sleep(60)", {"timeout"}, "wall time"),
        ("import os\nos._exit(0)", {"failed"}, "exited before the tests finished"),
        ("import sys\nsys.exit(0)", {"failed"}, "exited before the tests finished"),
        ("raise SystemExit", {"failed"}, "exited before the tests finished"),
        ("import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=1)", {"failed"}, "Connection refused"),
        ("x = bytearray(8 << 30)", {"crashed"}, "memory"),
        ("while True:\n    print('x' * 10000)", {"failed"}, "File too large"),
        # a fork bomb meets the process limit; its survivors are killed at the wall time at the latest
        ("import os\nwhile True:\n    os.fork()", {"failed", "timeout"}, ""),
        ("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)", {"crashed"}, "brought down its sandbox"),
    ],
)
def test_hostile_programs_are_rejected_with_the_right_reason(source, statuses, reason):
    outcome = run_python(source, FAST)
    assert outcome.status in statuses, outcome
    assert reason in outcome.reason, outcome


def test_writing_inside_its_own_folder_and_tmp_is_allowed_and_private():
    source = (
        "import os\nopen('scratch.txt', 'w').write('ok')\nassert open('scratch.txt').read() == 'ok'\n"
        "open('/tmp/scratch.txt', 'w').write('ok')\nassert os.getcwd().startswith('/sandbox/')"
    )
    before = set(os.listdir(tempfile.gettempdir()))
    assert run_python(source, FAST).passed
    assert "scratch.txt" not in os.listdir(tempfile.gettempdir())
    assert set(os.listdir(tempfile.gettempdir())) - before == set()


def test_nothing_of_one_program_reaches_the_next():
    first = "import os\nopen('/tmp/left.txt', 'w').write('x')\nopen('left.txt', 'w').write('x')\n"
    first += "os.system('sleep 60 &')"
    second = (
        "import os\nassert not os.path.exists('/tmp/left.txt') and not os.path.exists('../program-0')\n"
        "assert [p for p in os.listdir('/proc') if p.isdigit() and int(p) > 2] == [str(os.getpid())]"
    )
    outcomes = run_many([first, second], FAST, workers=1)
    assert [o.status for o in outcomes] == ["passed", "passed"], outcomes


def test_the_environment_is_empty(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    source = "import os\nassert 'HF_TOKEN' not in os.environ and os.environ['HOME'] == '/sandbox'"
    assert run_python(source, FAST).passed


def test_programs_run_concurrently_one_sandbox_per_worker():
    started = time.monotonic()
    outcomes = run_many(["import time\ntime.sleep(1)"] * 4, Limits(), workers=2)
    assert all(o.passed for o in outcomes)
    assert 1.9 < time.monotonic() - started < 3.5  # two at a time: two rounds of one second


def test_humaneval_reference_solutions_pass_and_stubs_fail():
    problems = read_humaneval()[:24]
    right = [f"{p.prompt}{p.canonical_solution}\n\n{p.test}\n\ncheck({p.entry_point})\n" for p in problems]
    wrong = [f"{p.prompt}    return None\n\n{p.test}\n\ncheck({p.entry_point})\n" for p in problems]
    assert all(o.passed for o in run_many(right, Limits()))
    assert not any(o.passed for o in run_many(wrong, Limits()))


def test_exercise_format_is_split_into_solution_and_tests():
    text = (
        "### Function\n```python\ndef double(x):\n    return 2 * x\n```\n\n"
        "### Tests\n```python\nassert double(2) == 4\n```\n"
    )
    solution, tests = exercise_parts(text)
    assert "def double" in solution and "assert double(2) == 4" in tests
    assert exercise_parts("no code here") is None
    assert exercise_parts("```python\ndef f():\n    pass\n```") is None  # no tests


# --- the hostile battery, as root and as an ordinary user, checked from outside -------------------


def hostile_programs(outside: str, home: str, port: int, victim: int, secret_file: str, parent_hint: str) -> dict:
    connect_c = (
        "import ctypes, socket, struct\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "fd = libc.socket(2, 1, 0)\n"
        f"addr = struct.pack('<HH4s8x', 2, socket.htons({port}), socket.inet_aton('127.0.0.1'))\n"
        "assert libc.connect(fd, addr, 16) == 0, ctypes.get_errno()"
    )
    return {
        "write via open": f"open({outside!r} + '/open.txt', 'w').write('x')",
        "write into home": f"open({home!r} + '/schoolhouse-sandbox.txt', 'w').write('x')",
        "write via os.system": f"import os\nassert os.system('echo x > {outside}/system.txt') == 0",
        "write via subprocess": (
            f"import subprocess\nsubprocess.run(['sh', '-c', 'echo x > {outside}/subprocess.txt'], check=True)"
        ),
        "write via ctypes": (
            "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            f"fd = libc.open({outside!r}.encode() + b'/ctypes.txt', os.O_WRONLY | os.O_CREAT, 0o666)\n"
            "assert fd >= 0, ctypes.get_errno()"
        ),
        "write via a hard link": f"import os\nos.link({outside!r} + '/victim.txt', 'l')\nopen('l', 'a').write('x')",
        "write into /var/tmp": "open('/var/tmp/schoolhouse-sandbox.txt', 'w').write('x')",
        "write into /dev/shm": "open('/dev/shm/schoolhouse-sandbox.txt', 'w').write('x')",
        "tcp from python": f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)",
        "tcp from a child": (
            "import subprocess\nsubprocess.run(['python3', '-c', 'import socket; "
            f"socket.create_connection((\"127.0.0.1\", {port}), timeout=2)'], check=True)"
        ),
        "tcp through ctypes": connect_c,
        "tcp through bash": (
            f"import subprocess\nsubprocess.run(['bash', '-c', 'echo hi > /dev/tcp/127.0.0.1/{port}'], check=True)"
        ),
        "signal to a process of the user": f"import os, signal\nos.kill({victim}, signal.SIGKILL)",
        "read a 0600 file of the user": f"print(open({secret_file!r}).read())",
        "read the parent's environment": (
            "import os\nfound = b''\n"
            "for p in os.listdir('/proc'):\n"
            "    if p.isdigit():\n"
            "        try:\n            found += open(f'/proc/{p}/environ', 'rb').read()\n"
            "        except OSError:\n            pass\n"
            f"assert {parent_hint.encode()!r} in found, 'no secret in any environment'"
        ),
        "fork bomb": "import os\nwhile True:\n    os.fork()",
        "memory hog": "x = bytearray(8 << 30)",
        "infinite loop": "while True:\n    pass",
        "output flood": "while True:\n    print('x' * 10000)",
        "exit 0 half-way": "import os\nos._exit(0)",
        "sys.exit(0) half-way": "import sys\nsys.exit(0)",
    }


class Listener:
    """A TCP listener on 127.0.0.1 that counts the connections it accepts."""

    def __init__(self):
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            self.accepted += 1
            connection.close()


def ordinary_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/usr/sbin/nologin", TEST_USER], check=True)
        return pwd.getpwnam(TEST_USER)


def sandbox_processes() -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"The program that runs inside a sandbox" in cmdline or cmdline.startswith(b"bwrap\0"):
            found.append(entry.name)
    return found


@pytest.mark.parametrize("who", ["root", "ordinary user"])
def test_the_hostile_battery_is_held_and_leaves_no_trace(who, tmp_path):
    if who == "root" and os.geteuid() != 0:
        pytest.skip("only root can run the battery as root")
    if who == "root":
        account = pwd.getpwuid(0)
    else:  # CI runs as root, so the test makes the user; an ordinary user runs it as themselves
        account = ordinary_user() if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())
    uid, gid, home = account.pw_uid, account.pw_gid, account.pw_dir
    # Everything the battery's user reads lies in a folder it can enter (not the project's venv).
    shared = Path(tempfile.mkdtemp(prefix="schoolhouse-battery-"))
    try:
        shared.chmod(0o755)
        for package in ("pipeline/sandbox", "trainers"):  # the sandbox and the process helpers it uses
            shutil.copytree(ROOT / package, shared / Path(package).name, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(ROOT / "tests" / "sandbox_battery.py", shared / "battery.py")
        outside = shared / "outside"
        outside.mkdir(mode=0o777)
        outside.chmod(0o777)
        (outside / "victim.txt").write_text("keep me")
        (outside / "victim.txt").chmod(0o666)
        secret_value = secrets.token_hex(8)
        secret_file = outside / "secret.txt"
        secret_file.write_text(f"secret {secret_value}")
        secret_file.chmod(0o600)
        for path in (outside, outside / "victim.txt", secret_file):  # the user's own files
            os.chown(path, uid, gid)
        victim = subprocess.Popen(["sleep", "300"], user=uid, group=gid)
        listener = Listener()
        env_secret = f"hf_{secrets.token_hex(12)}"
        programs = hostile_programs(str(outside), home, listener.port, victim.pid, str(secret_file), env_secret)
        hogs = ("fork bomb", "memory hog", "infinite loop", "output flood")
        batches = {"escapes": {k: v for k, v in programs.items() if k not in hogs},
                   "hogs": {k: v for k, v in programs.items() if k in hogs}}  # fmt: skip
        run = subprocess.run(
            ["/usr/bin/python3", "-I", str(shared / "battery.py"), str(shared)], input=json.dumps(batches),
            capture_output=True, text=True, timeout=600, user=uid, group=gid,
            extra_groups=[] if os.geteuid() == 0 else None,
            env={"PATH": "/usr/bin:/bin", "HOME": home, "HF_TOKEN": env_secret}, cwd=str(shared),
        )  # fmt: skip
        assert run.returncode == 0, run.stderr[-3000:]
        outcomes = json.loads(run.stdout)

        # Each attempt is held, with a reason; none passed. (/dev/shm is the sandbox's own tmpfs:
        # a write there may succeed, and is checked below to leave nothing on the host.)
        for name, (status, reason) in outcomes.items():
            if name == "write into /dev/shm":
                continue
            assert status != "passed", f"{who}: '{name}' was not held"
            assert reason, f"{who}: '{name}' was held without a reason"
        assert outcomes["exit 0 half-way"][1] == "exited before the tests finished"
        assert outcomes["memory hog"] == ["crashed", "memory limit"]
        assert outcomes["infinite loop"][0] == "timeout"
        assert "File too large" in outcomes["output flood"][1]
        assert "ProcessLookupError" in outcomes["signal to a process of the user"][1]

        # And from outside: nothing written, nothing reached, nothing killed, nothing read, nothing left.
        assert sorted(p.name for p in outside.iterdir()) == ["secret.txt", "victim.txt"]
        assert (outside / "victim.txt").read_text() == "keep me"
        assert not Path(home, "schoolhouse-sandbox.txt").exists()
        assert not Path("/var/tmp/schoolhouse-sandbox.txt").exists()
        assert not Path("/dev/shm/schoolhouse-sandbox.txt").exists()
        assert listener.accepted == 0
        assert victim.poll() is None, "the sandbox killed a process of its user"
        everything = json.dumps(outcomes)
        assert secret_value not in everything and env_secret not in everything
        time.sleep(0.5)
        assert sandbox_processes() == [], "a sandbox outlived its run"
    finally:
        if "victim" in locals():
            victim.kill()
            victim.wait()
        shutil.rmtree(shared, ignore_errors=True)


# --- no silent downgrade -------------------------------------------------------------------------

CODE_ROW = (
    '### Function\n```python\ndef double(x: int) -> int:\n    """Twice x."""\n    return 2 * x\n```\n\n'
    "### Tests\n```python\nassert double(2) == 4\n```\n"
)


@pytest.fixture
def no_isolation(monkeypatch, tmp_path):
    """A machine whose bwrap cannot make namespaces (as with user namespaces disabled)."""
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to creating new namespace, likely because the kernel "
                    "does not allow non-privileged user namespaces.' >&2\nexit 1\n")  # fmt: skip
    fake.chmod(0o755)
    monkeypatch.setattr(isolation, "bwrap_path", lambda: str(fake))
    check_isolation.cache_clear()
    yield
    check_isolation.cache_clear()


def test_without_bubblewrap_the_error_names_the_cause_and_the_fix(monkeypatch):
    monkeypatch.setattr(isolation, "bwrap_path", lambda: None)
    check_isolation.cache_clear()
    try:
        with pytest.raises(SandboxUnavailable) as error:
            run_python("pass")
    finally:
        check_isolation.cache_clear()
    message = str(error.value)
    assert "bubblewrap (`bwrap`) is not on PATH" in message
    assert "apt-get install bubblewrap" in message and "curation.sandbox.mode: unconfined" in message


def test_code_rows_are_not_run_when_the_machine_cannot_isolate(no_isolation, caplog):
    from tests.test_curation import rows

    with pytest.raises(SandboxUnavailable, match="No permissions to creating new namespace.*Fix: install bubblewrap"):
        curate(rows(("code", CODE_ROW)), CurationSettings())
    # on purpose, unconfined: the row runs, with a warning
    out = curate(rows(("code", CODE_ROW)), CurationSettings(sandbox={"mode": "unconfined"}))
    assert out["status"].to_list() == ["kept"]
    assert json.loads(out["checks"][0])["code"] == "passed"
    assert "WITHOUT isolation" in caplog.text


def test_an_unconfined_run_says_so_in_the_dataset_card(tmp_path):
    from pipeline.release.folders import build_dataset_folder
    from tests.test_curation import rows

    frame = rows(("text", "A kept row."))
    card = build_dataset_folder(frame, tmp_path / "data", "teacher", "apache-2.0", sandbox="unconfined") / "README.md"
    assert "code tests ran: WITHOUT isolation (curation.sandbox.mode: unconfined)" in card.read_text()
    isolated = build_dataset_folder(frame, tmp_path / "iso", "teacher", "apache-2.0") / "README.md"
    assert "code tests ran: in a bubblewrap sandbox" in isolated.read_text()
    assert pl.read_parquet(next((tmp_path / "data" / "data").glob("*.parquet"))).height == 1


def test_the_unconfined_mode_is_a_setting_that_lists_its_values():
    from pipeline.settings import ConfigError, resolve

    assert resolve("demo").curation.sandbox.mode == "isolated"
    with pytest.raises(ConfigError, match=r"curation.sandbox.mode = 'off': Input should be 'isolated' or 'unconfined'"):
        resolve("demo", {"curation": {"sandbox": {"mode": "off"}}})


def test_sys_executable_is_not_needed_inside():
    # the sandbox runs the system interpreter: the project's may sit in a folder it cannot see
    assert run_python("import sys\nassert sys.executable == '/usr/bin/python3'", FAST).passed
