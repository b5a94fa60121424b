"""The text renderer: a Terraform-like plan for terminals and CI logs."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from operator import attrgetter

import click

from reconcile.errors import counted
from reconcile.planning.plan import Action, ActionKind, Diagnostic, DriftEntry, Plan
from reconcile.planning.policy import cancellations_of, revocations_of
from reconcile.render.describe import (
    describe,
    describe_drift,
    differences,
    drift_sentence,
    rechecks,
    safe,
    summary_sentence,
    targeting_sentence,
    unmanaged_sentence,
    wording,
)
from reconcile.render.options import RenderOptions

_COLOURS = {
    ActionKind.create: "green",
    ActionKind.update_email: "yellow",
    ActionKind.update_contact: "yellow",
    ActionKind.grant_entitlement: "cyan",
    ActionKind.create_account: "green",
    ActionKind.update_risk: "yellow",
    ActionKind.switch_risk_category: "yellow",
    ActionKind.set_trading: "yellow",
    ActionKind.reset_account: "cyan",
    ActionKind.revoke_trading: "red",
    ActionKind.cancel_everything: "red",
}
_LOUD = frozenset({ActionKind.cancel_everything, ActionKind.revoke_trading})
_DIAGNOSTIC_STYLE = {"error": ("Error", "red"), "warning": ("Warning", "yellow"), "info": ("Note", None)}


def render_text(plan: Plan, options: RenderOptions) -> Iterator[str]:
    """Yield ``plan`` as text in pieces of whole lines; values in full (``--show-pii`` is for reviews).

    In pieces so that a plan of 300k actions never stands in memory as one string.
    """

    def paint(text: str, fg: str | None = None, bold: bool = False) -> str:
        return click.style(text, fg=fg, bold=bold) if options.colour else text

    b = plan.binding
    out = [
        f"Plan for environment {safe(b.environment)} at {safe(b.endpoint)} "
        f"(state serial {b.state_serial}, manifest {safe(b.manifest_digest)[:19]})",
        "",
    ]
    targeting = targeting_sentence(plan)
    if targeting:
        out += [paint(f"!!! {targeting}", "magenta", bold=True), ""]

    out += _drift(plan, paint)

    changes = plan.changes
    if changes:
        out.append("Actions (+ create, ~ update, > grant, < reset, - cancel or revoke):")
        yield _lines(out)
        yield from _actions(changes, paint if options.colour else None)
        out = [""]

    cancelled = cancellations_of(plan)
    if cancelled:
        names = ", ".join(safe(a.user) for a in cancelled)
        out += _loud(paint, f"{counted(len(cancelled), 'user')} will be CANCELLED, irreversibly: {names}")
    revoked = revocations_of(plan)
    if revoked:
        names = ", ".join(f"{safe(a.account)} ({safe(a.user)})" for a in revoked)
        out += _loud(
            paint, f"{counted(len(revoked), 'trading permission')} will be REVOKED, irreversibly: {names}"
        )

    # Re-checks are the actions that are not changes: none to look for when the counts agree.
    waiting = [describe(a, show_pii=True) for a in rechecks(plan)] if len(changes) < len(plan.actions) else []
    if waiting:
        out.append("Awaiting agreement (checked again on apply):")
        width = max(len(line.user) for line in waiting)
        out += [f"  {line.symbol} {line.user.ljust(width)}  {line.what}" for line in waiting]
        out.append("")

    if plan.diagnostics:
        out += [_diagnostic(d, paint) for d in plan.diagnostics]
        out.append("")

    out.append(paint(summary_sentence(plan), bold=True))
    yield _lines(out)


_PIECE = 4096
"""Action lines per piece of output (about half a megabyte)."""


def _lines(lines: list[str]) -> str:
    return "\n".join(lines) + "\n"


def _actions(changes: Sequence[Action], paint: Callable[..., str] | None) -> Iterator[str]:
    """The action lines, a piece at a time, users padded to the longest name of all."""
    users = list(map(attrgetter("user"), changes))
    if not "".join(users).isprintable():  # one check for all names, the common case
        users = [safe(user) for user in users]
    width = max(map(len, users))
    heads = {kind: f"  {kind.symbol} " for kind in ActionKind}
    for start in range(0, len(changes), _PIECE):
        lines = []
        for action, user in zip(changes[start : start + _PIECE], users[start : start + _PIECE], strict=True):
            what, details = wording(action, show_pii=True)
            kind = action.action
            text = f"{heads[kind]}{user.ljust(width)}  {what}"
            if details:
                text = f"{text}: {', '.join(details)}"
            lines.append(text if paint is None else paint(text, _COLOURS[kind], bold=kind in _LOUD))
        yield _lines(lines)


def _loud(paint: Callable[..., str], sentence: str) -> list[str]:
    return [paint(f"!!! {sentence}", "red", bold=True), ""]


def _diagnostic(diagnostic: Diagnostic, paint: Callable[..., str]) -> str:
    label, colour = _DIAGNOSTIC_STYLE[diagnostic.severity]
    where = f"{safe(diagnostic.user)}: " if diagnostic.user else ""
    return f"{paint(label + ':', colour, bold=True)} {where}{safe(diagnostic.message)}"


def _drift(plan: Plan, paint: Callable[..., str]) -> list[str]:
    """The drift section of a refreshed plan: each difference, then the unmanaged users."""
    if plan.refresh is None:
        return []
    out = [paint(drift_sentence(plan), "magenta" if plan.refresh.drift else None, bold=True)]
    out += drift_lines(plan.refresh.drift)
    unmanaged = unmanaged_sentence(plan.refresh.unmanaged)
    return [*out, unmanaged, ""] if unmanaged else [*out, ""]


def drift_lines(entries: Sequence[DriftEntry]) -> list[str]:
    """``  ! trader001  changed outside reconcile: …``, one line per difference (PII shown)."""
    shown = differences(entries)
    if not shown:
        return []
    width = max(len(safe(d.user)) for d in shown)
    return [f"  ! {safe(d.user).ljust(width)}  {describe_drift(d, show_pii=True)}" for d in shown]
