"""``reconcile plan``: show what apply would change, from the manifest and recorded state alone.

No API credentials and no network: the plan is bound to the endpoint *label* only. With
``--refresh`` the live organization is read too (credentials needed; for ``sim``, the embedded
simulator), drift is reported and the plan repairs it.
Exit codes: 0 no changes (or changes without --detailed-exitcode); 1 error, including a plan
with error diagnostics; 2 changes or drift present with --detailed-exitcode; 3 the plan cancels
more users than the policy allows (the plan is still printed, with the policy warning, so a
reviewer sees what would be cancelled; apply enforces the same budget).
"""

from __future__ import annotations

import contextlib
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

from reconcile import __version__
from reconcile.cli.options import PlanInputs, format_options, lock_options, plan_inputs
from reconcile.cli.output import echo, echo_err, echo_warning, use_colour
from reconcile.errors import PlanError, PolicyError, counted
from reconcile.manifest.models import Manifest, PasswordGenerate
from reconcile.planning.plan import CancelEverything, CreateUser, Diagnostic, Plan, PlanBinding, save_plan
from reconcile.planning.policy import CancellationCheck, cancellations_of, evaluate_cancellations
from reconcile.planning.snapshot import LiveSnapshot
from reconcile.render import RenderOptions, render
from reconcile.state.model import State, StateBinding, StateStore

if TYPE_CHECKING:
    from reconcile.manifest.loader import LoadedManifest

LiveRead = Callable[[Manifest, State], LiveSnapshot]
"""Reads the live organization for a manifest and its recorded state (``plan --refresh``)."""


@dataclass(frozen=True)
class PreparedPlan:
    """A plan with what it was made from."""

    plan: Plan
    manifest: Manifest
    state: State
    unsettled: int = 0
    """Journal intents an interrupted apply left open (their users are left out of the plan)."""
    whole: tuple[CancelEverything, ...] | None = None
    """The cancellations of the whole manifest when --target/--exclude narrowed the plan."""


def prepare_plan(
    inputs: PlanInputs, *, read_live: LiveRead | None = None, lock_timeout: float | None = None
) -> PreparedPlan:
    """Load the manifest and the recorded state, and plan; no network unless ``read_live`` is given.

    The loader's warnings (literal passwords in live, …) go to stderr once the plan is made.
    With ``lock_timeout`` (seconds, negative = forever) the state lock is held while state is
    read and planned, so a plan never sees an apply half-way; None plans without it (``apply``
    plans under the lock it already holds).
    """
    from reconcile.planning.planner import make_plan
    from reconcile.state.journal import hold_unsettled

    loaded, label, store = open_inputs(inputs)
    manifest = loaded.manifest
    environment = manifest.environment
    locked = (
        contextlib.nullcontext()
        if lock_timeout is None
        else store.read_lock(timeout=lock_timeout, on_wait=echo_err)
    )
    with locked:
        state = store.load(environment)
        binding = PlanBinding(
            manifest_digest=loaded.digest,
            state_lineage=state.lineage,
            state_serial=state.serial,
            environment=environment,
            endpoint=label,
            tool_version=__version__,
            companion=companion_of(inputs, label),
        )
        live = read_live(manifest, state) if read_live is not None else None
        plan = make_plan(
            manifest, state, binding=binding, targets=inputs.targets, excludes=inputs.excludes, live=live
        )
        intents = store.journal(environment).unsettled()
        whole = whole_cancellations(plan, manifest, state, live)
    for warning in loaded.warnings:
        echo_warning(str(warning))
    return PreparedPlan(
        with_companion_note(hold_unsettled(plan, intents)), manifest, state, len(intents), whole
    )


def whole_cancellations(
    plan: Plan, manifest: Manifest, state: State, live: LiveSnapshot | None = None
) -> tuple[CancelEverything, ...] | None:
    """The cancellations of ``manifest`` planned whole, when ``plan`` was narrowed; else None.

    The policy judges these (reconcile/planning/policy.py): --target must not slice an empty manifest
    into budget-sized cancellations.
    """
    from reconcile.planning.planner import make_plan

    if not plan.targeted and not plan.excluded:
        return None
    return cancellations_of(make_plan(manifest, state, binding=plan.binding, live=live))


def companion_of(inputs: PlanInputs, label: str) -> str | None:
    """The host that also receives cancellations for the endpoint ``label`` (None: no companion)."""
    from reconcile.api.endpoints import resolve_companion

    return resolve_companion(label, inputs.companion_endpoint)


def with_companion_note(plan: Plan) -> Plan:
    """Say once, when cancellations reach one host only because --endpoint has no companion."""
    from reconcile.api.endpoints import EMBEDDED_SIM

    binding = plan.binding
    if binding.companion is not None or binding.endpoint == EMBEDDED_SIM:
        return plan
    if not any(isinstance(a, CancelEverything) for a in plan.actions):
        return plan
    note = Diagnostic(
        severity="info",
        message=f"cancellations go to {binding.endpoint} only: an --endpoint override has no companion "
        "host; pass --companion-endpoint URL to cancel on the other host (live/demo) too",
    )
    return plan.model_copy(update={"diagnostics": (*plan.diagnostics, note)})


def open_inputs(inputs: PlanInputs) -> tuple[LoadedManifest, str, StateStore]:
    """Load the manifests, then resolve the endpoint label and open the state store they choose."""
    from reconcile.api.endpoints import resolve_endpoint
    from reconcile.manifest.loader import load_manifest
    from reconcile.state.open import open_store

    loaded = load_manifest(list(inputs.paths))
    manifest = loaded.manifest
    label = resolve_endpoint(manifest.environment, inputs.endpoint)
    store = open_store(
        manifest.environment,
        state_path=inputs.state_path,
        backend_url=inputs.backend,
        manifest_backend=manifest.backend,
    )
    store.bind(StateBinding(endpoint=label, dataAccountId=manifest.partner.dataAccountId))
    return loaded, label, store


def print_plan(plan: Plan, fmt: str, show_pii: bool, *, err: bool = False) -> None:
    """Render ``plan`` to stdout (stderr with ``err``); colour only for text on a TTY without NO_COLOR."""
    stream = sys.stderr if err else sys.stdout
    options = RenderOptions(colour=fmt == "text" and use_colour(stream), show_pii=show_pii)
    (echo_err if err else echo)(render(plan, fmt, options).rstrip("\n"))


GENERATED_PASSWORDS_HINT = "new-passwords.txt"
"""The file the saved-plan hint names for generated passwords (apply creates it, mode 0600)."""


def apply_command(planfile: Path, inputs: PlanInputs, plan: Plan | None = None) -> str:
    """The command that applies ``planfile``: the plan is bound to its state and endpoint, so say them.

    A DSN may carry a password, so ``--backend`` is named but never printed. When ``plan``
    creates users with ``{generate: true}``, apply needs ``--generated-passwords``: say it too.
    """
    words = ["reconcile", "apply", str(planfile)]
    for path in inputs.paths:
        words += ["-f", str(path)]
    if inputs.state_path is not None:
        words += ["--state", str(inputs.state_path)]
    if inputs.endpoint is not None:
        words += ["--endpoint", inputs.endpoint]
    if inputs.companion_endpoint is not None:
        words += ["--companion-endpoint", inputs.companion_endpoint]
    if plan is not None and any(
        isinstance(a, CreateUser) and isinstance(a.password, PasswordGenerate) for a in plan.actions
    ):
        words += ["--generated-passwords", GENERATED_PASSWORDS_HINT]
    command = shlex.join(words)
    return f"{command} --backend URL (the same as for this plan)" if inputs.backend else command


def with_policy(plan: Plan, check: CancellationCheck) -> Plan:
    """Add the policy's refusal to the plan's diagnostics, so every format shows it."""
    diagnostic = check.diagnostic()
    if diagnostic is None:
        return plan
    return plan.model_copy(update={"diagnostics": (diagnostic, *plan.diagnostics)})


def refuse_errors(plan: Plan) -> None:
    """Raise PlanError when ``plan`` has error diagnostics: apply refuses such a plan."""
    if not plan.has_errors:
        return
    count = sum(1 for d in plan.diagnostics if d.severity == "error")
    raise PlanError(
        f"the plan has {counted(count, 'error')} (listed above); fix the manifest, then plan again"
    )


@click.command("plan")
@plan_inputs
@format_options
@lock_options
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="PLANFILE",
    help="Save the plan for `reconcile apply PLANFILE` (not written when the plan has errors).",
)
@click.option(
    "--detailed-exitcode",
    is_flag=True,
    help="Exit 2 when the plan has changes, or drift with --refresh (0 none, 1 error, 3 refused by policy).",
)
@click.option(
    "--refresh",
    is_flag=True,
    help="Read the live organization first (needs API credentials; sim: the embedded simulator): "
    "report drift from recorded state and plan its repair.",
)
@click.option(
    "--allow-cancellations",
    type=click.IntRange(min=0),
    metavar="N",
    help="Accept up to N cancellations in this plan, whatever the policy budget says.",
)
def command(
    inputs: PlanInputs,
    fmt: str,
    show_pii: bool,
    lock_timeout: float | None,
    out: Path | None,
    detailed_exitcode: bool,
    allow_cancellations: int | None,
    refresh: bool,
) -> None:
    """Show what apply would change; needs no API credentials (except with --refresh).

    \b
    Exit codes: 0 no changes (or changes, without --detailed-exitcode); 1 error;
    2 changes or drift present (--detailed-exitcode); 3 more cancellations than the policy allows.
    Awaiting-agreement re-checks are not changes.
    """
    reader = live_reader(inputs.endpoint, inputs.state_path) if refresh else None
    prepared = prepare_plan(inputs, read_live=reader, lock_timeout=lock_timeout)
    check = evaluate_cancellations(
        prepared.plan, prepared.state, prepared.manifest.policy, allow_cancellations, whole=prepared.whole
    )
    # A person at a terminal reads the refusal once, as the error below; review formats (a pull
    # request comment, a JSON consumer) do not see stderr, so the plan itself carries it there.
    plan = prepared.plan if fmt == "text" else with_policy(prepared.plan, check)
    print_plan(plan, fmt, show_pii)
    refuse_errors(plan)
    if check.refused:
        # No plan file: apply would refuse it for the same reason.
        raise PolicyError(check.message())
    if out is not None:
        save_plan(plan, out)
        echo_err(f"Saved the plan to {out}; apply it with: {apply_command(out, inputs, plan)}")
    if detailed_exitcode and (plan.has_changes or plan.has_drift or prepared.unsettled):
        click.get_current_context().exit(2)


def live_reader(endpoint: str | None, state_path: Path | None) -> LiveRead:
    """A reader of the live organization through the environment's API (say what it read on stderr)."""

    def read(manifest: Manifest, state: State) -> LiveSnapshot:
        from datetime import UTC, datetime

        from reconcile.api.connect import open_client
        from reconcile.operations.read_live import read_live

        state_dir = state_path.parent if state_path is not None else Path("state")
        with open_client(manifest.environment, endpoint=endpoint, state_dir=state_dir) as client:
            live = read_live(
                client,
                agreement_alert_id=manifest.agreement_alert_id,
                contacts_of=[r.userId for r in state.users.values() if r.lifecycle == "active"],
                read_at=datetime.now(UTC),
            )
            where = client.endpoint_label
        echo_err(f"Read {len(live.users)} users of the organization at {where} ({live.requests} requests).")
        return live

    return read
