"""The watch loop as a library, on the embedded simulator: budgets, backoff, expiries, leadership."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from reconcile.operations.inputs import PlanInputs
from reconcile.operations.settings import Settings
from reconcile.operations.watch import CycleReport, Shutdown, WatchRequest, watch
from reconcile.state.leader import FileLeadership
from tests.apply_support import PASSWORD
from tests.watch_support import desk_yaml

INTERVAL = 0.05
THREE = [{"name": f"trader00{i}"} for i in range(1, 4)]


def _run(
    tmp_path: Path,
    first: str,
    then: Callable[[CycleReport, Path], bool],
    *,
    refresh: bool = False,
    passwords: Path | None = None,
    batch_size: int = 100,
) -> list[CycleReport]:
    """Watch ``first`` as desk.yaml; after each cycle ``then`` may edit it, and ends the watch with False."""
    desk = tmp_path / "desk.yaml"
    desk.write_text(first)
    inputs = PlanInputs(
        paths=(desk,),
        state_path=tmp_path / "state" / "sim.json",
        backend=None,
        endpoint=None,
        targets=(),
        excludes=(),
        settings=Settings(environ={"TRADER_PASSWORD": PASSWORD}),
    )
    reports: list[CycleReport] = []
    shutdown = Shutdown()

    def on_cycle(report: CycleReport) -> None:
        reports.append(report)
        if not then(report, desk) or len(reports) > 20:
            shutdown.request("the test is done")

    request = WatchRequest(
        inputs, interval=INTERVAL, refresh=refresh, generated_passwords=passwords, batch_size=batch_size
    )
    watch(request, on_cycle, shutdown=shutdown)
    return reports


@pytest.fixture(autouse=True)
def _here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def test_a_budget_refusal_skips_the_cycle_and_the_loop_goes_on(tmp_path: Path) -> None:
    def then(report: CycleReport, desk: Path) -> bool:
        if report.cycle == 1:
            desk.write_text(desk_yaml([]))  # every user lost: far past the budget
        elif report.cycle == 3:
            desk.write_text(desk_yaml(THREE))
        return report.cycle < 4

    reports = _run(tmp_path, desk_yaml(THREE), then)
    assert [r.outcome for r in reports] == ["applied", "refused", "refused", "in_sync"]
    assert reports[0].applied == {"created": 3}
    assert "refused by policy" in (reports[1].message or "")
    assert [r.next_in for r in reports[:3]] == [INTERVAL] * 3  # a refusal is no failure: no backoff


def test_failures_back_off_and_a_good_cycle_resets_the_wait(tmp_path: Path) -> None:
    def then(report: CycleReport, desk: Path) -> bool:
        if report.cycle == 3:
            desk.write_text(desk_yaml(THREE))
        return report.cycle < 4

    reports = _run(tmp_path, "apiVersion: reconcile/v1\nusers: [", then)
    assert [r.outcome for r in reports] == ["failed", "failed", "failed", "applied"]
    assert "desk.yaml" in (reports[0].message or "")
    assert [r.next_in for r in reports] == [INTERVAL, 2 * INTERVAL, 4 * INTERVAL, INTERVAL]


def test_an_expiry_is_enforced_by_the_next_cycle(tmp_path: Path) -> None:
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()

    def then(report: CycleReport, desk: Path) -> bool:
        if report.cycle == 1:
            desk.write_text(desk_yaml([{**THREE[0], "expiresOn": yesterday}, *THREE[1:]], percent=50.0))
        return report.cycle < 3

    reports = _run(tmp_path, desk_yaml(THREE), then)
    assert [r.outcome for r in reports] == ["applied", "applied", "in_sync"]
    assert reports[1].applied == {"cancelled": 1}
    assert reports[1].planned == {"cancel_everything": 1}


def test_a_cycle_that_finds_the_lock_held_is_skipped_as_busy(tmp_path: Path) -> None:
    import contextlib

    from reconcile.state.file import FileStateStore

    held = contextlib.ExitStack()

    def then(report: CycleReport, _desk: Path) -> bool:
        if report.cycle == 1:  # a person's plan or apply takes the lock between two cycles
            held.enter_context(FileStateStore(tmp_path / "state" / "sim.json").lock(purpose="apply"))
        elif report.cycle == 2:
            held.close()
        return report.cycle < 3

    with held:
        reports = _run(tmp_path, desk_yaml(THREE), then)
    assert [r.outcome for r in reports] == ["applied", "busy", "in_sync"]
    assert "locked" in (reports[1].message or "") and reports[1].next_in == INTERVAL


def test_with_refresh_drift_made_outside_is_found_and_repaired(tmp_path: Path) -> None:
    from reconcile.operations.clients import open_client

    def then(report: CycleReport, _desk: Path) -> bool:
        if report.cycle == 1:
            with open_client("sim", state_dir=tmp_path / "state") as client:
                found = client.find_user("trader001")
                assert found is not None
                client.modify_email_address(found.id, "changed-by-hand@example.com")
        return report.cycle < 3

    reports = _run(tmp_path, desk_yaml(THREE), then, refresh=True)
    assert [(r.outcome, r.drift) for r in reports] == [("applied", 0), ("applied", 1), ("in_sync", 0)]
    assert reports[1].applied == {"emails_changed": 1}


def test_with_refresh_a_cycle_reads_the_agreement_signals_once_and_grants_the_signer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The live read's signals serve the cycle's grants too: one read per cycle, not two.
    from reconcile.api.client import PartnerClient
    from tests.cli_support import run as cli

    reads: list[int] = []
    read = PartnerClient.agreement_signals

    def counted_read(self: PartnerClient, alert_id: int) -> Any:
        reads.append(report_cycle[0])
        return read(self, alert_id)

    report_cycle = [1]
    monkeypatch.setattr(PartnerClient, "agreement_signals", counted_read)

    def then(report: CycleReport, _desk: Path) -> bool:
        if report.cycle == 1:
            assert cli("sim", "sign", "trader001").exit_code == 0
        report_cycle[0] = report.cycle + 1
        return report.cycle < 2

    users = [{**u, "entitlements": ["simplus"]} for u in THREE]
    reports = _run(tmp_path, desk_yaml(users), then, refresh=True)
    assert [r.outcome for r in reports] == ["applied", "applied"]
    assert reports[1].applied == {"granted": 1}
    assert reads.count(2) == 1


def test_one_file_leadership_at_a_time_and_the_next_takes_it_when_released(tmp_path: Path) -> None:
    state = tmp_path / "state" / "sim.json"
    first, second = FileLeadership(state), FileLeadership(state)
    try:
        assert first.lead() and first.lead()
        assert not second.lead()
        first.close()
        assert second.lead()
        assert not first.lead()
    finally:
        first.close()
        second.close()


def test_healthz_says_503_while_the_last_cycle_failed_and_metrics_count_it() -> None:
    import httpx

    from reconcile.operations.watch_metrics import WatchMetrics

    metrics = WatchMetrics()
    server = metrics.serve("127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        assert httpx.get(f"{base}/healthz").status_code == 200  # no cycle yet: starting
        started = datetime.now(UTC)
        metrics.observe(CycleReport(1, started, 0.2, "failed", message="the API is down"))
        health = httpx.get(f"{base}/healthz")
        assert health.status_code == 503 and "the API is down" in health.text
        scraped = httpx.get(f"{base}/metrics").text
        assert "reconcile_watch_failures_total 1.0" in scraped
        assert 'reconcile_watch_cycles_total{outcome="failed"} 1.0' in scraped
        assert "reconcile_watch_last_success_timestamp_seconds 0.0" in scraped
        metrics.observe(CycleReport(2, started, 0.1, "in_sync"))
        assert httpx.get(f"{base}/healthz").status_code == 200
        assert httpx.get(f"{base}/nothing").status_code == 404
    finally:
        server.shutdown()
        server.server_close()


EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "watch"


def _watch_arguments() -> list[list[str]]:
    import json
    import shlex

    service = (EXAMPLES / "reconcile-watch.service").read_text()
    exec_start = next(line for line in service.splitlines() if line.startswith("ExecStart="))
    container = (EXAMPLES / "Containerfile").read_text()
    cmd = next(line for line in container.splitlines() if line.startswith("CMD "))
    return [shlex.split(exec_start.removeprefix("ExecStart="))[2:], json.loads(cmd.removeprefix("CMD "))]


@pytest.mark.parametrize("arguments", _watch_arguments(), ids=["systemd", "container"])
def test_the_shipped_examples_use_options_watch_has(arguments: list[str]) -> None:
    from reconcile.cli.watch import command

    known = {name for param in command.params for name in param.opts}
    given = [a for a in arguments if a.startswith("-")]
    assert given and set(given) <= known
    assert "--metrics-port" in given and "--interval" in given


def test_on_a_terminal_a_cycle_is_one_line_of_text() -> None:
    from reconcile.cli.watch import _text

    report = CycleReport(
        3,
        datetime(2026, 11, 30, 14, 5, 1, tzinfo=UTC),
        0.42,
        "applied",
        applied={"created": 2, "granted": 1},
        awaiting_agreement=1,
        generated_passwords="pw/passwords-1.txt",
        message="first line\nsecond line",
    )
    assert _text(report) == (
        "14:05:01 cycle 3 applied: 2 created, 1 granted · 1 awaiting the agreement · "
        "passwords in pw/passwords-1.txt · first line (0.4 s)"
    )


def test_a_passwords_folder_that_cannot_be_made_fails_the_cycle_and_the_loop_goes_on(tmp_path: Path) -> None:
    (tmp_path / "secrets").write_text("a file where the folder should be")

    def then(report: CycleReport, desk: Path) -> bool:
        if report.cycle == 2:
            (tmp_path / "secrets").unlink()
        return report.cycle < 3

    generated = [{"name": "trader001", "password": "{generate: true}"}]
    reports = _run(tmp_path, desk_yaml(generated), then, passwords=tmp_path / "secrets" / "out")
    assert [r.outcome for r in reports] == ["failed", "failed", "applied"]
    assert "--generated-passwords" in (reports[0].message or "")
    assert str(tmp_path / "secrets" / "out") in (reports[0].message or "")
    assert reports[2].generated_passwords is not None


def test_a_manifest_still_being_written_when_read_is_not_applied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reconcile.operations import watch as watch_module

    thirty = [{"name": f"trader{i:03d}"} for i in range(30)]
    real_open = watch_module.open_inputs

    def open_mid_write(inputs: PlanInputs) -> object:
        opened = real_open(inputs)
        desk = inputs.paths[0]
        if len(opened[0].manifest.users) == 28:
            desk.write_text(desk_yaml(thirty))  # the rest of the write lands after the read
        return opened

    def then(report: CycleReport, desk: Path) -> bool:
        if report.cycle == 1:
            desk.write_text(desk_yaml(thirty[:28]))  # a git pull's write, read half-way
        return report.cycle < 3

    monkeypatch.setattr(watch_module, "open_inputs", open_mid_write)
    reports = _run(tmp_path, desk_yaml(thirty), then)
    assert [r.outcome for r in reports] == ["applied", "busy", "in_sync"]
    assert "changed while it was read" in (reports[1].message or "")
    assert reports[0].applied == {"created": 30}
