"""The partner API's business rules, one function per operation, each inside one store transaction.

Business refusals come back as HTTP 200 bodies with ``errorText`` (and ``errorCode`` where the
contract has one), as the API does; :class:`HttpError` is for what the API answers with a status
(404 for an unknown id on an item read, 400 for a body that is not the operation's shape).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Sequence
from datetime import UTC, date, datetime
from functools import cache
from typing import Any

import pycountry
from email_validator import EmailNotValidError, validate_email

from reconcile.contract import contract
from reconcile.sim.config import SimConfig
from reconcile.sim.store import Tx

Body = dict[str, Any]

TRADOVATE_SUBSCRIPTION = "tradovateSubscription"
TRADING_PERMISSION = "tradingPermission"
USER_PLUGIN = "userPlugin"
MARKET_DATA_SUBSCRIPTION = "marketDataSubscription"

CANCEL_FLAGS = {
    "tradovateSubscriptions": (TRADOVATE_SUBSCRIPTION, "tradovateSubscriptionIds"),
    "tradingPermissions": (TRADING_PERMISSION, "tradingPermissionIds"),
    "userPlugins": (USER_PLUGIN, "userPluginIds"),
    "marketDataSubscriptions": (MARKET_DATA_SUBSCRIPTION, "marketDataSubscriptionIds"),
}
"""canceleverything flag → (record kind, response field)."""


class HttpError(Exception):
    """An answer with an HTTP error status and ``{"errorText": message}``."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(message)


def iso(moment: float) -> str:
    """Format simulated epoch seconds the way the API does: ISO 8601, milliseconds, ``Z``."""
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def trade_date(moment: float) -> dict[str, int]:
    day = datetime.fromtimestamp(moment, UTC)
    return {"year": day.year, "month": day.month, "day": day.day}


def check_password(password: str, stored: str) -> bool:
    """True when ``password`` is the one :func:`hash_password` turned into ``stored``."""
    _, salt, digest = stored.split("$", 2)
    return secrets.compare_digest(hashlib.sha256((salt + password).encode()).hexdigest(), digest)


def hash_password(password: str) -> str:
    """Return a salted SHA-256 of ``password``: never the password, and fast enough for 10,000 users."""
    salt = secrets.token_hex(8)
    return f"sha256${salt}${hashlib.sha256((salt + password).encode()).hexdigest()}"


def _email_problem(email: str) -> str | None:
    if len(email) > 64:
        return f"email {email!r} is longer than 64 characters"
    try:
        validate_email(email, check_deliverability=False)
    except EmailNotValidError as exc:
        return f"email {email!r} is not a valid email address: {exc}"
    return None


def _names_problem(first: str, last: str) -> str | None:
    if not first.strip() or not last.strip():
        return "firstName and lastName are required"
    if len(first) + len(last) > 60:
        return (
            f"firstName and lastName may have at most 60 characters together (got {len(first) + len(last)})"
        )
    return None


# --- users ---------------------------------------------------------------------------------------


def user_json(row: Any) -> Body:
    return {
        "id": row["id"],
        "name": row["name"],
        "timestamp": iso(row["created_at"]),
        "email": row["email"],
        "status": row["status"],
        "professional": False,
        "organizationId": row["org_id"],
    }


def org_user(tx: Tx, org_id: int, user_id: Any) -> Any:
    """The user ``user_id`` of organization ``org_id``, or None (other organizations are invisible)."""
    if not isinstance(user_id, int):
        return None
    return tx.one("SELECT * FROM users WHERE id = ? AND org_id = ?", (user_id, org_id))


def _evaluation_user_problem(user: Body, config: SimConfig) -> str | None:
    name, email, password = user["name"], user["email"], user["password"]
    if not 3 <= len(name) <= 64:
        return f"name {name!r} must have 3 to 64 characters"
    if problem := _email_problem(email):
        return problem
    if not 8 <= len(password) <= 64:
        return "password must have 8 to 64 characters"
    if problem := _names_problem(user["firstName"], user["lastName"]):
        return problem
    plan = user.get("tradovateSubscriptionPlanId")
    if plan is not None and plan not in config.subscription_plans:
        return f"tradovateSubscriptionPlanId {plan} is not a subscription plan of this organization"
    for entitlement_id in user.get("entitlementIds") or ():
        if entitlement_id == config.simplus_entitlement_id:
            return (
                f"entitlement {entitlement_id} (Sim+) cannot be assigned at creation: the user must sign "
                "the Market Data Agreement first, then grant it with /userPlugin/addentitlementsubscription"
            )
        if entitlement_id not in config.entitlements:
            return f"entitlement {entitlement_id} is not in this organization's catalogue"
    return None


def create_evaluation_users(tx: Tx, config: SimConfig, org_id: int, body: Body) -> Body:
    """POST /user/createevaluationusers: one result per user, in order; failures are per user."""
    users: list[Body] = body["users"]
    refusal = _evaluation_request_refusal(users, config)
    if refusal is not None:
        return {"errorText": refusal, "results": []}
    taken_names, taken_emails = _taken_names_and_emails(tx, org_id, users)
    next_id = max(config.first_user_id, (tx.scalar("SELECT max(id) FROM users") or 0) + 1)
    results: list[Body] = []
    user_rows: list[tuple[Any, ...]] = []
    record_rows: list[tuple[Any, ...]] = []
    for user in users:
        problem = _evaluation_user_problem(user, config)
        if problem is None and user["name"].lower() in taken_names:
            problem = f"a user named {user['name']!r} already exists"
        if problem is None and user["email"].lower() in taken_emails:
            problem = f"email {user['email']!r} is already used by another user of this organization"
        if problem is not None:
            results.append({"errorText": problem})
            continue
        user_id = next_id
        next_id += 1
        taken_names.add(user["name"].lower())
        taken_emails.add(user["email"].lower())
        user_rows.append(_evaluation_user_row(tx, org_id, user_id, user))
        record_rows.extend(_evaluation_record_rows(tx, user_id, user))
        results.append({"userId": user_id})
    tx.db.executemany("INSERT INTO users VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", user_rows)
    tx.db.executemany(
        "INSERT INTO records (kind, user_id, ref_id, account_id, created_at) VALUES (?, ?, ?, ?, ?)",
        record_rows,
    )
    return {"results": results}


def _evaluation_request_refusal(users: list[Body], config: SimConfig) -> str | None:
    """Return why the whole request is refused (no user created), or None."""
    if len(users) > config.max_users_per_request:
        return f"At most {config.max_users_per_request} users per request (got {len(users)})"
    for user in users:
        for entitlement_id in user.get("entitlementIds") or ():
            entitlement = config.entitlements.get(entitlement_id)
            if entitlement is not None and entitlement.fails_request:
                return (
                    f"Entitlement {entitlement_id} ({entitlement.name}) cannot be assigned to "
                    "evaluation users; no user in this request was created"
                )
    return None


def _taken_names_and_emails(tx: Tx, org_id: int, users: list[Body]) -> tuple[set[str], set[str]]:
    """Return the names (any organization) and emails (this one) of ``users`` already in use, lowercased."""
    names = json.dumps([u["name"] for u in users])
    emails = json.dumps([u["email"] for u in users])
    taken_names = {
        r[0].lower()
        for r in tx.all("SELECT name FROM users WHERE name IN (SELECT value FROM json_each(?))", (names,))
    }
    taken_emails = {
        r[0].lower()
        for r in tx.all(
            "SELECT email FROM users WHERE org_id = ? AND email IN (SELECT value FROM json_each(?))",
            (org_id, emails),
        )
    }
    return taken_names, taken_emails


def _evaluation_user_row(tx: Tx, org_id: int, user_id: int, user: Body) -> tuple[Any, ...]:
    return (
        user_id,
        org_id,
        user["name"],
        user["email"],
        hash_password(user["password"]),
        user["firstName"],
        user["lastName"],
        "Active",
        tx.now,
        "api",
    )


def _evaluation_record_rows(tx: Tx, user_id: int, user: Body) -> list[tuple[Any, ...]]:
    """Return what a new evaluation user holds: its trading permission, plan and plugins."""
    rows: list[tuple[Any, ...]] = [(TRADING_PERMISSION, user_id, None, None, tx.now)]
    plan = user.get("tradovateSubscriptionPlanId")
    if plan is not None:
        rows.append((TRADOVATE_SUBSCRIPTION, user_id, plan, None, tx.now))
    for entitlement_id in sorted(set(user.get("entitlementIds") or ())):
        rows.append((USER_PLUGIN, user_id, entitlement_id, None, tx.now))
    return rows


def insert_user(
    tx: Tx,
    config: SimConfig,
    *,
    name: str,
    email: str,
    first_name: str,
    last_name: str,
    password: str,
    org_id: int,
    status: str = "Active",
    origin: str = "outside",
) -> int:
    """Add one user the way the partner's web console would (no API rules beyond uniqueness)."""
    if tx.one("SELECT 1 FROM users WHERE name = ?", (name,)):
        raise HttpError(409, f"a user named {name!r} already exists")
    user_id = max(config.first_user_id, (tx.scalar("SELECT max(id) FROM users") or 0) + 1)
    tx.run(
        "INSERT INTO users VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            user_id,
            org_id,
            name,
            email,
            hash_password(password),
            first_name,
            last_name,
            status,
            tx.now,
            origin,
        ),
    )
    tx.run(
        "INSERT INTO records (kind, user_id, created_at) VALUES (?, ?, ?)",
        (TRADING_PERMISSION, user_id, tx.now),
    )
    return user_id


def modify_email_address(tx: Tx, org_id: int, body: Body) -> Body:
    """POST /user/modifyemailaddress."""
    user = org_user(tx, org_id, body.get("userId"))
    if user is None:
        return {"errorText": f"user {body.get('userId')} not found in this organization"}
    email: str = body["email"]
    if problem := _email_problem(email):
        return {"errorText": problem}
    other = tx.one(
        "SELECT name FROM users WHERE org_id = ? AND email = ? AND id != ?", (org_id, email, user["id"])
    )
    if other is not None:
        return {"errorText": f"email {email!r} is already used by another user of this organization"}
    tx.run("UPDATE users SET email = ? WHERE id = ?", (email, user["id"]))
    return {"status": user["status"]}


def cancel_everything(tx: Tx, org_id: int, body: Body) -> Body:
    """POST /user/canceleverything: cancel what each flag names, close the users; repeatable."""
    ids = [i for i in body["userIds"] if org_user(tx, org_id, i) is not None]
    placeholders = json.dumps(ids)
    answer: Body = {field: [] for _, field in CANCEL_FLAGS.values()}
    for flag, (kind, field) in CANCEL_FLAGS.items():
        if not body.get(flag, False):
            continue
        rows = tx.all(
            "SELECT id FROM records WHERE kind = ? AND cancelled_at IS NULL "
            "AND user_id IN (SELECT value FROM json_each(?)) ORDER BY id",
            (kind, placeholders),
        )
        answer[field] = [r[0] for r in rows]
        tx.db.executemany("UPDATE records SET cancelled_at = ? WHERE id = ?", [(tx.now, r[0]) for r in rows])
    tx.run("UPDATE users SET status = 'Closed' WHERE id IN (SELECT value FROM json_each(?))", (placeholders,))
    return answer


def list_users(tx: Tx, org_id: int) -> list[Body]:
    return [user_json(r) for r in tx.all("SELECT * FROM users WHERE org_id = ? ORDER BY id", (org_id,))]


def user_item(tx: Tx, org_id: int, user_id: int) -> Body:
    row = org_user(tx, org_id, user_id)
    if row is None:
        raise HttpError(404, f"user {user_id} not found")
    return user_json(row)


def user_items(tx: Tx, org_id: int, ids: Sequence[int]) -> list[Body]:
    # Unknown ids are left out, as the API's */items reads do.
    rows = (org_user(tx, org_id, i) for i in ids)
    return [user_json(r) for r in rows if r is not None]


def find_user(tx: Tx, org_id: int, name: str) -> Body:
    row = tx.one("SELECT * FROM users WHERE name = ? AND org_id = ?", (name, org_id))
    if row is None:
        raise HttpError(404, f"no user named {name!r} in this organization")
    return user_json(row)


# --- contact info --------------------------------------------------------------------------------

# The simulator plays the partner: it keeps its own copy of the contract's names rather than the
# client's (reconcile.contact), so that a slip in one is caught by the other.
_CONTACT_FIELDS = (
    "firstName",
    "lastName",
    "streetAddress1",
    "streetAddress2",
    "city",
    "state",
    "postCode",
    "country",
    "phone",
)

_CONTACT_LENGTHS = {
    "phone": (10, 21),
    "streetAddress1": (3, 61),
    "streetAddress2": (0, 61),
    "city": (2, 35),
    "state": (1, 35),
    "postCode": (4, 11),
}


def _contact_problem(body: Body) -> str | None:
    if problem := _names_problem(body["firstName"], body["lastName"]):
        return problem
    if body["country"] == "US" and not body.get("state"):
        return "state is required when country is US"
    for field, (low, high) in _CONTACT_LENGTHS.items():
        value = body.get(field)
        if value is not None and not low <= len(value) <= high:
            return f"{field} must have {low} to {high} characters (got {len(value)})"
    phone: str = body["phone"]
    if not phone.startswith("+") or not phone[1:].replace(" ", "").replace("-", "").isdigit():
        return f"phone {phone!r} must be in international form, e.g. +12125550100"
    country: str = body["country"]
    if len(country) != 2 or not country.isupper() or pycountry.countries.get(alpha_2=country) is None:
        return f"country {country!r} is not a 2-letter ISO 3166 country code"
    return None


def contact_json(row: Any) -> Body:
    data: Body = json.loads(row["data"])
    return {"id": row["id"], "userId": row["user_id"], **data}


def update_contact_info(tx: Tx, org_id: int, body: Body) -> Body:
    """POST /contactInfo/updatecontactinfo: replace the user's contact details."""
    user = org_user(tx, org_id, body["userId"])
    if user is None:
        return {"errorText": f"user {body['userId']} not found in this organization"}
    if problem := _contact_problem(body):
        return {"errorText": problem}
    data = json.dumps({f: body[f] for f in _CONTACT_FIELDS if body.get(f) is not None}, sort_keys=True)
    tx.run(
        "INSERT INTO contact_info (user_id, data) VALUES (?, ?) "
        "ON CONFLICT (user_id) DO UPDATE SET data = excluded.data",
        (user["id"], data),
    )
    row = tx.one("SELECT * FROM contact_info WHERE user_id = ?", (user["id"],))
    return {"contactInfo": contact_json(row)}


def contact_item(tx: Tx, org_id: int, contact_id: int) -> Body:
    row = tx.one(
        "SELECT c.* FROM contact_info c JOIN users u ON u.id = c.user_id WHERE c.id = ? AND u.org_id = ?",
        (contact_id, org_id),
    )
    if row is None:
        raise HttpError(404, f"contact info {contact_id} not found")
    return contact_json(row)


def contact_deps(tx: Tx, org_id: int, user_ids: Sequence[int]) -> list[Body]:
    """/contactInfo/deps and /ldeps: the contact info of these users (other organizations' are invisible)."""
    extra, params = _only(user_ids, "c.user_id")
    rows = tx.all(
        "SELECT c.* FROM contact_info c JOIN users u ON u.id = c.user_id "
        f"WHERE u.org_id = ?{extra} ORDER BY c.id",
        (org_id, *params),
    )
    return [contact_json(r) for r in rows]


# --- entitlements and user plugins ---------------------------------------------------------------


def entitlement_list(config: SimConfig) -> list[Body]:
    return [
        {"id": i, "name": e.name, "title": e.title, "price": e.price}
        for i, e in sorted(config.entitlements.items())
    ]


def plugin_json(row: Any, config: SimConfig) -> Body:
    entitlement = config.entitlements.get(row["ref_id"])
    plugin: Body = {
        "id": row["id"],
        "userId": row["user_id"],
        "timestamp": iso(row["created_at"]),
        "planPrice": entitlement.price if entitlement else 0.0,
        "pluginName": entitlement.name if entitlement else str(row["ref_id"]),
        "approval": True,
        "entitlementId": row["ref_id"],
        "startDate": trade_date(row["created_at"]),
        "paidAmount": 0.0,
        "autorenewal": False,
    }
    if row["account_id"] is not None:
        plugin["accountId"] = row["account_id"]
    return plugin


def user_plugins(tx: Tx, config: SimConfig, org_id: int, user_ids: Sequence[int] | None = None) -> list[Body]:
    """Active plugins of the organization (``/userPlugin/list``) or of these users (``/deps``, ``/ldeps``)."""
    extra, params = _only(user_ids, "r.user_id")
    sql = (
        "SELECT r.* FROM records r JOIN users u ON u.id = r.user_id "
        f"WHERE r.kind = ? AND r.cancelled_at IS NULL AND u.org_id = ?{extra} ORDER BY r.id"
    )
    return [plugin_json(r, config) for r in tx.all(sql, (USER_PLUGIN, org_id, *params))]


def add_entitlement_subscription(tx: Tx, config: SimConfig, org_id: int, body: Body) -> Body:
    """POST /userPlugin/addentitlementsubscription: Sim+ only after the Market Data Agreement."""
    entitlement_id = body["entitlementId"]
    user = org_user(tx, org_id, body.get("userId"))
    if user is None:
        return {
            "errorText": f"user {body.get('userId')} not found in this organization",
            "errorCode": "UnknownError",
        }
    if user["status"] == "Closed":
        return {"errorText": f"user {user['name']!r} is closed", "errorCode": "UnknownError"}
    if entitlement_id not in config.entitlements:
        return {
            "errorText": f"entitlement {entitlement_id} is not in this organization's catalogue",
            "errorCode": "PlanDiscontinued",
        }
    account_id = body.get("accountId")
    if entitlement_id == config.simplus_entitlement_id:
        if account_id != config.data_account_id:
            return {
                "errorText": f"accountId {account_id} is not the organization's data account "
                f"(Sim+ is billed to the partner's Live _DATA account)",
                "errorCode": "IncorrectPaymentMethod",
            }
        signed = tx.one(
            "SELECT 1 FROM alert_signals WHERE admin_alert_id = ? AND user_id = ?",
            (config.agreement_alert, user["id"]),
        )
        if signed is None:
            return {
                "errorText": f"user {user['name']!r} has not signed the Market Data Agreement",
                "errorCode": "UnknownError",
            }
    existing = tx.one(
        "SELECT * FROM records WHERE kind = ? AND user_id = ? AND ref_id = ? AND cancelled_at IS NULL",
        (USER_PLUGIN, user["id"], entitlement_id),
    )
    if existing is not None:
        return {
            "errorText": f"user {user['name']!r} already has entitlement {entitlement_id}",
            "errorCode": "ConflictWithExisting",
            "entitlementSubscription": plugin_json(existing, config),
        }
    plugin_id = tx.run(
        "INSERT INTO records (kind, user_id, ref_id, account_id, created_at) VALUES (?, ?, ?, ?, ?)",
        (USER_PLUGIN, user["id"], entitlement_id, account_id, tx.now),
    )
    if entitlement_id == config.simplus_entitlement_id:
        # Sim+ brings real-time market data: canceleverything's marketDataSubscriptions flag ends it.
        tx.run(
            "INSERT INTO records (kind, user_id, account_id, created_at) VALUES (?, ?, ?, ?)",
            (MARKET_DATA_SUBSCRIPTION, user["id"], account_id, tx.now),
        )
    row = tx.one("SELECT * FROM records WHERE id = ?", (plugin_id,))
    return {"errorText": "", "errorCode": "Success", "entitlementSubscription": plugin_json(row, config)}


# --- the Market Data Agreement (admin alert signals) ---------------------------------------------


def signal_json(row: Any) -> Body:
    signal: Body = {
        "id": row["id"],
        "timestamp": iso(row["created_at"]),
        "adminAlertId": row["admin_alert_id"],
        "relatedToUserId": row["user_id"],
        "text": "Market Data Agreement signed",
        "emailSent": False,
        "subjectId": row["user_id"],
    }
    if row["completed_at"] is not None:
        signal["completed"] = iso(row["completed_at"])
    return signal


def sign_agreement(tx: Tx, config: SimConfig, user_id: int) -> Body:
    """File the user's Market Data Agreement signature; signing again returns the open signal."""
    row = tx.one(
        "SELECT * FROM alert_signals WHERE admin_alert_id = ? AND user_id = ? AND completed_at IS NULL",
        (config.agreement_alert, user_id),
    )
    if row is None:
        signal_id = tx.run(
            "INSERT INTO alert_signals (admin_alert_id, user_id, created_at) VALUES (?, ?, ?)",
            (config.agreement_alert, user_id, tx.now),
        )
        row = tx.one("SELECT * FROM alert_signals WHERE id = ?", (signal_id,))
    return signal_json(row)


def _org_signal(tx: Tx, org_id: int, signal_id: Any) -> Any:
    if not isinstance(signal_id, int):
        return None
    return tx.one(
        "SELECT s.* FROM alert_signals s JOIN users u ON u.id = s.user_id WHERE s.id = ? AND u.org_id = ?",
        (signal_id, org_id),
    )


def signal_deps(tx: Tx, org_id: int, admin_alert_id: int) -> list[Body]:
    rows = tx.all(
        "SELECT s.* FROM alert_signals s JOIN users u ON u.id = s.user_id "
        "WHERE s.admin_alert_id = ? AND u.org_id = ? ORDER BY s.id",
        (admin_alert_id, org_id),
    )
    return [signal_json(r) for r in rows]


def signal_item(tx: Tx, org_id: int, signal_id: int) -> Body:
    row = _org_signal(tx, org_id, signal_id)
    if row is None:
        raise HttpError(404, f"admin alert signal {signal_id} not found")
    return signal_json(row)


def complete_alert_signal(tx: Tx, org_id: int, body: Body) -> Body:
    """POST /adminAlertSignal/completealertsignal: ``{adminAlertSignalId}`` or ``{alertId, userId}``."""
    signal_id = body.get("adminAlertSignalId", body.get("alertId"))
    row = _org_signal(tx, org_id, signal_id)
    if row is None:
        return {"errorText": f"admin alert signal {signal_id} not found"}
    if "userId" in body and body["userId"] != row["user_id"]:
        return {"errorText": f"admin alert signal {signal_id} does not belong to user {body['userId']}"}
    if row["completed_at"] is None:
        tx.run("UPDATE alert_signals SET completed_at = ? WHERE id = ?", (tx.now, row["id"]))
        row = tx.one("SELECT * FROM alert_signals WHERE id = ?", (row["id"],))
    return {"adminAlertSignal": signal_json(row)}


# --- evaluation accounts (Stage 4) ---------------------------------------------------------------
#
# An account's trading permission is a `records` row (kind tradingPermission, with account_id), so
# /user/canceleverything revokes it with the user's other permissions. Its status is Approved
# until revoked; the Requested/Accepted/Declined hand-shake of person-to-person permissions is not
# simulated. Per-user permission rows without an account (made with the user) are not
# TradingPermission entities: the reads and revocations below see only those with an account.


@cache
def auto_liq_fields() -> frozenset[str]:
    """The settings a UserAccountAutoLiq holds (the contract's schema, without its ``id``)."""
    properties: dict[str, Any] = contract()["components"]["schemas"]["UserAccountAutoLiq"]["properties"]
    return frozenset(properties) - {"id"}


def _auto_liq_settings(fields: Body) -> Body:
    return {k: v for k, v in fields.items() if k in auto_liq_fields()}


def account_json(row: Any, config: SimConfig) -> Body:
    template = config.account_templates.get(row["template_account_id"])
    return {
        "id": row["id"],
        "name": row["name"],
        "userId": row["user_id"],
        "accountType": "Customer",
        "restricted": False,
        "closed": not row["active"],
        "clearingHouseId": 1,
        "riskCategoryId": row["risk_category_id"],
        # The auto-liquidation profile is the account's own UserAccountAutoLiq (same id).
        "autoLiqProfileId": row["id"],
        "marginAccountType": "Speculator",
        "legalStatus": "Individual",
        "timestamp": iso(row["created_at"]),
        "evaluationSize": template.size if template else row["initial_balance"],
        "readonly": False,
    }


def permission_status(row: Any) -> str:
    return "Revoked" if row["cancelled_at"] is not None else "Approved"


def trading_permission_json(row: Any, config: SimConfig) -> Body:
    """A TradingPermission from a records row joined with its user (first_name, last_name, email)."""
    return {
        "id": row["id"],
        "userId": row["user_id"],
        "accountId": row["account_id"],
        # The partner holds the evaluation account; the trader is the party allowed to trade it.
        "accountHolderContact": config.organization_name,
        "accountHolderEmail": config.admin_email,
        "ctaContact": f"{row['first_name']} {row['last_name']}",
        "ctaEmail": row["email"],
        "status": permission_status(row),
        "updated": iso(row["cancelled_at"] if row["cancelled_at"] is not None else row["created_at"]),
        "approvedById": config.admin_user_id,
    }


def auto_liq_json(row: Any) -> Body:
    data: Body = json.loads(row["data"])
    return {"id": row["id"], **data}


def risk_status_json(row: Any) -> Body:
    status: Body = {"id": row["id"], "adminAction": row["admin_action"], "userTriggeredLiqOnly": False}
    if row["admin_timestamp"] is not None:
        status["adminTimestamp"] = iso(row["admin_timestamp"])
    return status


def _id_list(ids: Sequence[int]) -> str:
    return json.dumps(list(ids))


def _ids_text(ids: Sequence[int]) -> str:
    return ", ".join(str(i) for i in ids)


def _org_accounts(tx: Tx, org_id: int, ids: Sequence[int]) -> dict[int, Any]:
    rows = tx.all(
        "SELECT * FROM accounts WHERE org_id = ? AND id IN (SELECT value FROM json_each(?))",
        (org_id, _id_list(ids)),
    )
    return {r["id"]: r for r in rows}


def _missing_accounts(tx: Tx, org_id: int, ids: Sequence[int]) -> list[int]:
    found = _org_accounts(tx, org_id, ids)
    return sorted({i for i in ids if i not in found})


_PERMISSIONS = (
    "SELECT r.*, u.first_name, u.last_name, u.email FROM records r JOIN users u ON u.id = r.user_id "
    "WHERE r.kind = 'tradingPermission' AND r.account_id IS NOT NULL AND u.org_id = ?"
)


def _org_permissions(tx: Tx, org_id: int, ids: Sequence[int]) -> dict[int, Any]:
    rows = tx.all(_PERMISSIONS + " AND r.id IN (SELECT value FROM json_each(?))", (org_id, _id_list(ids)))
    return {r["id"]: r for r in rows}


def _evaluation_account_problem(
    tx: Tx, config: SimConfig, org_id: int, item: Body, taken_names: set[str]
) -> str | None:
    name: str = item["name"]
    if not name.strip():
        return "name is required"
    template_id = item["templateAccountId"]
    if template_id not in config.account_templates:
        known = _ids_text(sorted(config.account_templates))
        return f"templateAccountId {template_id} is not a template account of this organization ({known})"
    user = org_user(tx, org_id, item["userId"])
    if user is None:
        return f"user {item['userId']} not found in this organization"
    if user["status"] != "Active":
        return f"user {user['name']!r} is not active ({user['status']})"
    if not item["initialBalance"] > 0:
        return f"initialBalance must be greater than 0 (got {item['initialBalance']})"
    if name.lower() in taken_names:
        return f"an account named {name!r} already exists"
    return None


def create_evaluation_accounts(tx: Tx, config: SimConfig, org_id: int, body: Body) -> Body:
    """POST /user/createevaluationaccounts: account, trading permission, auto-liq and risk status per item."""
    accounts: list[Body] = body["accounts"]
    if len(accounts) > config.max_accounts_per_request:
        return {
            "errorText": f"At most {config.max_accounts_per_request} accounts per request "
            f"(got {len(accounts)})",
            "results": [],
        }
    names = json.dumps([a["name"] for a in accounts])
    taken_names = {
        r[0].lower()
        for r in tx.all(
            "SELECT name FROM accounts WHERE org_id = ? AND name IN (SELECT value FROM json_each(?))",
            (org_id, names),
        )
    }
    next_id = max(config.first_account_id, (tx.scalar("SELECT max(id) FROM accounts") or 0) + 1)
    results: list[Body] = []
    for item in accounts:
        problem = _evaluation_account_problem(tx, config, org_id, item, taken_names)
        if problem is not None:
            results.append({"errorText": problem})
            continue
        account_id = next_id
        next_id += 1
        taken_names.add(item["name"].lower())
        template = config.account_templates[item["templateAccountId"]]
        tx.run(
            "INSERT INTO accounts (id, org_id, name, user_id, template_account_id, initial_balance, balance, "
            "risk_category_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                account_id,
                org_id,
                item["name"],
                item["userId"],
                item["templateAccountId"],
                item["initialBalance"],
                item["initialBalance"],
                template.risk_category_id,
                tx.now,
            ),
        )
        permission_id = tx.run(
            "INSERT INTO records (kind, user_id, account_id, created_at) VALUES (?, ?, ?, ?)",
            (TRADING_PERMISSION, item["userId"], account_id, tx.now),
        )
        settings = _auto_liq_settings(item.get("postTradeRisk") or {})
        tx.run("INSERT INTO auto_liqs VALUES (?, ?)", (account_id, json.dumps(settings, sort_keys=True)))
        tx.run("INSERT INTO risk_status (id, admin_action) VALUES (?, 'Normal')", (account_id,))
        results.append({"accountId": account_id, "tradingPermissionId": permission_id})
    return {"results": results}


def _revoke(tx: Tx, ids: Sequence[int]) -> None:
    tx.run(
        "UPDATE records SET cancelled_at = ? WHERE cancelled_at IS NULL "
        "AND id IN (SELECT value FROM json_each(?))",
        (tx.now, _id_list(ids)),
    )


def revoke_trading_permission(tx: Tx, config: SimConfig, org_id: int, body: Body) -> Body:
    """POST /user/revoketradingpermission: revoke one permission (again is harmless); answer it."""
    permission_id = body["tradingPermissionId"]
    if permission_id not in _org_permissions(tx, org_id, [permission_id]):
        return {"errorText": f"Trading permission {permission_id} not found"}
    _revoke(tx, [permission_id])
    return {
        "tradingPermission": trading_permission_json(
            _org_permissions(tx, org_id, [permission_id])[permission_id], config
        )
    }


def revoke_trading_permissions(tx: Tx, org_id: int, body: Body) -> Body:
    """POST /user/revoketradingpermissions: all or nothing; an unknown id refuses the request."""
    ids: list[int] = body["tradingPermissionIds"]
    if not ids:
        return {"ok": False, "errorText": "Empty tradingPermissionIds"}
    found = _org_permissions(tx, org_id, ids)
    unknown = sorted({i for i in ids if i not in found})
    if unknown:
        return {"ok": False, "errorText": f"Trading permissions not found: {_ids_text(unknown)}"}
    _revoke(tx, ids)
    return {"ok": True}


def reset_demo_account_state(tx: Tx, org_id: int, body: Body) -> Body:
    """POST /account/resetdemoaccountstate: balances back to ``initialBalance`` (no history is kept)."""
    ids: list[int] = body["accountIds"]
    if not ids:
        return {"ok": False, "errorText": "Empty accountIds"}
    day = body["resetTradeDate"]
    try:
        reset_day = date(day["year"], day["month"], day["day"])
    except ValueError:
        return {
            "ok": False,
            "errorText": f"resetTradeDate {day['year']}-{day['month']}-{day['day']} is not a date",
        }
    today = datetime.fromtimestamp(tx.now, UTC).date()
    if reset_day > today:
        return {"ok": False, "errorText": f"resetTradeDate {reset_day} is in the future (today is {today})"}
    if missing := _missing_accounts(tx, org_id, ids):
        raise HttpError(404, f"accounts not found: {_ids_text(missing)}")
    tx.run(
        "UPDATE accounts SET balance = initial_balance, resets = resets + 1, last_reset_trade_date = ? "
        "WHERE id IN (SELECT value FROM json_each(?))",
        (reset_day.isoformat(), _id_list(ids)),
    )
    return {"ok": True}


def switch_risk_category(tx: Tx, config: SimConfig, org_id: int, body: Body) -> Body:
    """POST /accountRiskStatus/switchriskcategory: accounts already in the category are skipped."""
    ids: list[int] = body["accountIds"]
    category = body["riskCategoryId"]
    if not ids:
        return {"ok": False, "errorText": "Empty accountIds"}
    if len(ids) > config.max_accounts_per_switch:
        return {
            "ok": False,
            "errorText": f"Only {config.max_accounts_per_switch} accounts are allowed in single operation",
        }
    if category not in config.risk_categories:
        raise HttpError(404, f"risk category {category} not found")
    if missing := _missing_accounts(tx, org_id, ids):
        raise HttpError(404, f"accounts not found: {_ids_text(missing)}")
    tx.run(
        "UPDATE accounts SET risk_category_id = ? WHERE risk_category_id != ? "
        "AND id IN (SELECT value FROM json_each(?))",
        (category, category, _id_list(ids)),
    )
    return {"ok": True}


_MAX_REASON = 8192


def set_admin_auto_liq_action(tx: Tx, org_id: int, body: Body) -> Body:
    """POST /accountRiskStatus/setadminautoliqaction: persistent until set again (Normal unlocks)."""
    account_id: int = body["accountId"]
    reason = body.get("adminActionReason")
    if account_id <= 0:
        return {"errorText": "Account Id should be greater than 0"}
    if body["adminActionReasonCode"] == "Other" and not reason:
        return {"errorText": "Admin Action Reason should be specified"}
    if reason is not None and len(reason) > _MAX_REASON:
        return {"errorText": f"Admin Action Reason should be no longer than {_MAX_REASON}"}
    if _missing_accounts(tx, org_id, [account_id]):
        raise HttpError(404, f"account {account_id} not found")
    tx.run(
        "UPDATE risk_status SET admin_action = ?, admin_timestamp = ?, reason_code = ?, reason = ? "
        "WHERE id = ?",
        (body["adminAction"], tx.now, body["adminActionReasonCode"], reason, account_id),
    )
    return {
        "accountRiskStatus": risk_status_json(tx.one("SELECT * FROM risk_status WHERE id = ?", (account_id,)))
    }


def update_user_auto_liqs(tx: Tx, config: SimConfig, org_id: int, body: Body) -> Body:
    """POST /userAccountAutoLiq/updateuserautoliqs: given fields change, others stay; all or nothing."""
    items: list[Body] = body["items"]
    if len(items) > config.max_accounts_per_request:
        return {
            "errorText": f"At most {config.max_accounts_per_request} items per request (got {len(items)})",
            "userAutoLiqs": [],
        }
    if missing := _missing_accounts(tx, org_id, [i["accountId"] for i in items]):
        return {"errorText": f"accounts not found: {_ids_text(missing)}", "userAutoLiqs": []}
    answers: list[Body] = []
    for item in items:
        row = tx.one("SELECT * FROM auto_liqs WHERE id = ?", (item["accountId"],))
        settings = (json.loads(row["data"]) if row is not None else {}) | _auto_liq_settings(item)
        tx.run(
            "INSERT INTO auto_liqs VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET data = excluded.data",
            (item["accountId"], json.dumps(settings, sort_keys=True)),
        )
        answers.append({"userAccountAutoLiq": {"id": item["accountId"], **settings}})
    return {"userAutoLiqs": answers}


def _only(ids: Sequence[int] | None, column: str) -> tuple[str, tuple[Any, ...]]:
    """An extra WHERE clause keeping rows whose ``column`` is in ``ids`` (none when ``ids`` is None)."""
    if ids is None:
        return "", ()
    return f" AND {column} IN (SELECT value FROM json_each(?))", (_id_list(ids),)


def list_accounts(
    tx: Tx, config: SimConfig, org_id: int, user_ids: Sequence[int] | None = None
) -> list[Body]:
    """/account/list, or /account/deps and /ldeps (the accounts of these users)."""
    extra, params = _only(user_ids, "user_id")
    rows = tx.all(f"SELECT * FROM accounts WHERE org_id = ?{extra} ORDER BY id", (org_id, *params))
    return [account_json(r, config) for r in rows]


def list_trading_permissions(
    tx: Tx, config: SimConfig, org_id: int, user_ids: Sequence[int] | None = None
) -> list[Body]:
    """/tradingPermission/list, or /deps and /ldeps (the permissions of these users)."""
    extra, params = _only(user_ids, "r.user_id")
    rows = tx.all(f"{_PERMISSIONS}{extra} ORDER BY r.id", (org_id, *params))
    return [trading_permission_json(r, config) for r in rows]


def list_auto_liqs(tx: Tx, org_id: int, account_ids: Sequence[int] | None = None) -> list[Body]:
    """/userAccountAutoLiq/list, or /deps and /ldeps (the settings of these accounts)."""
    extra, params = _only(account_ids, "a.id")
    rows = tx.all(
        f"SELECT l.* FROM auto_liqs l JOIN accounts a ON a.id = l.id WHERE a.org_id = ?{extra} ORDER BY l.id",
        (org_id, *params),
    )
    return [auto_liq_json(r) for r in rows]


def list_risk_statuses(tx: Tx, org_id: int, account_ids: Sequence[int] | None = None) -> list[Body]:
    """/accountRiskStatus/list, or /deps and /ldeps (the risk status of these accounts)."""
    extra, params = _only(account_ids, "a.id")
    rows = tx.all(
        f"SELECT s.* FROM risk_status s JOIN accounts a ON a.id = s.id "
        f"WHERE a.org_id = ?{extra} ORDER BY s.id",
        (org_id, *params),
    )
    return [risk_status_json(r) for r in rows]
