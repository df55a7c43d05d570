"""Writes that cannot collide or tear: two writers of one file, a killed writer, a full or
read-only state folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl
import pytest

from trainers import atomic

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip


def test_two_processes_writing_one_table_never_collide(tmp_path):
    target = tmp_path / "tables" / "topics.parquet"
    writer = """
        import sys, polars as pl
        from trainers import atomic
        frame = pl.DataFrame({"writer": [sys.argv[-1]] * 5000, "n": range(5000)})
        for _ in range(100):
            atomic.write_parquet(frame, sys.argv[-2])
            assert pl.read_parquet(sys.argv[-2]).height == 5000  # whole, whoever wrote it last
        """
    command = [sys.executable, "-c", textwrap.dedent(writer), str(target)]
    procs = [subprocess.Popen([*command, name], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for name in "ab"]  # fmt: skip
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert pl.read_parquet(target)["writer"].unique().to_list() in (["a"], ["b"])
    assert atomic.leftovers(tmp_path) == []


def test_the_old_copy_stays_when_a_write_fails_and_no_temporary_file_is_left(tmp_path):
    target = tmp_path / "t.parquet"
    atomic.write_parquet(pl.DataFrame({"v": [1]}), target)

    def broken(tmp: Path) -> None:
        tmp.write_bytes(b"half a tab")
        raise OSError(5, "Input/output error")

    with pytest.raises(atomic.WriteError, match=f"could not write the rows to {target}"):
        atomic.write_file(target, broken, "the rows")
    assert pl.read_parquet(target)["v"].to_list() == [1]
    assert atomic.leftovers(tmp_path) == []


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write(tmp_path):
    target = tmp_path / "t.parquet"
    writer = _python(f"""
        import os, signal
        from trainers import atomic
        def fill(tmp):
            tmp.write_bytes(b"partial")
            os.kill(os.getpid(), signal.SIGKILL)  # killed between writing and renaming
        atomic.write_file({str(target)!r}, fill)
        """)  # fmt: skip
    writer.communicate(timeout=60)
    assert writer.returncode == -9
    assert not target.exists() and len(atomic.leftovers(tmp_path)) == 1
    atomic.write_parquet(pl.DataFrame({"v": [2]}), target)
    assert atomic.leftovers(tmp_path) == [] and pl.read_parquet(target)["v"].to_list() == [2]


def test_folders_are_swapped_whole(tmp_path):
    target = tmp_path / "release"
    atomic.write_folder(target, lambda d: (d / "a.txt").write_text("one"))
    with pytest.raises(atomic.WriteError):
        atomic.write_folder(target, lambda d: ((d / "b.txt").write_text("two"), _raise_enospc()))
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]
    atomic.write_folder(target, lambda d: (d / "b.txt").write_text("two"))
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert atomic.leftovers(tmp_path) == []


def _raise_enospc():
    raise OSError(28, "No space left on device")


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 256 KiB file system the test mounts and removes (root only, as CI and the sessions run)."""
    mount = tmp_path / "state"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_full_state_folder_names_the_path_keeps_the_old_table_and_resumes(small_tmpfs):
    target = small_tmpfs / "tables" / "curated.parquet"
    atomic.write_parquet(pl.DataFrame({"v": [1]}), target, "the table of curated")
    filler = small_tmpfs / "filler"
    filler.write_bytes(b"\0" * 200_000)
    big = pl.DataFrame({"v": [os.urandom(32).hex() for _ in range(4000)]})  # ~280 KB, incompressible
    with pytest.raises(atomic.WriteError, match=r"could not write the table of curated to .*curated\.parquet"):
        atomic.write_parquet(big, target, "the table of curated")
    assert pl.read_parquet(target)["v"].to_list() == [1]
    assert atomic.leftovers(small_tmpfs) == []
    filler.unlink()  # space freed: the next write goes through
    atomic.write_parquet(big.head(1000), target, "the table of curated")
    assert pl.read_parquet(target).height == 1000


def test_a_read_only_state_folder_names_the_path(small_tmpfs):
    target = small_tmpfs / "tables" / "curated.parquet"
    atomic.write_parquet(pl.DataFrame({"v": [1]}), target)
    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    with pytest.raises(atomic.WriteError, match=r"could not write the table of curated to .*curated\.parquet"):
        atomic.write_parquet(pl.DataFrame({"v": [2]}), target, "the table of curated")
    assert pl.read_parquet(target)["v"].to_list() == [1]
