"""SIGKILL `reconcile apply` at many points against `reconcile sim serve`; a second apply converges.

Every kill point runs on the state file; a representative subset runs again with state, journal
and audit log in a fresh PostgreSQL database (``RECONCILE_BACKEND``), where the second run must
settle the intents the killed one left in the journal table.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

pytest.importorskip("reconcile.manifest.loader")
pytest.importorskip("reconcile.api.connect")

from apply_support import served_sim, served_sim_env, write_desk
from apply_support import sim_admin as admin

from reconcile.apply import IntentJournal
from reconcile.state.open import open_store
from reconcile.state.store import StateStore

pytestmark = pytest.mark.slow

DESK = 25
LEAVING = 10
SIGNED = 15


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    with served_sim(tmp_path) as url:
        yield url


@pytest.fixture(params=["file", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str | None:
    """None for the state file, else the DSN of a fresh PostgreSQL database."""
    if request.param == "file":
        return None
    from pg_fixtures import new_database

    return new_database()


def _store(tmp_path: Path, dsn: str | None) -> StateStore:
    if dsn is None:
        return open_store("sim", state_path=tmp_path / "state" / "sim.json")
    return open_store("sim", backend_url=dsn)


def _state_args(tmp_path: Path, dsn: str | None) -> list[str]:
    return ["--state", str(tmp_path / "state" / "sim.json")] if dsn is None else ["--backend", dsn]


def apply(
    tmp_path: Path,
    url: str,
    manifest: Path,
    crash: str | None = None,
    dsn: str | None = None,
    extra: Sequence[str] = (),
    batch_size: int = 10,
) -> subprocess.CompletedProcess[str]:
    env = served_sim_env(tmp_path)
    env.pop("RECONCILE_TEST_CRASH_AT", None)
    env.pop("RECONCILE_BACKEND", None)
    if crash:
        env["RECONCILE_TEST_CRASH_AT"] = crash
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "reconcile",
            "apply",
            "-f",
            str(manifest),
            *_state_args(tmp_path, dsn),
            "--endpoint",
            url,
            "--auto-approve",
            "--batch-size",
            str(batch_size),
            "--allow-cancellations",
            str(LEAVING),
            *extra,
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )


def plan_is_empty(tmp_path: Path, url: str, manifest: Path, dsn: str | None = None) -> bool:
    """True when `reconcile plan --detailed-exitcode` finds no change (agreement re-checks are none)."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "reconcile",
            "plan",
            "-f",
            str(manifest),
            *_state_args(tmp_path, dsn),
            "--endpoint",
            url,
            "--detailed-exitcode",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    return done.returncode == 0


def assert_converged(tmp_path: Path, url: str, *, active: int, granted: int, dsn: str | None = None) -> None:
    users = admin(url, "GET", "users")
    names = [u["name"] for u in users]
    assert names, "the simulator holds no user: nothing converged"
    assert len(names) == len(set(names)), "a trader was created twice"
    store = _store(tmp_path, dsn)
    assert store.journal("sim").unsettled() == [], "an intent was left open"
    if dsn is not None:
        # Everything lived in the database: no state, journal or audit file was written locally.
        assert not list((tmp_path / "state").glob("sim.*json*"))
    state = store.load("sim")
    by_name = {u["name"]: u for u in users}
    assert sorted(state.users) == sorted(names)
    for name, record in state.users.items():
        sim_user = by_name[name]
        assert record.userId == sim_user["id"]
        assert (record.lifecycle == "cancelled") == (sim_user["status"] == "Closed")
        plugins = {
            r["refId"] for r in sim_user["records"] if r["kind"] == "userPlugin" and not r["cancelled"]
        }
        grant = record.entitlements.get("simplus")
        if record.lifecycle == "active":
            assert (grant is not None and grant.status == "granted") == (12345 in plugins), name
            signals = sim_user["agreementSignals"]
            if 12345 in plugins:  # granted: this user's own signal was completed
                assert signals and all(s.get("completed") for s in signals), name
            else:  # not granted: the user never signed
                assert not signals, name
            assert sim_user["contactInfo"] is not None and record.contact is not None
    assert sum(1 for r in state.users.values() if r.lifecycle == "active") == active
    assert (
        sum(
            1
            for r in state.users.values()
            if (g := r.entitlements.get("simplus")) is not None and g.status == "granted"
        )
        == granted
    )


# Points in the first apply (creates in 3 batches of 10, then contacts, then grants of the signers)
# and in a later apply that cancels the users who left the desk.
KILL_POINTS = [
    "before_create_call:1",
    "before_create_call:2",
    "after_create_call:1",
    "after_create_call:3",
    "after_create_save:2",
    # The second batch's create was sent ahead: its users are saved once their contact updates
    # are handed to the workers. Killed there, the next run adopts them by name.
    "before_create_save:2",
    "after_updates_call:1",
    "before_grant_call:1",
    "after_grant_call:1",
    "before_cancel_call:1",
    "after_cancel_call:1",
]
# One point per non-idempotent call whose answer is lost (create, grant, cancel), and the deferred
# save of a create sent ahead: each leaves an intent in the database journal for the next run to
# settle. Enough to prove the backend without doubling the run time; the file store runs every point.
POSTGRES_KILL_POINTS = {
    "after_create_call:1",
    "before_create_save:2",
    "after_grant_call:1",
    "after_cancel_call:1",
}

LEFT_OPEN = ("after_create_call", "before_create_save", "after_grant_call", "after_cancel_call")
"""Kill points after which the intent waits in the journal for the next run: the call was made and
its answer lost, or (a create sent ahead) its users are not saved yet."""


@pytest.mark.parametrize(
    ("crash", "backend"),
    [pytest.param(c, "file", id=f"file-{c}") for c in KILL_POINTS]
    + [pytest.param(c, "postgresql", id=f"postgresql-{c}") for c in KILL_POINTS if c in POSTGRES_KILL_POINTS],
    indirect=["backend"],
)
def test_killed_apply_converges_on_the_next_run(
    tmp_path: Path, server: str, crash: str, backend: str | None
) -> None:
    manifest = write_desk(tmp_path / "desk.yaml", DESK, simplus=True, contact=True)
    if "grant" in crash or "cancel" in crash:
        first = apply(tmp_path, server, manifest, dsn=backend)  # everyone created; Sim+ awaits the agreement
        assert first.returncode == 0, first.stderr
        for i in range(SIGNED):
            admin(server, "POST", "agreements", {"name": f"trader{i:04d}"})
    if "cancel" in crash:
        assert apply(tmp_path, server, manifest, dsn=backend).returncode == 0
        write_desk(manifest, DESK - LEAVING, simplus=True, contact=True)
    killed = apply(tmp_path, server, manifest, crash=crash, dsn=backend)
    assert killed.returncode == -9, killed.stdout + killed.stderr
    if crash.split(":")[0] in LEFT_OPEN:
        assert _store(tmp_path, backend).journal("sim").unsettled()
    _every_trader_is_known(tmp_path, server, backend)
    done = apply(tmp_path, server, manifest, dsn=backend)
    assert done.returncode == 0, done.stderr
    granted = SIGNED if "grant" in crash or "cancel" in crash else 0
    active = DESK - LEAVING if "cancel" in crash else DESK
    assert_converged(tmp_path, server, active=active, granted=min(granted, active), dsn=backend)
    assert plan_is_empty(tmp_path, server, manifest, dsn=backend)


@pytest.mark.parametrize(
    ("path", "backend"),
    [
        ("/user/createevaluationusers", "file"),
        ("/user/canceleverything", "file"),
        ("/user/createevaluationusers", "postgresql"),
    ],
    indirect=["backend"],
)
def test_applied_then_dropped_answers_are_settled_without_doubles(
    tmp_path: Path, server: str, path: str, backend: str | None
) -> None:
    manifest = write_desk(tmp_path / "desk.yaml", DESK, simplus=True, contact=True)
    if "cancel" in path:
        assert apply(tmp_path, server, manifest, dsn=backend).returncode == 0
        write_desk(manifest, DESK - LEAVING, simplus=True, contact=True)
    admin(server, "POST", "faults", {"kind": "drop_after_apply", "path": path, "count": 1, "seconds": 0})
    result = apply(tmp_path, server, manifest, dsn=backend)
    assert result.returncode == 0, result.stderr
    active = DESK - LEAVING if "cancel" in path else DESK
    assert_converged(tmp_path, server, active=active, granted=0, dsn=backend)
    assert plan_is_empty(tmp_path, server, manifest, dsn=backend)


def test_every_lost_or_refused_create_answer_over_pooled_connections_converges_without_doubles(
    tmp_path: Path, server: str
) -> None:
    # `apply --endpoint` sends over the default transport's kept-alive connections (6 threads):
    # a create answered with half its JSON, refused with HTTP 500, answered late, penalised,
    # rate limited, and calls of every path answered late while others reuse the connections.
    manifest = write_desk(tmp_path / "desk.yaml", DESK, simplus=True, contact=True)
    create = "/user/createevaluationusers"
    for kind, path, seconds in [
        ("malformed", create, 0),
        ("http500", create, 0),
        ("slow", create, 0.5),
        ("penalty", create, 0.2),
        ("http429", create, 0.2),
        ("slow", "*", 0.2),
        ("malformed", "/contactinfo/updatecontactinfo", 0),
    ]:
        admin(server, "POST", "faults", {"kind": kind, "path": path, "count": 1, "seconds": seconds})
    first = apply(tmp_path, server, manifest)
    assert first.returncode == 1 and "HTTP 500" in first.stdout + first.stderr  # its 10 users wait
    second = apply(tmp_path, server, manifest)  # creates those 10: penalised, then rate limited
    assert second.returncode == 0, second.stderr
    assert admin(server, "GET", "faults") == []
    assert_converged(tmp_path, server, active=DESK, granted=0)
    assert plan_is_empty(tmp_path, server, manifest)


# --- kills and faults layered, with generated passwords -------------------------------------------
#
# Each scenario is a list of steps on one desk of SMALL users whose passwords are generated; each
# apply names a new --generated-passwords file. ("fault", kind, path, seconds) arms a fault;
# ("apply", crash point or None, expected exit) runs an apply (-9: killed there; 1: stopped);
# "sign" has the first SIGNERS users sign the agreement; "shrink" drops the last LEAVING_SMALL
# users from the manifest; "contact" gives every user a contact.

SMALL = 12
SIGNERS = 8
LEAVING_SMALL = 4
LONG_WAIT = 900.0
"""An http429 asking for longer than a run waits: the look-up fails at once, without retries."""

Step = tuple[object, ...]
SCENARIOS: dict[str, list[Step]] = {
    "create": [
        ("fault", "drop_after_apply", "/user/createevaluationusers", 0),
        ("fault", "http429", "/user/find", LONG_WAIT),
        ("apply", None, 1),  # answer lost, look-up refused: the intent stays, the run stops
        ("apply", "after_create_call:1", -9),  # settles the first batch, then dies after the next call
        ("apply", "before_create_call:1", -9),  # settles that batch, dies before the last call
        ("apply", None, 0),
    ],
    "contact": [
        ("apply", None, 0),
        "contact",
        "shrink",
        ("fault", "captcha", "/contactinfo/updatecontactinfo", 0),
        ("apply", None, 1),  # the captcha stops the updates (the cancels went first)
        ("apply", "after_updates_call:1", -9),
        ("apply", None, 0),
    ],
    "ahead": [
        "contact",
        # The second batch's create went out beside the first batch's updates: killed once it is
        # saved (its intent not yet settled, the first batch's contacts saved with it) ...
        ("apply", "after_create_save:2", -9),
        # ... then once the third is sent ahead (the second's contacts not saved yet).
        ("apply", "after_updates_call:2", -9),
        ("apply", None, 0),
    ],
    "deferred": [
        "contact",
        # The second batch's create went ahead and its contact updates went out, its users not
        # saved yet (their passwords are in the file already): the next run adopts them by name...
        ("apply", "before_create_save:2", -9),
        # ... sends those updates again, creates the last batch and dies before saving it.
        ("apply", "before_create_save:1", -9),
        ("apply", None, 0),
    ],
    "grant": [
        ("apply", None, 0),
        "sign",
        "shrink",
        ("fault", "captcha", "/userplugin/addentitlementsubscription", 0),
        ("apply", None, 1),
        ("apply", "after_grant_call:1", -9),
        ("apply", None, 0),
    ],
    "cancel": [
        ("apply", None, 0),
        "shrink",
        ("fault", "drop_after_apply", "/user/canceleverything", 0),
        ("apply", "before_cancel_call:1", -9),
        ("apply", "after_cancel_call:1", -9),  # the lost answer is settled by a look-up, then killed
        ("apply", None, 0),
    ],
}


def _every_trader_is_known(tmp_path: Path, url: str, dsn: str | None = None) -> None:
    """A created trader's id is never lost: state records it, or an open intent names it."""
    store = _store(tmp_path, dsn)
    known = set(store.load("sim").users)
    known.update(name for intent in IntentJournal(store.journal("sim")).unsettled() for name in intent.users)
    lost = {u["name"] for u in admin(url, "GET", "users")} - known
    assert not lost, f"neither state nor an open intent names {sorted(lost)}"


def _closed(url: str) -> set[str]:
    return {u["name"] for u in admin(url, "GET", "users") if u["status"] == "Closed"}


def _audit(tmp_path: Path) -> list[dict[str, object]]:
    import json

    path = tmp_path / "state" / "sim.audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _log_in(url: str, name: str, password: str) -> int:
    import httpx

    return httpx.post(f"{url}/auth/accesstokenrequest", json={"name": name, "password": password}).status_code


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_kills_and_faults_keep_every_promise(tmp_path: Path, server: str, scenario: str) -> None:
    manifest = tmp_path / "desk.yaml"
    contact = signed = False
    size = SMALL

    def write() -> None:
        write_desk(manifest, size, simplus=True, contact=contact)
        manifest.write_text(manifest.read_text().replace("{env: TRADER_PASSWORD}", "{generate: true}"))

    write()
    files: list[Path] = []
    said = ""
    for step in SCENARIOS[scenario]:
        if step == "contact":
            contact = True
            write()
        elif step == "shrink":
            size = SMALL - LEAVING_SMALL
            write()
        elif step == "sign":
            signed = True
            for i in range(SIGNERS):
                admin(server, "POST", "agreements", {"name": f"trader{i:04d}"})
        elif step[0] == "fault":
            _, kind, path, seconds = step
            admin(server, "POST", "faults", {"kind": kind, "path": path, "count": 1, "seconds": seconds})
        else:
            _, crash, expected = step
            files.append(tmp_path / f"passwords-{len(files)}.txt")
            closed_before, audit_before = _closed(server), len(_audit(tmp_path))
            done = apply(
                tmp_path, server, manifest, crash=crash,  # type: ignore[arg-type]
                extra=["--generated-passwords", str(files[-1])], batch_size=5,
            )  # fmt: skip
            assert done.returncode == expected, done.stdout + done.stderr
            said += done.stderr
            _every_trader_is_known(tmp_path, server)
            if expected == 1:
                # A stop is a stop: one message, nothing after it in the audit log, and whoever was
                # cancelled (cancellations go first) was cancelled before it, on the record.
                assert done.stderr.count("apply stopped here: nothing was sent") == 1, done.stderr
                audit = _audit(tmp_path)[audit_before:]
                assert [a["action"] for a in audit][-1] == "stop"
                cancels = [a for a in audit if a["action"] == "cancel_everything"]
                assert _closed(server) - closed_before <= {u for a in cancels for u in a["users"]}

    users = admin(server, "GET", "users")
    names = [u["name"] for u in users]
    assert len(names) == len(set(names)) == SMALL, "a trader was created twice, or never"
    store = _store(tmp_path, None)
    assert store.journal("sim").unsettled() == []
    state = store.load("sim")
    assert {n: r.userId for n, r in state.users.items()} == {u["name"]: u["id"] for u in users}, (
        "a lost id or a false record"
    )
    leaving = {f"trader{i:04d}" for i in range(size, SMALL)}
    assert _closed(server) == leaving, "a name the manifest keeps was cancelled, or one it drops was not"
    assert {n for n, r in state.users.items() if r.lifecycle == "cancelled"} == leaving
    if signed:
        granted = {
            n
            for n, r in state.users.items()
            if (g := r.entitlements.get("simplus")) and g.status == "granted"
        }
        assert granted == {f"trader{i:04d}" for i in range(SIGNERS)}
    # Every generated password that was set is in exactly one named file; none that wasn't is.
    assert not list(tmp_path.glob("*.pending")), "a candidate password was left pending"
    handed_out: dict[str, list[str]] = {}
    for file in files:
        if file.exists():
            assert f"Generated passwords go to {file} (mode 0600)" in said, f"no run named {file}"
            assert file.stat().st_mode & 0o777 == 0o600
            for line in file.read_text().splitlines():
                if "\t" in line:
                    name, password = line.split("\t")
                    handed_out.setdefault(name, []).append(password)
    assert sorted(handed_out) == sorted(names)
    for name, passwords in handed_out.items():
        assert len(passwords) == 1, f"{name} has {len(passwords)} passwords in the files"
        if name not in leaving:  # a cancelled trader cannot log in any more
            assert _log_in(server, name, passwords[0]) == 200, f"{name}'s password in the files was never set"
