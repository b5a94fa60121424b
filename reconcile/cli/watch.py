"""``reconcile watch``: plan and apply in a loop, one log line per cycle."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from reconcile.cli.options import lock_timeout_option, plan_inputs
from reconcile.cli.output import echo, echo_err, echo_warning
from reconcile.cli.progress import ApplyProgress
from reconcile.errors import printable
from reconcile.operations.inputs import PlanInputs, Reporter
from reconcile.operations.watch import CycleReport, Shutdown, WatchRequest, watch


def _refuse_allow_cancellations(_ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
    if value is not None:
        raise click.UsageError(
            "watch does not take --allow-cancellations: a controller lives within the policy "
            "budgets. Apply a larger cancellation once with `reconcile apply --allow-cancellations N`, "
            "or raise policy.maxCancellations in the manifest"
        )
    return value


@click.command("watch")
@plan_inputs
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=60.0,
    show_default=True,
    metavar="SECONDS",
    help="Time between the end of one cycle and the start of the next.",
)
@click.option("--refresh", is_flag=True, help="Read the live organization every cycle and repair drift.")
@click.option(
    "--batch-size", type=click.IntRange(1, 100), default=100, show_default=True, help="Users per call."
)
@click.option(
    "--generated-passwords",
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="Folder (created mode 0700) where each cycle that creates {generate: true} users writes a "
    "new file (mode 0600), named in that cycle's log line.",
)
@lock_timeout_option("How long a cycle waits for another run's lock before it skips (negative: forever).")
@click.option("--allow-cancellations", hidden=True, expose_value=False, callback=_refuse_allow_cancellations)
@click.option(
    "--metrics-port", type=click.IntRange(0, 65535), help="Serve /metrics and /healthz on this port."
)
@click.option(
    "--metrics-address",
    default="127.0.0.1",
    show_default=True,
    help="Address for --metrics-port to listen on.",
)
def command(
    inputs: PlanInputs,
    interval: float,
    refresh: bool,
    batch_size: int,
    generated_passwords: Path | None,
    lock_timeout: float,
    metrics_port: int | None,
    metrics_address: str,
) -> None:
    """Plan and apply in a loop, like a GitOps controller, until SIGTERM or Ctrl-C.

    \b
    Every cycle re-reads the manifests, takes the state lock for that cycle only, grants Sim+ to
    traders who signed, applies the rest under apply's rules and budgets (a refused cycle is
    reported and skipped), and prints one line: JSON, or text on a terminal. Failures are retried
    with backoff; a condition that needs a person (refused credentials, a captcha) exits 1.
    With several watches on one PostgreSQL state, one acts and the others stand by.
    """
    request = WatchRequest(
        inputs,
        interval=interval,
        refresh=refresh,
        batch_size=batch_size,
        generated_passwords=generated_passwords,
        lock_timeout=lock_timeout,
    )
    observers = [_line_printer()]
    if metrics_port is not None:
        from reconcile.operations.watch_metrics import WatchMetrics

        metrics = WatchMetrics()
        server = metrics.serve(metrics_address, metrics_port)
        where = f"http://{metrics_address}:{server.server_port}"
        echo_err(f"metrics on {where}/metrics, health on {where}/healthz")
        observers.append(metrics.observe)
    # Plain lines, never a live display: a controller's stderr is a log, not a terminal to redraw.
    shutdown, progress = Shutdown(), ApplyProgress(live=False)
    with shutdown.on_signals():
        watch(
            request,
            lambda report: _each(observers, report),
            reporter=Reporter(
                say=echo_err, warn=_once(echo_warning), on_event=progress.client_event, progress=progress
            ),
            shutdown=shutdown,
        )
    echo_err(f"watch stopped: {shutdown.reason}" if shutdown.reason else "watch stopped")


def _each(observers: list[Any], report: CycleReport) -> None:
    for observe in observers:
        observe(report)


def _once(warn: Any) -> Any:
    """Say each loader warning once, not once per cycle."""
    seen: set[str] = set()

    def say(text: str) -> None:
        if text not in seen:
            seen.add(text)
            warn(text)

    return say


def _line_printer() -> Any:
    tty = sys.stdout.isatty()

    def show(report: CycleReport) -> None:
        echo(_text(report) if tty else json.dumps(report.to_json_dict(), sort_keys=True))

    return show


def _text(report: CycleReport) -> str:
    """``14:05:01 cycle 3 applied: 2 created, 1 granted · 1 awaiting (0.4 s)``."""
    parts = [f"{report.started:%H:%M:%S} cycle {report.cycle} {report.outcome.replace('_', ' ')}"]
    done = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in report.applied.items())
    text = parts[0] + (f": {done}" if done else "")
    if report.awaiting_agreement:
        text += f" · {report.awaiting_agreement} awaiting the agreement"
    if report.drift:
        text += f" · drift {report.drift}"
    if report.generated_passwords:
        text += f" · passwords in {report.generated_passwords}"
    if report.message:
        text += f" · {report.message.splitlines()[0]}"
    return printable(text) + f" ({report.seconds:.1f} s)"
