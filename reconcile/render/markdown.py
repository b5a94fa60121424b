"""The Markdown renderer: a pull-request comment a reviewer can read in ten seconds.

Order is priority: summary table, errors, warnings (policy included), cancellations, notes,
agreement re-checks, then per-user details in collapsible sections. A size guard keeps the comment under
``RenderOptions.max_chars`` (GitHub refuses comments over 65,536 characters): items are added
in that order while they fit, and a closing note says how many of each were left out.
Everything from the manifest is escaped (names are untrusted), and emails, phones, street
addresses and post codes are masked unless ``show_pii``.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from collections.abc import Iterable, Iterator

from reconcile.errors import counted
from reconcile.planning.plan import REASONS, Action, ActionKind, Plan
from reconcile.planning.policy import cancellations_of, revocations_of
from reconcile.render.describe import (
    ActionLine,
    describe,
    describe_drift,
    differences,
    drift_sentence,
    rechecks,
    safe,
    summary_sentence,
    targeting_sentence,
)
from reconcile.render.options import RenderOptions

_TABLE = (
    (ActionKind.create, "`+` create"),
    (ActionKind.update_email, "`~` email change"),
    (ActionKind.update_contact, "`~` contact update"),
    (ActionKind.grant_entitlement, "`>` grant"),
    (ActionKind.create_account, "`+` create account"),
    (ActionKind.update_risk, "`~` risk update"),
    (ActionKind.switch_risk_category, "`~` risk category switch"),
    (ActionKind.set_trading, "`~` lock / unlock trading"),
    (ActionKind.reset_account, "`<` account reset"),
)
_IRREVERSIBLE = (
    (ActionKind.revoke_trading, "`-` revoke trading (irreversible)"),
    (ActionKind.cancel_everything, "`-` cancel (irreversible)"),
)
_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_\[\]()#~|!])")
_NOTE_RESERVE = 400  # room kept for the "left out" note


def prose(text: str) -> str:
    """Escape untrusted text for Markdown: it cannot become links, images, HTML or formatting."""
    one_line = safe(text.replace("\r", " ").replace("\n", " "))
    return html.escape(_MARKDOWN_PUNCTUATION.sub(r"\\\1", one_line), quote=False)


def code(text: str) -> str:
    """Untrusted text as inline code in Markdown (table cells and lists)."""
    return f"<code>{prose(text)}</code>"


def html_code(text: str) -> str:
    """Untrusted text as inline code inside an HTML block (``<summary>``: no Markdown there)."""
    escaped = html.escape(safe(text.replace("\r", " ").replace("\n", " ")), quote=False)
    return f"<code>{escaped.replace('[', '&#91;').replace(']', '&#93;')}</code>"


class _Budget:
    """Collects the comment, adding optional items only while they fit."""

    def __init__(self, limit: int, reserve: int) -> None:
        self.parts: list[str] = []
        self.size = 0
        self.limit = limit - reserve
        self.full = False
        self.left_out: Counter[str] = Counter()

    def must(self, text: str) -> None:
        self.parts.append(text)
        self.size += len(text) + 1

    def item(self, what: str, text: str) -> None:
        if self.full or self.size + len(text) + 1 > self.limit:
            self.full = True
            self.left_out[what] += 1
            return
        self.must(text)

    def items(self, what: str, texts: Iterable[str], total: int) -> None:
        """Add each of ``total`` items while they fit; count the rest without making them.

        At 100k users only a few hundred fit, and making the rest would take seconds.
        """
        for done, text in enumerate(texts, start=1):
            self.item(what, text)
            if self.full:
                self.left_out[what] += total - done
                return


def render_markdown(plan: Plan, options: RenderOptions) -> Iterator[str]:
    """Yield ``plan`` as a pull-request comment of at most ``options.max_chars`` characters."""
    footer = _footer(plan, options)
    out = _Budget(options.max_chars, reserve=len(footer) + _NOTE_RESERVE)
    out.must(f"## reconcile plan: {code(plan.binding.environment)}\n")

    targeting = targeting_sentence(plan)
    if targeting:
        out.must(f"> [!WARNING]\n> **{prose(targeting)}**\n")

    out.must(f"**{summary_sentence(plan)}**\n")
    out.must(_table(plan))

    _diagnostics(out, plan, "error", "Errors")
    _diagnostics(out, plan, "warning", "Warnings")
    _drift(out, plan, options)

    cancelled, revoked = cancellations_of(plan), revocations_of(plan)
    irreversible = (
        (
            f"{counted(len(cancelled), 'user')} will be cancelled",
            "cancellations",
            len(cancelled),
            (f"{code(a.user)} ({REASONS[a.reason]})" for a in cancelled),
        ),
        (
            f"{counted(len(revoked), 'trading permission')} will be revoked",
            "revocations",
            len(revoked),
            (f"{code(a.account)} of {code(a.user)} ({REASONS[a.reason]})" for a in revoked),
        ),
    )
    for headline, what, total, items in irreversible:
        _caution(out, f"{headline}, irreversibly:", what, items, total)

    _diagnostics(out, plan, "info", "Notes")

    waiting = rechecks(plan)
    if waiting:
        out.must("### Awaiting agreement\n")
        out.must("Not changes: apply checks again whether these traders signed the Market Data Agreement.\n")
        lines = (f"- {code(grant.user)}: {code(grant.entitlement)}" for grant in waiting)
        out.items("agreement re-checks", lines, len(waiting))
        out.must("")

    _per_user(out, plan, options)

    if out.left_out:
        left = ", ".join(f"{n:,} {what}" for what, n in out.left_out.items())
        out.must(
            f"> [!NOTE]\n> **Left out to stay under {options.max_chars:,} characters:** {left}. "
            "The full plan: `reconcile show PLANFILE` on the saved plan, or `--format json`.\n"
        )
    out.must(footer)
    yield "\n".join(out.parts) + "\n"


def _per_user(out: _Budget, plan: Plan, options: RenderOptions) -> None:
    """Each user's changes, collapsed, in name order; only the users that fit are described."""
    per_user: dict[str, list[Action]] = {}
    for change in plan.changes:
        per_user.setdefault(change.user, []).append(change)
    if not per_user:
        return
    out.must("### Changes per user\n")
    details = (
        _details(user, [describe(a, show_pii=options.show_pii) for a in per_user[user]])
        for user in sorted(per_user)
    )
    out.items("user details", details, len(per_user))


def _caution(out: _Budget, headline: str, what: str, items: Iterable[str], total: int) -> None:
    """An irreversible part of the plan, as a CAUTION block listing each item while they fit."""
    if not total:
        return
    out.must(f"> [!CAUTION]\n> **{headline}**")
    out.items(what, (f"> - {item}" for item in items), total)
    out.must("")


def _diagnostics(out: _Budget, plan: Plan, severity: str, title: str) -> None:
    found = [d for d in plan.diagnostics if d.severity == severity]
    if not found:
        return
    out.must(f"### {title}\n")
    lines = (f"- {code(d.user) + ': ' if d.user else ''}{prose(d.message)}" for d in found)
    out.items(title.lower(), lines, len(found))
    out.must("")


def _drift(out: _Budget, plan: Plan, options: RenderOptions) -> None:
    if plan.refresh is None:
        return
    out.must("### Drift\n")
    out.must(f"{prose(drift_sentence(plan))}\n")
    shown = differences(plan.refresh.drift)
    lines = (f"- {code(e.user)}: {prose(describe_drift(e, show_pii=options.show_pii))}" for e in shown)
    out.items("drift entries", lines, len(shown))
    if shown:
        out.must("")
    if plan.refresh.unmanaged:
        out.must("Unmanaged users (in the organization; never changed or cancelled by reconcile):\n")
        names = plan.refresh.unmanaged
        out.items("unmanaged users", (f"- {code(name)}" for name in names), len(names))
        out.must("")


def _table(plan: Plan) -> str:
    summary = plan.summary
    rows = ["| action | count |", "| --- | ---: |"]
    rows += [f"| {label} | {summary[kind.value]} |" for kind, label in _TABLE]
    for kind, label in _IRREVERSIBLE:
        n = summary[kind.value]
        rows.append(f"| **{label}** | **:warning: {n}** |" if n else f"| {label} | 0 |")
    rows.append(f"| awaiting agreement (re-check, no change) | {summary['recheck']} |")
    return "\n".join(rows) + "\n"


def _details(user: str, lines: list[ActionLine]) -> str:
    what = html.escape(", ".join(line.what for line in lines), quote=False)
    items = []
    for line in lines:
        details = f": {code(', '.join(line.details))}" if line.details else ""
        items.append(f"- `{line.symbol}` {prose(line.what)}{details}")
    body = "\n".join(items)
    return f"<details><summary>{html_code(user)}: {what}</summary>\n\n{body}\n\n</details>\n"


def _footer(plan: Plan, options: RenderOptions) -> str:
    b = plan.binding
    pii = "PII shown (--show-pii)" if options.show_pii else "emails, phones and addresses masked"
    return (
        f"<sub>environment {code(b.environment)} · endpoint {code(b.endpoint)} · state serial "
        f"{b.state_serial} · manifest {code(b.manifest_digest[:19])} · "
        f"reconcile {html.escape(b.tool_version)} · {pii}</sub>"
    )
