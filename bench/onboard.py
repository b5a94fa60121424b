"""Benchmark a multi-hour onboarding at the published limits, in a time-scaled simulator.

Run: ``.venv/bin/python bench/onboard.py [--users 310] [--batch-size 1] [--time-scale 450] [--kill-at 200]``.

`reconcile sim serve --time-scale N --penalties` (published limits on) plays the partner API;
three traders made outside the tool are adopted (`reconcile import`), then one apply with
`RECONCILE_TIME_SCALE=N` creates ``--users`` new traders and cancels the three. With
``--kill-at K`` the apply is killed (SIGKILL) at the first pacing wait after K creates and
started again. Everything measured is read from the simulator's own database afterwards:

- over-limit answers (HTTP 429 or penalty tickets): target 0;
- the create rate: the creates sent in each whole simulated hour from the first create, against
  the 100 an hour the limit allows: target ≥ 95% (a pacer that wastes slots, or a restart that
  spends the hour again and is refused, falls short);
- logins (sessions opened): target 1 for the whole onboarding, at most 2 at once;
- when the first cancellation was sent, in simulated minutes after the first create: target
  before the second create.

The script exits 1 when a target is missed. ``tests/test_e2e_onboarding.py`` runs it small.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 100
"""createevaluationusers calls an hour (the published limit)."""
HOUR = 3600.0
ADMIN = "partner-admin"
CREATE_KEY = f"{ADMIN}:/user/createevaluationusers"
OLD = ("leaver-1", "leaver-2", "leaver-3")


@dataclass(frozen=True)
class Report:
    """What an onboarding did, as the simulator saw it (times are simulated seconds)."""

    creates: int
    """createevaluationusers calls the simulator accepted."""
    span: float
    """From the first create to the last."""
    in_hours: int
    """The creates sent in the whole hours from the first create (``hours``)."""
    over_limit: int
    logins: int
    first_cancel: float | None
    """When the first cancellation was applied, after the first create (None: none was)."""
    second_create: float | None

    @property
    def hours(self) -> int:
        """The whole hours from the first create to the last."""
        return int(self.span // HOUR)

    @property
    def rate(self) -> float:
        """Achieved create rate as a share of the allowed one, over the whole hours (1.0 under an hour)."""
        return 1.0 if self.hours == 0 else self.in_hours / (LIMIT * self.hours)

    def misses(self) -> list[str]:
        """The targets this onboarding missed."""
        missed = []
        if self.over_limit:
            missed.append(f"{self.over_limit} over-limit answers (target 0)")
        if self.rate < 0.95:
            missed.append(f"create rate {self.rate:.1%} of the allowed (target ≥ 95%)")
        if self.logins != 1:
            missed.append(f"{self.logins} logins (target 1)")
        if self.first_cancel is None or self.second_create is None or self.first_cancel >= self.second_create:
            missed.append("the first cancellation was not sent before the second create")
        return missed

    def lines(self) -> list[str]:
        cancel = "never" if self.first_cancel is None else _minutes(self.first_cancel)
        second = "never" if self.second_create is None else _minutes(self.second_create)
        return [
            f"creates:            {self.creates} calls over {self.span / HOUR:.2f} simulated hours",
            f"achieved / allowed: {self.rate:.1%} (target ≥ 95%; {self.in_hours} creates in the first "
            f"{self.hours} whole hours, {LIMIT} an hour allowed)",
            f"over-limit answers: {self.over_limit} (target 0)",
            f"logins:             {self.logins} (target 1, never more than 2 sessions)",
            f"first cancellation: {cancel} the first create (target: before the second, {second} it)",
        ]


def _minutes(seconds: float) -> str:
    """``3.2 min after`` / ``1.7 min before``, in simulated minutes."""
    return f"{abs(seconds) / 60:.1f} simulated min {'before' if seconds < 0 else 'after'}"


def env_for(work: Path, url: str, scale: float) -> dict[str, str]:
    """The environment of every reconcile run: the simulator's clock, its own token cache, no colour."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRADOVATE_", "RECONCILE_"))}
    env.update(
        RECONCILE_ENDPOINT=url,
        RECONCILE_TIME_SCALE=f"{scale:g}",
        RECONCILE_CACHE_DIR=str(work / "cache"),
        ONBOARD_PASSWORD="Onboard-Passw0rd-1",
        NO_COLOR="1",
    )
    return env


def serve(db: Path, scale: float) -> tuple[subprocess.Popen[str], str]:
    """Start `reconcile sim serve` with the published limits and penalties; return it and its URL."""
    server = subprocess.Popen(
        [sys.executable, "-m", "reconcile", "sim", "serve", "--port", "0", "--db", str(db),
         "--time-scale", f"{scale:g}", "--penalties"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip
    assert server.stdout is not None
    line = server.stdout.readline()
    if not line.startswith("listening on "):
        server.kill()
        raise SystemExit(f"the simulator did not start: {line!r}")
    return server, line.removeprefix("listening on ").strip()


def write_manifest(path: Path, users: int, *, leavers: str) -> None:
    """``users`` new traders and the three leavers with status ``leavers``."""
    lines = [
        "apiVersion: reconcile/v1",
        "environment: sim",
        "partner: {dataAccountId: 11111, entitlements: {simplus: 12345}}",
        "policy: {maxCancellations: 3, maxCancellationPercent: 100}",
        "users:",
    ]
    for name in OLD:
        lines.append(f"  - {{name: {name}, email: {name}@example.com, password: {{env: ONBOARD_PASSWORD}}, "
                     f"firstName: Old, lastName: Trader, status: {leavers}}}")  # fmt: skip
    for n in range(users):
        lines.append(f"  - {{name: trader{n:05d}, email: trader{n:05d}@example.com, "
                     "password: {env: ONBOARD_PASSWORD}, firstName: New, lastName: Trader}")  # fmt: skip
    path.write_text("\n".join(lines) + "\n")


def reconcile(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconcile", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )


def adopt_leavers(work: Path, url: str, env: dict[str, str]) -> None:
    """Add three traders outside the tool and adopt them, so the onboarding has users to cancel."""
    for name in OLD:
        # `reconcile sim add-user` does this too; one process fewer per trader.
        httpx.post(
            f"{url}/_sim/users", json={"name": name, "email": f"{name}@example.com"}
        ).raise_for_status()
    write_manifest(work / "seed.yaml", 0, leavers="active")
    done = reconcile("import", *OLD, "-f", "seed.yaml", env=env, cwd=work)
    assert done.returncode == 0, done.stderr


def apply(work: Path, env: dict[str, str], batch_size: int, kill_at: int | None) -> list[str]:
    """Run the onboarding apply, killed at the first wait after ``kill_at`` creates; its stderr lines."""
    args = [sys.executable, "-m", "reconcile", "apply", "-f", "onboard.yaml", "--auto-approve",
            "--batch-size", str(batch_size), "--allow-cancellations", str(len(OLD))]  # fmt: skip
    said: list[str] = []
    child = subprocess.Popen(
        args, env=env, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    assert child.stderr is not None
    for line in child.stderr:
        said.append(line)
        if kill_at is not None and _waits_after(line, kill_at):
            child.send_signal(signal.SIGKILL)
            child.wait()
            said.append(KILLED)
            return said + apply(work, env, batch_size, None)
    if child.wait() != 0:
        raise SystemExit("apply failed:\n" + "".join(said[-20:]))
    return said


KILLED = "-- killed --\n"
"""Where :func:`apply`'s lines say it killed the run and started it again."""


def _waits_after(line: str, creates: int) -> bool:
    """True for a progress line that says the creates wait for their next slot, ``creates`` made or more."""
    if not line.startswith("creates ") or "next slot" not in line:
        return False
    done = int(line.split()[1].split("/")[0].replace(",", ""))
    return done >= creates


def measure(db: Path) -> Report:
    """Read what happened from the simulator's database."""
    with sqlite3.connect(db) as conn:
        creates = [
            at
            for (at,) in conn.execute("SELECT at FROM rate_events WHERE key = ? ORDER BY at", (CREATE_KEY,))
        ]
        # Penalty tickets are counted where they are kept (a ticket resent too early gets another).
        over = conn.execute("SELECT COUNT(*) FROM over_limit WHERE answer = '429'").fetchone()[0]
        penalties = conn.execute("SELECT COUNT(*) FROM penalties").fetchone()[0]
        logins = conn.execute("SELECT COUNT(*) FROM sessions WHERE login = ?", (ADMIN,)).fetchone()[0]
        (cancelled,) = conn.execute(
            "SELECT MIN(cancelled_at) FROM records WHERE cancelled_at IS NOT NULL"
        ).fetchone()
    start = creates[0] if creates else 0.0
    span = creates[-1] - start if creates else 0.0
    return Report(
        creates=len(creates),
        span=span,
        in_hours=sum(1 for at in creates if at < start + HOUR * (span // HOUR)),
        over_limit=over + penalties,
        logins=logins,
        first_cancel=None if cancelled is None else cancelled - start,
        second_create=creates[1] - start if len(creates) > 1 else None,
    )


KILLED = "-- killed --\n"


def onboard(
    work: Path, *, users: int, batch_size: int, scale: float, kill_at: int | None
) -> tuple[Report, float, list[str]]:
    """The whole scenario in ``work``: the report, the onboarding's wall time, what apply said."""
    server, url = serve(work / "sim.sqlite", scale)
    try:
        env = env_for(work, url, scale)
        adopt_leavers(work, url, env)
        write_manifest(work / "onboard.yaml", users, leavers="cancelled")
        started = time.monotonic()
        said = apply(work, env, batch_size, kill_at)
        wall = time.monotonic() - started
    finally:
        server.terminate()
        server.wait()
    return measure(work / "sim.sqlite"), wall, said


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=310)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--time-scale", type=float, default=450.0)
    parser.add_argument(
        "--kill-at", type=int, default=None, help="SIGKILL the apply at the first wait after K creates"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="reconcile-onboard-") as tmp:
        report, wall, _said = onboard(
            Path(tmp),
            users=args.users,
            batch_size=args.batch_size,
            scale=args.time_scale,
            kill_at=args.kill_at,
        )
    calls = math.ceil(args.users / args.batch_size)
    print(f"{args.users} users, {calls} create calls, time scale {args.time_scale:g}: {wall:.1f} s wall")
    for line in report.lines():
        print(line)
    missed = report.misses()
    for miss in missed:
        print(f"MISSED: {miss}", file=sys.stderr)
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
