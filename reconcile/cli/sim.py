"""``reconcile sim ...``: run the partner-API simulator and drive it (sign, add users, faults, limits)."""

from __future__ import annotations

import os
import sys
from typing import Any

import click
import httpx

from reconcile.cli.groups import SummaryGroup
from reconcile.cli.output import echo, echo_err
from reconcile.errors import ReconcileError
from reconcile.render.describe import counted
from reconcile.sim import admin
from reconcile.sim.app import SimApp, create_app
from reconcile.sim.config import SimConfig
from reconcile.sim.faults import FAULT_KINDS
from reconcile.sim.rules import HttpError

DEFAULT_DB = "state/sim.sqlite"

_target = [
    click.option("--url", help="a running simulator, e.g. http://127.0.0.1:8765/v1 (default: use --db)"),
    click.option(
        "--db",
        "db_path",
        default=DEFAULT_DB,
        show_default=True,
        type=click.Path(dir_okay=False),
        help="the simulator's SQLite file, used when no --url is given",
    ),
]


def _with_target(func: Any) -> Any:
    for option in reversed(_target):
        func = option(func)
    return func


def _call(url: str | None, db_path: str, method: str, route: str, body: dict[str, Any] | None = None) -> Any:
    """Run one ``/_sim/`` operation over HTTP (``url``) or directly on the SQLite file."""
    if url:
        from reconcile.sim.server import ADMIN_TOKEN_ENV, admin_token

        root = url.rstrip("/").removesuffix("/v1")
        token = admin_token()
        if token and not (token.isascii() and token.isprintable()):
            # httpx would quote the header value it refuses: the token, in the error printed.
            raise ReconcileError(
                f"{ADMIN_TOKEN_ENV} holds a line break, a control or a non-ASCII character, which an "
                "HTTP header cannot carry; set it to the token the simulator was started with"
            )
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            response = httpx.request(method, f"{root}/_sim/{route}", json=body, headers=headers, timeout=30)
        except httpx.HTTPError as exc:
            raise ReconcileError(
                f"no simulator answers at {url} ({exc}); start one with `reconcile sim serve` or use --db"
            ) from None
        if response.status_code == 401:
            raise ReconcileError(
                f"simulator at {url} refused the admin call: set {ADMIN_TOKEN_ENV} to the token "
                "it was started with"
            )
        try:
            answer = response.json()
        except ValueError:
            raise ReconcileError(
                f"{url} answered HTTP {response.status_code} without JSON: is it a reconcile simulator?"
            ) from None
        if response.status_code != 200:
            raise ReconcileError(f"simulator at {url}: {answer.get('errorText', response.text)}")
        return answer
    app: SimApp = create_app(db_path=db_path)
    try:
        return _local(app, method, route, body or {})
    except HttpError as exc:
        raise ReconcileError(f"simulator {db_path}: {exc.message}") from None
    finally:
        app.store.close()


def _local(app: SimApp, method: str, route: str, body: dict[str, Any]) -> Any:
    store, config = app.store, app.config
    if route == "agreements":
        return admin.sign_agreement(store, config, body["name"])
    if route == "users":
        return admin.dump_users(store) if method == "GET" else admin.add_user(store, config, body)
    if route == "faults":
        return admin.arm_fault(store, body["kind"], body["path"], body["count"], body["seconds"])
    if route == "config":
        return admin.get_config(store, config) if method == "GET" else admin.set_config(store, config, body)
    if route == "accounts":
        return admin.dump_accounts(store, config)
    if route == "accounts/pnl":
        return admin.move_balance(store, config, body)
    return admin.reset(store, config)


def _print(value: Any) -> None:
    echo(admin.dumps(value))


@click.group("sim", cls=SummaryGroup)
def command() -> None:
    """Run the partner-API simulator and drive it.

    \b
    The simulator plays a partner organization whose defaults match examples/desk.yaml:
    admin partner-admin / sim-admin-password, Sim+ = entitlement 12345, TradingView = 31,
    entitlement 22 fails a whole create request, subscription plans 7 and 8, data account
    11111, Market Data Agreement alert 68 (70 on staging), template accounts 5001, 5002 and
    5003 (50K, 100K, 150K evaluations) and risk categories 31 (standard) and 32 (halted).
    Its data lives in SQLite (state/sim.sqlite), shared by `serve`, the embedded
    `environment: sim` and these commands.
    """


@command.command("serve")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="address to listen on; beyond loopback only with RECONCILE_SIM_ADMIN_TOKEN set",
)
@click.option(
    "--port",
    default=8765,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="port (0 picks a free one)",
)
@click.option(
    "--db",
    "db_path",
    default=DEFAULT_DB,
    show_default=True,
    type=click.Path(dir_okay=False),
    help="the simulator's SQLite file (created when missing)",
)
@click.option(
    "--limits/--no-limits", default=True, show_default=True, help="enforce the published rate limits"
)
@click.option(
    "--penalties/--no-penalties", default=False, show_default=True, help="answer over-limit with p-tickets"
)
@click.option(
    "--time-scale",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="simulated time runs this many times faster (token expiry, limit windows); "
    "RECONCILE_TIME_SCALE gives reconcile's own pacing the same hour",
)
@click.option(
    "--environment",
    type=click.Choice(["sim", "demo", "live", "staging"]),
    default="sim",
    show_default=True,
    help="staging files agreements under alert 70",
)
@click.option("--admin-name", default=SimConfig().admin_name, show_default=True, help="the admin login name")
# Secrets come from the environment, not argv: a command line is visible to every local user.
@click.option(
    "--admin-password-env",
    metavar="VAR",
    help="environment variable holding the admin's password (unset: the simulator's built-in one, "
    "shown by `reconcile sim --help`)",
)
@click.option("--app-id", help="accept only this appId at login (default: any)")
@click.option("--cid", help="accept only this cid at login (default: any)")
@click.option("--sec-env", metavar="VAR", help="environment variable holding the only sec accepted at login")
def serve_command(
    host: str,
    port: int,
    db_path: str,
    limits: bool,
    penalties: bool,
    time_scale: float,
    environment: str,
    admin_name: str,
    admin_password_env: str | None,
    app_id: str | None,
    cid: str | None,
    sec_env: str | None,
) -> None:
    """Serve the simulator over HTTP until Ctrl-C; prints `listening on URL` first.

    Only on loopback, unless RECONCILE_SIM_ADMIN_TOKEN is set: then any host, and every /_sim/
    request (what `reconcile sim … --url` sends) must carry that token.
    """
    from reconcile.sim.server import ADMIN_TOKEN_ENV, admin_token, base_url, make

    config = SimConfig(
        limits_enabled=limits,
        penalties_enabled=penalties,
        time_scale=time_scale,
        environment=environment,
        admin_name=admin_name,
        admin_password=_from_env(admin_password_env) or SimConfig().admin_password,
        app_id=app_id,
        cid=cid,
        sec=_from_env(sec_env),
    )
    token = admin_token()
    server = make(create_app(config, db_path), host, port, token=token)
    click.echo(f"listening on {base_url(server)}")
    if token is not None:
        echo_err(f"/_sim/ routes require the admin token from {ADMIN_TOKEN_ENV}")
    sys.stdout.flush()  # tests start `serve --port 0` as a subprocess and read this line
    try:
        server.serve_forever()
    finally:
        server.server_close()


def _from_env(var: str | None) -> str | None:
    if var is None:
        return None
    value = os.environ.get(var)
    if not value:
        raise click.BadParameter(f"environment variable {var} is not set or empty")
    return value


@command.command("sign")
@click.argument("name")
@_with_target
def sign_command(name: str, url: str | None, db_path: str) -> None:
    """Sign the Market Data Agreement as the trader NAME (creates the pending AdminAlertSignal).

    Prints the signal as JSON on stdout; a line for people on stderr.
    """
    signal = _call(url, db_path, "POST", "agreements", {"name": name})
    _print(signal)
    echo_err(f"{name} signed the Market Data Agreement: the next `reconcile apply` grants Sim+ to {name}.")


@command.command("add-user")
@click.argument("name")
@click.option("--email", required=True, help="the user's email address")
@click.option("--first-name", default="Outside", show_default=True, help="the user's first name")
@click.option("--last-name", default="User", show_default=True, help="the user's last name")
@click.option("--organization-id", type=int, help="another organization's id (default: the admin's)")
@_with_target
def add_user_command(
    name: str,
    email: str,
    first_name: str,
    last_name: str,
    organization_id: int | None,
    url: str | None,
    db_path: str,
) -> None:
    """Add a user created outside the tool (as the partner's web console would)."""
    fields: dict[str, Any] = {"name": name, "email": email, "firstName": first_name, "lastName": last_name}
    if organization_id is not None:
        fields["organizationId"] = organization_id
    _print(_call(url, db_path, "POST", "users", fields))


@command.command(
    "fault",
    # KIND's choices in the text, not the usage line, which would wrap them mid-word.
    help=f"Make the next COUNT requests to PATH fail as KIND: {', '.join(FAULT_KINDS)}.",
    short_help="Make the next COUNT requests to PATH fail as KIND.",
)
@click.argument("kind", type=click.Choice(FAULT_KINDS), metavar="KIND")
@click.option(
    "--path", "path", default="*", show_default=True, help="contract path, e.g. /user/createevaluationusers"
)
@click.option(
    "--count", default=1, show_default=True, type=click.IntRange(min=1), help="how many requests fail"
)
@click.option("--seconds", default=0.0, show_default=True, type=float, help="delay (slow) or wait (penalty)")
@_with_target
def fault_command(kind: str, path: str, count: int, seconds: float, url: str | None, db_path: str) -> None:
    _print(
        _call(
            url, db_path, "POST", "faults", {"kind": kind, "path": path, "count": count, "seconds": seconds}
        )
    )


@command.command("config")
@click.option("--limits/--no-limits", default=None, help="enforce the published rate limits")
@click.option("--penalties/--no-penalties", default=None, help="answer over-limit with penalty tickets")
@click.option("--time-scale", type=click.FloatRange(min=0, min_open=True), help="simulated time speed-up")
@click.option("--advance", type=click.FloatRange(min=0), help="jump simulated time ahead by SECONDS")
@_with_target
def config_command(
    limits: bool | None,
    penalties: bool | None,
    time_scale: float | None,
    advance: float | None,
    url: str | None,
    db_path: str,
) -> None:
    """Show the simulator's settings, or change them."""
    changes = {
        key: value
        for key, value in (
            ("limits_enabled", limits),
            ("penalties_enabled", penalties),
            ("time_scale", time_scale),
            ("advance_seconds", advance),
        )
        if value is not None
    }
    _print(_call(url, db_path, "POST" if changes else "GET", "config", changes))


@command.command("reset")
@click.option("--yes", is_flag=True, help="do not ask for confirmation (needed without a terminal)")
@_with_target
def reset_command(yes: bool, url: str | None, db_path: str) -> None:
    """Forget every simulated user, session, fault and limit counter."""
    if not yes:
        if not sys.stdin.isatty():
            raise ReconcileError(
                f"refusing to reset the simulator {url or db_path} without confirmation: stdin is not "
                "a terminal. Pass --yes to reset it"
            )
        click.confirm(f"Delete every simulated user in {url or db_path}?", abort=True)
    _print(_call(url, db_path, "POST", "reset"))


@command.command("users")
@_with_target
def users_command(url: str | None, db_path: str) -> None:
    """Print every simulated user with contact details, records and agreement signals (JSON)."""
    _print(_call(url, db_path, "GET", "users"))


@command.command("accounts")
@_with_target
def accounts_command(url: str | None, db_path: str) -> None:
    """Print every simulated evaluation account: user, template, balance, risk, permission, lock (JSON)."""
    accounts = _call(url, db_path, "GET", "accounts")
    _print(accounts)
    echo_err(f"{counted(len(accounts), 'account')} in the simulator.")


# A loss is a negative AMOUNT: let "-1250" through as the argument instead of an unknown option.
@command.command("pnl", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("amount", type=float)
@_with_target
def pnl_command(name: str, amount: float, url: str | None, db_path: str) -> None:
    """Move the balance of account NAME by AMOUNT dollars, as a day's trading would (a loss is negative).

    Prints the account as JSON on stdout; a line for people on stderr.
    """
    account = _call(url, db_path, "POST", "accounts/pnl", {"name": name, "amount": amount})
    _print(account)
    echo_err(
        f"{account.get('name')}: balance {account.get('balance'):,.2f} ({amount:+,.2f}); "
        f"initial balance {account.get('initialBalance'):,.2f}."
    )
