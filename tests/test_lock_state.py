"""The state lock: one holder at a time, a waiter names the holder, a dead holder frees it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconcile.errors import LockError
from reconcile.state import lock_mark
from reconcile.state.lock import read_holder, state_lock, unlock
from reconcile.state.model import UserRecord


def test_second_holder_fails_naming_the_first(tmp_path: Path) -> None:
    state = tmp_path / "sim.json"
    with state_lock(state, purpose="apply") as holder:
        assert read_holder(state) == holder
        with pytest.raises(LockError) as err, state_lock(state, timeout=0.1, purpose="plan"):
            pass
        message = str(err.value)
        assert f"pid {os.getpid()}" in message and holder.lock_id in message and "(apply)" in message
        with pytest.raises(LockError, match="still running"):
            unlock(state, holder.lock_id)
    assert read_holder(state) is None
    with state_lock(state, timeout=0):  # free again
        pass


def test_lock_of_a_killed_process_is_taken_over_and_its_record_can_be_removed(tmp_path: Path) -> None:
    state = tmp_path / "sim.json"
    script = textwrap.dedent(
        f"""
        import os, signal
        from reconcile.state.lock import state_lock
        with state_lock({str(state)!r}, purpose="apply"):
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], check=False)
    assert proc.returncode == -9
    left = read_holder(state)
    assert left is not None and left.pid != os.getpid()
    with state_lock(state, timeout=0) as holder:  # the kernel released the dead holder's lock
        assert read_holder(state) == holder
    # A record left behind without a live holder is removed by `state unlock LOCK_ID`.
    proc = subprocess.run([sys.executable, "-c", script], check=False)
    left = read_holder(state)
    assert left is not None
    with pytest.raises(LockError, match="not lock wrong-id"):
        unlock(state, "wrong-id")
    assert unlock(state, left.lock_id) == left
    assert read_holder(state) is None


def test_state_show_names_a_left_behind_lock_and_state_unlock_removes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cli_support import call

    from reconcile.state.file import FileStateStore
    from reconcile.state.model import State

    state = tmp_path / "sim.json"
    FileStateStore(state).save(State.empty("sim"))
    script = (
        "import os, signal\nfrom reconcile.state.lock import state_lock\n"
        f"with state_lock({str(state)!r}, purpose='apply'):\n    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=False)
    left = read_holder(state)
    assert left is not None

    def run(*args: str) -> tuple[int, str, str]:
        return call(capsys, *args)

    code, out, _ = run("state", "show", "--state", str(state))
    assert code == 0 and f"lock {left.lock_id} held by pid {left.pid}" in out and "serial 1" in out
    code, _, err = run("state", "unlock", "not-that-one", "--state", str(state))
    assert code == 1 and left.lock_id in err
    code, out, _ = run("state", "unlock", left.lock_id, "--state", str(state))
    assert code == 0 and read_holder(state) is None
    code, out, _ = run("state", "show", "--state", str(state))
    assert "lock: not held" in out


def _record() -> UserRecord:
    now = datetime(2026, 11, 27, tzinfo=UTC)
    return UserRecord(
        userId=1, email="a@example.com", firstName="A", lastName="B", createdAt=now, updatedAt=now
    )


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def test_a_plan_from_a_clean_examples_folder_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from cli_support import run

    examples = tmp_path / "examples"
    shutil.copytree(Path(__file__).resolve().parent.parent / "examples", examples)
    before = _files(examples)
    monkeypatch.chdir(examples)
    result = run("plan", "-f", "desk.yaml")
    assert result.exit_code == 0, result.stderr
    assert "to create" in result.stdout
    assert _files(examples) == before


def test_the_lock_leaves_no_file_behind_and_a_crashed_holders_file_is_cleared(tmp_path: Path) -> None:
    state = tmp_path / "sim.json"
    with state_lock(state, purpose="apply"):
        assert _files(tmp_path) == {"sim.json.lock", "sim.json.lock.json"}
    assert _files(tmp_path) == set()
    script = (
        "import os, signal\nfrom reconcile.state.lock import state_lock\n"
        f"with state_lock({str(state)!r}, purpose='apply'):\n    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=False)
    assert _files(tmp_path) == {"sim.json.lock", "sim.json.lock.json"}
    with state_lock(state, timeout=0):  # the next run takes the crashed holder's file over
        pass
    assert _files(tmp_path) == set()


def _start_holder(state: Path, release: Path) -> subprocess.Popen[bytes]:
    """Start a process that holds the lock on ``state`` until ``release`` exists."""
    script = textwrap.dedent(
        f"""
        import pathlib, time
        from reconcile.state.lock import state_lock
        with state_lock({str(state)!r}, purpose="apply"):
            pathlib.Path({str(release)!r} + ".reached").touch()
            while not pathlib.Path({str(release)!r}).exists():
                time.sleep(0.02)
            pathlib.Path({str(release)!r} + ".leaving").touch()
        """
    )
    holder = subprocess.Popen([sys.executable, "-c", script])
    reached = Path(f"{release}.reached")
    for _ in range(6000):  # a bound, not a timing assumption: the holder waits for `release`
        if reached.exists() or holder.poll() is not None:
            break
        time.sleep(0.02)
    assert reached.exists()
    return holder


@pytest.mark.parametrize("marks", [True, False], ids=["folder-marks", "no-folder-marks"])
def test_a_lock_file_removed_under_a_running_holder_does_not_let_a_second_run_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, marks: bool
) -> None:
    if not marks:  # where the folder cannot be marked, the holder record still catches it
        monkeypatch.setattr(lock_mark, "open_folder", lambda folder: None)
    state = tmp_path / "sim.json"
    release = tmp_path / "release"
    first = _start_holder(state, release)
    try:
        holder = read_holder(state)
        assert holder is not None and holder.pid == first.pid
        (tmp_path / "sim.json.lock").unlink()  # a stray `rm`
        with pytest.raises(LockError) as err, state_lock(state, timeout=0):
            pass
        message = str(err.value)
        assert "sim.json.lock was removed while" in message and f"pid {first.pid}" in message
        assert holder.lock_id in message
        if marks:
            with pytest.raises(LockError, match="still running"):  # its record is no leftover
                unlock(state, holder.lock_id)
            assert read_holder(state) == holder
    finally:
        release.touch()
        first.wait(timeout=60)
    assert first.returncode == 0


def test_both_lock_files_removed_under_a_running_holder_make_the_next_run_wait_for_it(
    tmp_path: Path,
) -> None:
    state = tmp_path / "sim.json"
    release = tmp_path / "release"
    first = _start_holder(state, release)
    waits: list[str] = []
    try:
        for name in ("sim.json.lock", "sim.json.lock.json"):  # `rm *.lock*`
            (tmp_path / name).unlink()
        with pytest.raises(LockError) as err, state_lock(state, timeout=0):
            pass
        message = str(err.value)
        assert (
            f"lock files sim.json.lock and sim.json.lock.json were removed while pid {first.pid} on "
            in message
        )
        assert "refusing to start a second run beside it" in message

        def on_wait(message: str) -> None:  # the wait has begun: let the holder finish
            waits.append(message)
            release.touch()

        with state_lock(state, timeout=60, on_wait=on_wait):
            assert Path(f"{release}.leaving").exists(), "the lock came free only when the holder left"
    finally:
        release.touch()
        first.wait(timeout=60)
    assert len(waits) == 1 and f"pid {first.pid}" in waits[0]
    assert first.returncode == 0
    assert _files(tmp_path) == {"release", "release.reached", "release.leaving"}


def test_states_sharing_a_folder_do_not_wait_for_each_other(tmp_path: Path) -> None:
    with (
        state_lock(tmp_path / "sim.json"),
        state_lock(tmp_path / "demo.json", timeout=0),
        pytest.raises(LockError, match="is locked"),
        state_lock(tmp_path / "sim.json", timeout=0),
    ):
        pass


def test_the_holder_locks_a_removed_lock_file_again_before_writing_state(tmp_path: Path) -> None:
    import fcntl

    from reconcile.state.file import FileStateStore
    from reconcile.state.model import State

    path = tmp_path / "sim.json"
    store = FileStateStore(path)
    with store.lock() as holder:
        (tmp_path / "sim.json.lock").unlink()
        (tmp_path / "sim.json.lock.json").unlink()
        saved = store.save(State.empty("sim"))  # locks a new lock file first
        assert (tmp_path / "sim.json.lock").exists()
        assert read_holder(path) == holder, "the holder record is written again"
        with pytest.raises(LockError), state_lock(path, timeout=0):  # the new file is held
            pass
        (tmp_path / "sim.json.lock").unlink()
        fd = os.open(tmp_path / "sim.json.lock", os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another run got the new file first
            changed = saved.model_copy(update={"users": {"trader001": _record()}})
            with pytest.raises(LockError, match="was removed during this run and another run holds it"):
                store.save(changed)
        finally:
            os.close(fd)
    assert store.read() == saved, "nothing was written beside the other run"
