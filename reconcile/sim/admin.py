"""The simulator's own operations (outside the partner contract), usable with or without HTTP.

``/_sim/...`` routes and ``reconcile sim ... --db PATH`` both call these, so a test or a person
can sign the Market Data Agreement for a trader, add a user made outside the tool, arm faults,
change limits and time, and read everything back.
"""

from __future__ import annotations

import json
import math
from typing import Any

from reconcile.contract import contract
from reconcile.errors import did_you_mean, plural
from reconcile.sim import rules
from reconcile.sim.config import RuntimeSettings, SimConfig
from reconcile.sim.faults import FAULT_KINDS
from reconcile.sim.rules import HttpError
from reconcile.sim.store import Store

Body = dict[str, Any]


def sign_agreement(store: Store, config: SimConfig, name: str) -> Body:
    """Sign the Market Data Agreement as the trader ``name`` would; returns the AdminAlertSignal."""
    with store.transaction() as tx:
        row = tx.one("SELECT id FROM users WHERE name = ?", (name,))
        if row is None:
            raise HttpError(404, f"no user named {name!r}; create the user first (reconcile apply)")
        return rules.sign_agreement(tx, config, row["id"])


def add_user(store: Store, config: SimConfig, fields: Body) -> Body:
    """Add a user created outside the tool (e.g. in the partner's web console); returns it."""
    known = {"name", "email", "firstName", "lastName", "password", "organizationId", "status"}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise HttpError(
            400,
            f"unknown {plural(len(unknown), 'field')} {', '.join(unknown)}; "
            f"expected some of {', '.join(sorted(known))}",
        )
    missing = [f for f in ("name", "email") if not fields.get(f)]
    if missing:
        raise HttpError(400, f"missing {plural(len(missing), 'field')}: {', '.join(missing)}")
    with store.transaction() as tx:
        user_id = rules.insert_user(
            tx,
            config,
            name=fields["name"],
            email=fields["email"],
            first_name=fields.get("firstName", "Outside"),
            last_name=fields.get("lastName", "User"),
            password=fields.get("password", "outside-password"),
            org_id=int(fields.get("organizationId", config.organization_id)),
            status=fields.get("status", "Active"),
        )
        return rules.user_json(tx.one("SELECT * FROM users WHERE id = ?", (user_id,)))


def arm_fault(store: Store, kind: str, path: str, count: int = 1, seconds: float = 0.0) -> Body:
    """Make the next ``count`` requests to ``path`` (a contract path, any case, or ``*``) fail as ``kind``."""
    if kind not in FAULT_KINDS:
        raise HttpError(400, f"unknown fault kind {kind!r}; expected one of {', '.join(FAULT_KINDS)}")
    if count < 1:
        raise HttpError(400, "count must be at least 1")
    key = normalise_path(path)
    served = [p.lower() for p in contract()["paths"]]
    if key != "*" and key not in served:
        # A fault on a path nothing requests would wait forever, and the test built on it would
        # pass for the wrong reason (the simulator serves exactly the contract's paths).
        raise HttpError(
            400,
            f"no such path {path!r} (give a contract path such as "
            f"/user/createevaluationusers, or '*' for every path){did_you_mean(key, served)}",
        )
    with store.transaction() as tx:
        fault_id = tx.run(
            "INSERT INTO faults (kind, path, remaining, seconds) VALUES (?, ?, ?, ?)",
            (kind, key, count, seconds),
        )
    return {"id": fault_id, "kind": kind, "path": key, "count": count, "seconds": seconds}


def list_faults(store: Store) -> list[Body]:
    """The faults still armed, oldest first."""
    with store.transaction() as tx:
        return [
            {
                "id": r["id"],
                "kind": r["kind"],
                "path": r["path"],
                "count": r["remaining"],
                "seconds": r["seconds"],
            }
            for r in tx.all("SELECT * FROM faults ORDER BY id")
        ]


def normalise_path(path: str) -> str:
    """Lower-case, without the ``/v1`` prefix or a query: the key faults and limits are filed under."""
    bare = path.split("?", 1)[0].rstrip("/").lower() or "/"
    if bare.startswith("/v1/"):
        bare = bare[3:]
    return bare


def get_config(store: Store, config: SimConfig) -> Body:
    """The runtime knobs, simulated time and the organization the simulator plays."""
    with store.transaction() as tx:
        refused = tx.all("SELECT path, answer, COUNT(*) AS n FROM over_limit GROUP BY path, answer")
        over = {f"{r['path']} {r['answer']}": r["n"] for r in refused}
        return _config_json(tx.settings, tx.now, config) | {"overLimit": over}


def set_config(store: Store, config: SimConfig, changes: Body) -> Body:
    """Change runtime knobs (see :class:`RuntimeSettings`); ``advance_seconds`` jumps time ahead."""
    allowed = set(RuntimeSettings.model_fields) | {"advance_seconds"}
    unknown = sorted(set(changes) - allowed)
    if unknown:
        raise HttpError(
            400,
            f"unknown {plural(len(unknown), 'setting')} {', '.join(unknown)}; "
            f"expected some of {', '.join(sorted(allowed))}",
        )
    advance = float(changes.pop("advance_seconds", 0.0))
    if advance < 0:
        raise HttpError(400, "advance_seconds cannot be negative: simulated time only moves forward")
    with store.transaction() as tx:
        try:
            settings = store.update_settings(tx, advance_seconds=advance, **changes)
        except ValueError as exc:
            raise HttpError(400, f"invalid setting: {exc}") from None
        return _config_json(settings, tx.now + advance, config)


def _config_json(settings: RuntimeSettings, now: float, config: SimConfig) -> Body:
    return {
        **settings.model_dump(),
        "now": rules.iso(now),
        "organization": {
            "id": config.organization_id,
            "name": config.organization_name,
            "adminName": config.admin_name,
            "dataAccountId": config.data_account_id,
            "simplusEntitlementId": config.simplus_entitlement_id,
            "agreementAlertId": config.agreement_alert,
            "subscriptionPlans": sorted(config.subscription_plans),
            "entitlements": {str(i): e.name for i, e in sorted(config.entitlements.items())},
        },
    }


def reset(store: Store, config: SimConfig) -> Body:
    """Forget every user, session, fault and limit counter; knobs return to ``config``'s."""
    store.reset(RuntimeSettings.from_config(config))
    return {"reset": True}


def dump_users(store: Store) -> list[Body]:
    """Every user of every organization with contact, records and agreement signals (no secrets)."""
    with store.transaction() as tx:
        users = tx.all("SELECT * FROM users ORDER BY id")
        contacts = {r["user_id"]: rules.contact_json(r) for r in tx.all("SELECT * FROM contact_info")}
        records: dict[int, list[Body]] = {}
        for r in tx.all("SELECT * FROM records ORDER BY id"):
            records.setdefault(r["user_id"], []).append(
                {
                    "id": r["id"],
                    "kind": r["kind"],
                    "refId": r["ref_id"],
                    "accountId": r["account_id"],
                    "cancelled": r["cancelled_at"] is not None,
                }
            )
        signals: dict[int, list[Body]] = {}
        for r in tx.all("SELECT * FROM alert_signals ORDER BY id"):
            signals.setdefault(r["user_id"], []).append(rules.signal_json(r))
        return [
            {
                **rules.user_json(u),
                "firstName": u["first_name"],
                "lastName": u["last_name"],
                "origin": u["origin"],
                "contactInfo": contacts.get(u["id"]),
                "records": records.get(u["id"], []),
                "agreementSignals": signals.get(u["id"], []),
            }
            for u in users
        ]


def dumps(value: Any) -> str:
    """Deterministic JSON for admin answers and CLI output."""
    return json.dumps(value, indent=2, sort_keys=True)


# --- evaluation accounts ---------------------------------------------------------------------------

_ACCOUNT_DUMP = """
SELECT a.*, u.name AS user_name, p.id AS permission_id, p.cancelled_at, l.data AS auto_liq,
       s.admin_action, s.reason_code, s.reason
FROM accounts a
LEFT JOIN users u ON u.id = a.user_id
LEFT JOIN records p ON p.account_id = a.id AND p.kind = 'tradingPermission'
LEFT JOIN auto_liqs l ON l.id = a.id
LEFT JOIN risk_status s ON s.id = a.id
"""


def _account_entry(row: Any, config: SimConfig) -> Body:
    template = config.account_templates.get(row["template_account_id"])
    category = config.risk_categories.get(row["risk_category_id"])
    return {
        "id": row["id"],
        "name": row["name"],
        "organizationId": row["org_id"],
        "userId": row["user_id"],
        "userName": row["user_name"],
        "templateAccountId": row["template_account_id"],
        "template": template.name if template else None,
        "initialBalance": row["initial_balance"],
        "balance": row["balance"],
        "autoLiq": json.loads(row["auto_liq"]) if row["auto_liq"] else {},
        "riskCategoryId": row["risk_category_id"],
        "riskCategory": category.name if category else None,
        "tradingPermissionId": row["permission_id"],
        "permissionStatus": None if row["permission_id"] is None else rules.permission_status(row),
        "adminAction": row["admin_action"],
        "adminActionReasonCode": row["reason_code"],
        "adminActionReason": row["reason"],
        "active": bool(row["active"]),
        "resets": row["resets"],
        "lastResetTradeDate": row["last_reset_trade_date"],
    }


def dump_accounts(store: Store, config: SimConfig) -> list[Body]:
    """Every account with user, template, balance, risk settings, category, permission and lock."""
    with store.transaction() as tx:
        return [_account_entry(r, config) for r in tx.all(_ACCOUNT_DUMP + " ORDER BY a.id")]


def move_balance(store: Store, config: SimConfig, fields: Body) -> Body:
    """Move the balance of the account ``name`` by ``amount`` dollars, as a day's trading would."""
    name, amount = fields.get("name"), fields.get("amount")
    if (
        set(fields) != {"name", "amount"}
        or not isinstance(name, str)
        or isinstance(amount, bool)
        or not isinstance(amount, int | float)
        or not math.isfinite(amount)
    ):
        raise HttpError(400, 'expected {"name": "<account name>", "amount": <dollars, e.g. -1250.5>}')
    with store.transaction() as tx:
        row = tx.one("SELECT id FROM accounts WHERE name = ?", (name,))
        if row is None:
            raise HttpError(404, f"no account named {name!r}; create it first (reconcile apply)")
        tx.run("UPDATE accounts SET balance = balance + ? WHERE id = ?", (amount, row["id"]))
        return _account_entry(tx.one(_ACCOUNT_DUMP + " WHERE a.id = ?", (row["id"],)), config)
