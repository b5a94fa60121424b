"""A multi-hour onboarding at the published limits, against `reconcile sim serve --time-scale`.

Real processes on 127.0.0.1: the simulator enforces the published limits with penalty tickets,
and its hour is 10 seconds; `RECONCILE_TIME_SCALE` gives the client the same hour. 205 creates
(batch size 1) need three simulated hours; the manifest also cancels three traders. The apply
is killed (SIGKILL) while it waits for a slot after the first hour's creates, and started again.
The scenario is `bench/onboard.py`'s; here it runs small and every target must hold.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from cli_support import run

BENCH = Path(__file__).resolve().parent.parent / "bench" / "onboard.py"


def _onboard() -> ModuleType:
    spec = importlib.util.spec_from_file_location("onboard_bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def test_onboarding_at_the_limit_survives_a_kill_and_never_exceeds_it(tmp_path: Path) -> None:
    onboard = _onboard()
    report, _wall, said = onboard.onboard(tmp_path, users=205, batch_size=1, scale=360.0, kill_at=100)
    assert onboard.KILLED in said, "the apply was killed while it waited for a slot, and started again"
    assert not any("interrupted apply" in line for line in said), "a wait leaves no intent to settle"
    assert report.creates == 205
    assert report.over_limit == 0, "a 429 or a penalty ticket: the pacing (or the restart) exceeded the limit"
    assert report.hours == 2 and report.rate >= 0.95, report.lines()
    assert report.logins == 1, "the token is renewed through the run and reused after the restart"
    assert report.first_cancel is not None and report.second_create is not None
    assert report.first_cancel < report.second_create, "cancellations wait for no create"
    assert report.misses() == []


def test_a_time_scale_is_refused_for_the_real_api(tmp_path: Path) -> None:
    manifest = tmp_path / "desk.yaml"
    manifest.write_text(
        "apiVersion: reconcile/v1\nenvironment: demo\n"
        "partner: {dataAccountId: 1, entitlements: {}}\nusers: []\n"
    )
    result = run(
        "plan", "-f", manifest, "--refresh", env={"RECONCILE_TIME_SCALE": "60", "TRADOVATE_USERNAME": "u"}
    )
    assert result.exit_code == 1
    assert "RECONCILE_TIME_SCALE=60 is refused for environment demo" in result.stderr
