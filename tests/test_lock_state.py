"""The state lock: one holder at a time, a waiter names the holder, a dead holder frees it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from reconcile.errors import LockError
from reconcile.locking import read_holder, state_lock, unlock


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
        from reconcile.locking import state_lock
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
    from reconcile.cli import main
    from reconcile.state import FileStateStore, State

    state = tmp_path / "sim.json"
    FileStateStore(state).save(State.empty("sim"))
    script = (
        "import os, signal\nfrom reconcile.locking import state_lock\n"
        f"with state_lock({str(state)!r}, purpose='apply'):\n    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=False)
    left = read_holder(state)
    assert left is not None

    def run(*args: str) -> tuple[int, str, str]:
        try:
            main(list(args))
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = run("state", "show", "--state", str(state))
    assert code == 0 and f"lock {left.lock_id} held by pid {left.pid}" in out and "serial 1" in out
    code, _, err = run("state", "unlock", "not-that-one", "--state", str(state))
    assert code == 1 and left.lock_id in err
    code, out, _ = run("state", "unlock", left.lock_id, "--state", str(state))
    assert code == 0 and read_holder(state) is None
    code, out, _ = run("state", "show", "--state", str(state))
    assert "lock: not held" in out
