"""Secrets never leak: every command of a desk's life, run as subprocesses, then every artifact grepped.

The simulator runs as `reconcile sim serve` on 127.0.0.1 and checks the admin password, app id, cid
and API secret given here, so a login with anything else fails. Trader passwords come from the
environment, a file, the manifest itself and the generator. The first apply meets a penalty
ticket, an HTTP 429 and a user the API refuses. Afterwards stdout, stderr, state, journal, audit
log, plan files and the token cache are searched for every password, the secret and every
access token the simulator issued (it keeps only their SHA-256, so candidate strings are hashed).
The subprocesses run with umask 000: the files' privacy must not depend on the operator's umask.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.slow

ADMIN_NAME = "sectest-admin"
ADMIN_PASSWORD = "Adm1n-Pw-ZULU-7731"
SEC = "sec-SECRET-f00dfeed-c0ffee-4242"
APP_ID = "sectest-app-id"
CID = "8675309"
ENV_PASSWORD = "EnvPw-ALPHA-5521!"
MALLORY_PASSWORD = "EnvPw-MALLORY-0932!"
FILE_PASSWORD = "FilePw-BRAVO-8810!"
LITERAL_PASSWORD = "LitPw-CHARLIE-4417!"
ALICE_EMAIL = "alice.sectest@example.com"
ALICE_PHONE = "+12125550199"

# secrets.token_urlsafe(32), the simulator's access tokens: 43 characters of this alphabet.
_TOKEN_RUN = re.compile(r"[A-Za-z0-9_-]{43,}")
_TOKEN_LENGTH = 43


def _user(name: str, password: str, extra: str = "") -> str:
    return (
        f"  - name: {name}\n    email: {name}.sectest@example.com\n    password: {password}\n"
        f"    firstName: Sec\n    lastName: {name.title()}\n{extra}"
    )


def write_manifest(path: Path, *, second: bool = False) -> None:
    """The desk; ``second`` changes carol's email and drops bob (cancelled) and mallory (never made)."""
    users = [
        _user(
            "alice",
            "{env: SECTEST_ALICE_PW}",
            f'    contact: {{phone: "{ALICE_PHONE}", streetAddress1: 1 Secret St, city: New York, '
            'state: NY, postCode: "10001", country: US}\n',
        ),
        "" if second else _user("bob", "{file: bob.pw}"),
        _user("carol", f'"{LITERAL_PASSWORD}"').replace(
            "carol.sectest@", "carol.moved@" if second else "carol.sectest@"
        ),
        _user("dave", "{generate: true}"),
        _user("erin", "{generate: true}", "    entitlements: [simplus]\n"),
        "" if second else _user("mallory", "{env: SECTEST_MALLORY_PW}"),
    ]
    path.write_text(
        "apiVersion: reconcile/v1\nenvironment: sim\npartner:\n  dataAccountId: 11111\n"
        "  entitlements:\n    simplus: 12345\n    tradingview: 31\n"
        "defaults:\n  tradovateSubscriptionPlanId: 7\nusers:\n" + "".join(users)
    )


@dataclass
class Desk:
    """The working folder of one operator, the served simulator, and everything the CLI printed."""

    work: Path
    url: str
    sim_db: Path
    env: dict[str, str]
    outputs: list[tuple[str, str]] = field(default_factory=list)

    @property
    def state(self) -> Path:
        return self.work / "state" / "sim.json"

    def run(self, *args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "reconcile", *args],
            capture_output=True,
            text=True,
            cwd=self.work,
            env=self.env,
            umask=0o000,
            check=False,
            timeout=120,
        )
        label = "reconcile " + " ".join(args)
        self.outputs += [(f"stdout of {label}", proc.stdout), (f"stderr of {label}", proc.stderr)]
        assert proc.returncode == expect, f"{label}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        return proc

    def sim(self, method: str, route: str, body: dict[str, object] | None = None) -> Any:
        """Drive the simulator (not the tool under test) through its ``/_sim/`` routes."""
        root = self.url.removesuffix("/v1")
        response = httpx.request(method, f"{root}/_sim/{route}", json=body, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()

    def files(self) -> list[str]:
        return ["-f", "desk.yaml", "--state", str(self.state), "--endpoint", self.url]


@pytest.fixture
def desk(tmp_path: Path) -> Iterator[Desk]:
    work, server_dir = tmp_path / "work", tmp_path / "server"
    work.mkdir()
    server_dir.mkdir()
    env = {
        **os.environ,
        "SIM_ADMIN_PW": ADMIN_PASSWORD,
        "SIM_SEC": SEC,
        "TRADOVATE_USERNAME": ADMIN_NAME,
        "TRADOVATE_PASSWORD": ADMIN_PASSWORD,
        "TRADOVATE_APP_ID": APP_ID,
        "TRADOVATE_APP_VERSION": "1.0",
        "TRADOVATE_CID": CID,
        "TRADOVATE_SEC": SEC,
        "SECTEST_ALICE_PW": ENV_PASSWORD,
        "SECTEST_MALLORY_PW": MALLORY_PASSWORD,
        "RECONCILE_CACHE_DIR": str(work / "cache"),
        "NO_COLOR": "1",
    }
    env.pop("RECONCILE_TEST_CRASH_AT", None)
    sim_db = server_dir / "served.sqlite"
    # The server's output goes to a file that is grepped like everything else.
    log = (server_dir / "serve.log").open("w")
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "reconcile", "sim", "serve", "--port", "0", "--db", str(sim_db)),
            *("--admin-name", ADMIN_NAME, "--admin-password-env", "SIM_ADMIN_PW"),
            *("--app-id", APP_ID, "--cid", CID, "--sec-env", "SIM_SEC"),
        ],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        cwd=server_dir,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+/v1", line)
        assert match, line
        yield Desk(work=work, url=match.group(0), sim_db=sim_db, env=env)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def issued_token_hashes(sim_db: Path) -> set[str]:
    with sqlite3.connect(sim_db) as db:
        return {row[0] for row in db.execute("SELECT token_hash FROM sessions")}


def tokens_in(text: str, issued: set[str]) -> set[str]:
    """Every substring of ``text`` that is an access token the simulator issued."""
    found = set()
    for run in _TOKEN_RUN.findall(text):
        for start in range(len(run) - _TOKEN_LENGTH + 1):
            candidate = run[start : start + _TOKEN_LENGTH]
            if hashlib.sha256(candidate.encode()).hexdigest() in issued:
                found.add(candidate)
    return found


def generated_passwords(path: Path) -> dict[str, str]:
    lines = [ln for ln in path.read_text().splitlines() if ln and not ln.startswith("#")]
    return dict(ln.split("\t", 1) for ln in lines)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_no_secret_reaches_any_artifact_of_a_desks_life(desk: Desk) -> None:
    work = desk.work
    write_manifest(work / "desk.yaml")
    (work / "bob.pw").write_text(FILE_PASSWORD + "\n")
    inputs = {work / "desk.yaml", work / "bob.pw"}
    generated_file = work / "private" / "generated.txt"

    # Offline commands: validate, plan in every format, a saved plan shown in every format.
    for fmt in ("text", "json"):
        desk.run("validate", "-f", "desk.yaml", "--format", fmt)
    plan_file = work / "plans" / "first.json"
    desk.run("plan", *desk.files(), "--out", str(plan_file))
    desk.run("plan", *desk.files(), "--format", "json")
    masked = desk.run("plan", *desk.files(), "--format", "markdown").stdout
    assert "alice" in masked and ALICE_EMAIL not in masked and ALICE_PHONE not in masked
    shown = desk.run("plan", *desk.files(), "--format", "markdown", "--show-pii").stdout
    assert ALICE_EMAIL in shown and ALICE_PHONE in shown  # so the masking above is real
    for fmt in ("text", "json", "markdown"):
        out = desk.run("show", str(plan_file), "--format", fmt).stdout
        if fmt == "markdown":
            assert ALICE_EMAIL not in out and ALICE_PHONE not in out

    # The first apply meets a penalty ticket, then a 429, and one user the API refuses.
    desk.sim("POST", "users", {"name": "mallory", "email": "someone.else@example.com"})
    for kind in ("penalty", "http429"):
        desk.sim("POST", "faults", {"kind": kind, "path": "/user/createevaluationusers", "seconds": 0.2})
    first = desk.run(
        "apply", str(plan_file), *desk.files(), "--generated-passwords", str(generated_file), expect=1
    )
    assert "penalty ticket" in first.stderr and "HTTP 429" in first.stderr
    assert "mallory" in first.stderr and "already exists" in first.stderr
    generated = generated_passwords(generated_file)
    assert sorted(generated) == ["dave", "erin"]

    # Erin signs the agreement; the second apply grants Sim+, moves carol, cancels bob.
    desk.sim("POST", "agreements", {"name": "erin"})
    write_manifest(work / "desk.yaml", second=True)
    second = desk.run("apply", *desk.files(), "--auto-approve", "--format", "json")
    result = json.loads(second.stdout)
    assert (result["granted"], result["emails_changed"], result["cancelled"]) == (
        ["erin"],
        ["carol"],
        ["bob"],
    )
    assert "nothing to do" in desk.run("apply", *desk.files(), "--auto-approve").stdout
    desk.run("plan", *desk.files(), "--refresh")
    for fmt in ("text", "json"):
        desk.run("state", "list", "--state", str(desk.state), "--format", fmt)
        desk.run("state", "show", "--state", str(desk.state), "--format", fmt)

    # State matches the simulator: the refused user was never recorded.
    users = json.loads(desk.state.read_text())["users"]
    in_sim = {u["name"]: u["id"] for u in desk.sim("GET", "users")}
    assert sorted(users) == ["alice", "bob", "carol", "dave", "erin"]
    assert {n: in_sim[n] for n in users} == {n: u["userId"] for n, u in users.items()}

    # Every artifact, except the operator's inputs.
    token_files = sorted((work / "cache").rglob("*.json"))
    artifacts = [(label, text) for label, text in desk.outputs]
    artifacts += [
        (str(p), p.read_text(errors="replace"))
        for p in sorted([*work.rglob("*"), *(desk.sim_db.parent / "serve.log",)])
        if p.is_file() and p not in inputs and p != generated_file and p.suffix != ".sqlite"
    ]
    passwords = {
        "env password": ENV_PASSWORD,
        "refused user's password": MALLORY_PASSWORD,
        "file password": FILE_PASSWORD,
        "literal password": LITERAL_PASSWORD,
        "admin password": ADMIN_PASSWORD,
        "API secret": SEC,
        **{f"generated password of {n}": pw for n, pw in generated.items()},
    }
    issued = issued_token_hashes(desk.sim_db)
    cached = {t for p in token_files for t in tokens_in(p.read_text(), issued)}
    assert token_files and cached, "the token cache should hold the issued token (or the scan is blind)"
    leaks = [
        f"{what} in {label}"
        for label, text in artifacts
        for what, secret in passwords.items()
        if secret in text
    ]
    leaks += [
        f"an access token in {label}"
        for label, text in artifacts
        if Path(label) not in token_files and tokens_in(text, issued)
    ]
    assert not leaks, "\n".join(leaks)
    # The generated-passwords file holds those passwords and nothing else secret.
    handed_out = generated_file.read_text()
    assert all(pw in handed_out for pw in generated.values())
    assert not [w for w, s in passwords.items() if s in handed_out and not w.startswith("generated")]

    # Private files are 0600 and no folder is writable by others, whatever the umask.
    state_dir = desk.state.parent
    private = [
        desk.state,
        state_dir / "sim.journal.jsonl",
        state_dir / "sim.audit.jsonl",
        plan_file,
        generated_file,
        *token_files,
    ]
    assert {str(p): oct(mode(p)) for p in private} == {str(p): "0o600" for p in private}
    folders = {p.parent for p in private} | {work / "cache"}
    assert not [str(d) for d in folders if mode(d) & 0o002], "world-writable folders"
    assert {mode(p.parent) for p in token_files} == {0o700}
