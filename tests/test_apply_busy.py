"""What the applier does while a batch's follow-ups are in flight: deferred settles and saves,
the look-ahead create, and every way a run can end meanwhile (see ``Run.when_busy``)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from test_apply_executor import (
    AheadApi,
    _creates_with_contacts,
    _handed_out,
    env,
    make_manifest,
    plan_for,
    run,
)

from reconcile.api.models import UpdateContactInfo
from reconcile.apply import IntentJournal, RunStopped
from reconcile.apply.generated import pending_path_for
from reconcile.apply.intents import Intent
from reconcile.apply.stop import Stop
from reconcile.errors import CaptchaRequired

__all__ = ["env"]  # the fixture, imported for the tests here


def test_a_stop_met_while_the_look_ahead_create_is_announced_leaves_nothing_open(
    env: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker meets a captcha while the next create's intent is written: that create is never
    sent, so its intent and candidates must not be left for the next run to look up."""
    stop = Stop()
    begun = threading.Event()

    class CaptchaWhileAnnounced(AheadApi):
        def update_contact_info(self, req: UpdateContactInfo, *, user: str | None = None) -> None:
            if user == "trader000":
                begun.wait(2.0)
                raise CaptchaRequired("captcha required")
            super().update_contact_info(req, user=user)

    real_begin = IntentJournal.begin

    def begin(self: IntentJournal, call: Any, *args: Any, **kwargs: Any) -> Intent:
        intent = real_begin(self, call, *args, **kwargs)
        if call == "create" and intent.users == ["trader002", "trader003"]:
            begun.set()
            for _ in range(200):  # until the worker's captcha tripped the stop
                if stop.reason is not None:
                    break
                threading.Event().wait(0.01)
        return intent

    monkeypatch.setattr(IntentJournal, "begin", begin)
    env["api"] = api = CaptchaWhileAnnounced(patience=0.05)  # trader001 waits for no second create
    m = make_manifest(4, password={"generate": True})
    out = tmp_path / "pw.txt"
    with pytest.raises(RunStopped, match="captcha required"):
        run(
            env,
            plan_for(env["store"], _creates_with_contacts(m)),
            m,
            batch_size=2,
            generated_passwords=out,
            stop=stop,
        )
    assert api.count("create") == 1, "the create after the stop was sent"
    assert IntentJournal(env["journal"]).unsettled() == [], "an intent of a create never sent was left open"
    assert not pending_path_for(out).exists(), "candidates of a create never sent were left pending"
    assert _handed_out(out) == {n: api.passwords[n] for n in ("trader000", "trader001")}
