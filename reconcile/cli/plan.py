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

import shlex
from pathlib import Path

import click

from reconcile.cli.options import format_options, lock_options, plan_inputs
from reconcile.cli.output import echo_err, keep_until_exit, print_plan, stderr_reporter
from reconcile.errors import PolicyError
from reconcile.manifest.models import PasswordGenerate
from reconcile.operations.inputs import PlanInputs
from reconcile.operations.plan import plan as make_plan
from reconcile.operations.plan import refuse_errors
from reconcile.planning.plan import CreateUser, Plan, save_plan

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
    help="Accept up to N cancellations (users cancelled plus trading permissions revoked) in this "
    "plan, whatever the policy budget says.",
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
    2 changes or drift present (--detailed-exitcode); 3 more cancellations (users cancelled,
    trading permissions revoked) than the policy allows.
    Awaiting-agreement re-checks are not changes.
    """
    made = make_plan(
        inputs,
        lock_timeout=lock_timeout,
        refresh=refresh,
        allow_cancellations=allow_cancellations,
        reporter=stderr_reporter(),
    )
    keep_until_exit(made)
    # A person at a terminal reads the refusal once, as the error below; review formats (a pull
    # request comment, a JSON consumer) do not see stderr, so the plan itself carries it there.
    plan = made.plan if fmt == "text" else made.reviewed
    print_plan(plan, fmt, show_pii)
    refuse_errors(plan)
    if made.check.refused:
        # No plan file: apply would refuse it for the same reason.
        raise PolicyError(made.check.message())
    if out is not None:
        save_plan(plan, out)
        echo_err(f"Saved the plan to {out}; apply it with: {apply_command(out, inputs, plan)}")
    if detailed_exitcode and made.changed:
        click.get_current_context().exit(2)
