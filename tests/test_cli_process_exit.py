"""The process entry point (`python -m reconcile`, the `reconcile` script) ends with os._exit.

It must still deliver all output, keep every exit code, wait for non-daemon threads, and say
nothing (exit 1) when the reader of its output went away.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.cli_support import run_child

ROOT = Path(__file__).resolve().parent.parent


_RUN = "cli.main = main\ncli.run()\n"


def _python(script: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-c", script]
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)


def _many_users(path: Path, count: int) -> Path:
    users = "".join(
        f"  - {{name: u{i:05d}, email: u{i:05d}@example.com, firstName: F, lastName: L, "
        f"password: Sim-Passw0rd-1}}\n"
        for i in range(count)
    )
    path.write_text(
        "apiVersion: reconcile/v1\nenvironment: sim\n"
        "partner: {dataAccountId: 1, entitlements: {tradingview: 31}}\nusers:\n" + users
    )
    return path


def test_all_output_reaches_a_pipe_before_the_process_ends(tmp_path: Path) -> None:
    # Far more than a pipe's buffer: output still in Python's buffers at exit must be flushed.
    manifest = _many_users(tmp_path / "desk.yaml", 3000)
    done = run_child("plan", "-f", manifest, "--state", tmp_path / "state.json", "--detailed-exitcode")
    assert done.returncode == 2, done.stderr  # changes present: the code survives the exit
    assert sum(line.startswith("  + u") for line in done.stdout.splitlines()) == 3000
    assert done.stdout.endswith("Plan: 3000 to create.\n")


def test_error_codes_and_messages_survive(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: x\n")
    done = run_child("validate", "-f", bad)
    assert done.returncode == 1
    assert f"{bad}:1:13: apiVersion: expected 'reconcile/v1'" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_closed_pipe_exits_1_without_a_traceback(tmp_path: Path) -> None:
    manifest = _many_users(tmp_path / "desk.yaml", 3000)
    child = subprocess.Popen(
        [sys.executable, "-m", "reconcile", "plan", "-f", str(manifest), "--state", str(tmp_path / "s.json")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdout is not None and child.stderr is not None
    child.stdout.close()  # a reader that went away before the plan was printed (`| true`)
    err = child.stderr.read().decode()
    assert child.wait(timeout=60) == 1
    assert "Traceback" not in err and "Exception ignored" not in err


def test_non_daemon_threads_finish_before_the_exit(tmp_path: Path) -> None:
    # What the interpreter's own shutdown guarantees, run() keeps: a non-daemon thread that is
    # still working when main() returns gets to finish (here: it writes a file after a pause).
    marker = tmp_path / "written"
    script = textwrap.dedent(
        f"""
        import threading, time
        import reconcile.cli as cli

        def late():
            time.sleep(0.3)
            open({str(marker)!r}, "w").write("done")

        def main():
            threading.Thread(target=late).start()
            raise SystemExit(3)

        cli.main = main
        cli.run()
        """
    )
    done = _python(script)
    assert done.returncode == 3, done.stderr
    assert marker.read_text() == "done"


def test_a_message_given_to_exit_is_printed_with_code_1() -> None:
    done = _python("import reconcile.cli as cli\ndef main():\n    raise SystemExit('gone wrong')\n" + _RUN)
    assert (done.returncode, done.stderr.strip()) == (1, "gone wrong")


def test_a_command_keeps_only_its_own_results_until_the_exit(tmp_path: Path) -> None:
    # plan keeps its result alive for run()'s os._exit to drop at once; a process that runs
    # commands in turn (these tests) must not pile them up.
    from reconcile.cli import main, output
    from reconcile.operations.plan import PlanResult

    manifest = _many_users(tmp_path / "desk.yaml", 3)
    for _ in range(3):
        try:
            main(["plan", "-f", str(manifest), "--state", str(tmp_path / "state.json")])
        except SystemExit as exc:
            assert exc.code == 0
        assert [type(kept) for kept in output._KEPT] == [PlanResult]
    output.release_kept()
