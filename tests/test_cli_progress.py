"""The progress of a long apply: a line per phase with the paced ETA, live on a terminal, plain in a log."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest

from reconcile.api.events import ClientEvent
from reconcile.cli.progress import ApplyProgress


def at(hhmm: str) -> float:
    hours, minutes = hhmm.split(":")
    return datetime(2026, 11, 30, int(hours), int(minutes), tzinfo=UTC).timestamp()


def test_a_paced_create_phase_shows_its_next_slot_and_when_it_will_be_done(
    capsys: pytest.CaptureFixture[str],
) -> None:
    now = [at("13:40")]
    progress = ApplyProgress(io.StringIO(), live=False, clock=lambda: now[0])
    progress.phase("create", 20_000)
    progress.advance(3_400)  # within the second: a log gets at most a line a second per phase
    now[0] += 2
    progress.schedule("create", at("14:05"), at("19:40"))
    progress.phase("update", 20_000)
    now[0] += 60
    progress.advance(3_000)  # unpaced: the ETA is the rate so far
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "creates 0/20,000",
        "creates 3,400/20,000 · next slot 14:05 UTC · done ≈ 19:40 UTC",
        "updates 0/20,000",
        "updates 3,000/20,000 · done ≈ 13:46 UTC",
    ]


def test_a_wait_for_a_create_slot_is_said_on_the_create_line_and_other_waits_on_their_own(
    capsys: pytest.CaptureFixture[str],
) -> None:
    now = at("13:40")
    progress = ApplyProgress(io.StringIO(), live=False, clock=lambda: now)
    progress.phase("create", 300)
    progress.advance(100)
    slot = ClientEvent("rate_limit_wait", "/user/createevaluationusers", "…waiting", 1200, now + 1200)
    progress.client_event(slot)
    login = ClientEvent("rate_limit_wait", "/auth/accesstokenrequest", "login: waiting", 60, now + 60)
    progress.client_event(login)
    err = capsys.readouterr().err.splitlines()
    assert err[-2].startswith("creates 100/300 · next slot 14:00 UTC")
    assert err[-1] == "login: waiting until 13:41:00 UTC"


def test_on_a_terminal_the_phases_are_lines_redrawn_in_place() -> None:
    stream = io.StringIO()
    stream.isatty = lambda: True  # type: ignore[method-assign]
    progress = ApplyProgress(stream, clock=lambda: at("13:40"))
    assert progress.live
    progress.phase("cancel", 3)
    progress.advance(3)
    progress.phase("create", 200)
    progress.advance(100)
    progress.close()
    shown = stream.getvalue()
    assert "cancellations 3/3" in shown and "creates 100/200" in shown
    assert "\x1b[" in shown  # redrawn with cursor movements, not printed line after line
