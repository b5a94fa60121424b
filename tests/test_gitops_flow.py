"""The GitOps flow as CI runs it: plan on the pull request, apply the saved plan on merge.

Every reconcile run is its own process, in its own clone, as two pipelines would be. The partner
API is `reconcile sim serve` on 127.0.0.1; the pull-request pipeline has no credentials at all.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cli_support import run_child, sim_serve_argv

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PASSWORD = "Gitops-test-Passw0rd"
SECRET_VARIABLES = ("TRADOVATE_", "RECONCILE_ENDPOINT", "RECONCILE_BACKEND", "TRADER")


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a CI job: no API credentials, no trader passwords, unless given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(SECRET_VARIABLES)}
    env.update(
        GIT_AUTHOR_NAME="ci",
        GIT_AUTHOR_EMAIL="ci@example.invalid",
        GIT_COMMITTER_NAME="ci",
        GIT_COMMITTER_EMAIL="ci@example.invalid",
        NO_COLOR="1",
        **extra,
    )
    return env


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=clean_env(), capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
    return done.stdout


def reconcile(cwd: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_child(*args, cwd=cwd, env=env, timeout=120)


@pytest.fixture
def sim_url(tmp_path: Path) -> Iterator[str]:
    """`reconcile sim serve --port 0` on loopback; yields its base URL."""
    server = subprocess.Popen(
        sim_serve_argv(tmp_path / "sim.sqlite"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert line.startswith("listening on "), line + (server.stderr.read() if server.stderr else "")
        yield line.removeprefix("listening on ").strip()
    finally:
        server.terminate()
        server.wait(timeout=10)


def desk_file(*names: str, header: bool = True) -> str:
    """A manifest part: examples/desk.yaml's header and ``names``, or (no header) users only."""
    base = yaml.safe_load((EXAMPLES / "desk.yaml").read_text(encoding="utf-8")) if header else {}
    base["users"] = [
        {
            "name": name,
            "email": f"{name}@example.com",
            "password": {"env": "TRADER_PASSWORD"},
            "firstName": "Test",
            "lastName": "Trader",
            "entitlements": ["tradingview"],
        }
        for name in names
    ]
    return yaml.safe_dump(base, sort_keys=False)


def test_plan_on_pull_request_apply_on_merge_and_a_stale_second_plan_is_refused(
    tmp_path: Path, sim_url: str
) -> None:
    # The manifests repository: desk/ (a folder of manifest files) and state/ kept in Git.
    seed = tmp_path / "seed"
    (seed / "desk").mkdir(parents=True)
    (seed / "state").mkdir()
    (seed / "desk" / "base.yaml").write_text(desk_file("trader001", "trader002"), encoding="utf-8")
    (seed / "state" / ".gitignore").write_text("*.lock\n", encoding="utf-8")
    git(tmp_path, "init", "-q", "-b", "main", str(seed))
    git(seed, "add", ".")
    git(seed, "commit", "-q", "-m", "the desk")
    origin = tmp_path / "origin.git"
    git(tmp_path, "clone", "-q", "--bare", str(seed), str(origin))

    # --- two pull requests, both branched from main before either merges ---------------------
    pr = tmp_path / "pr-pipeline"
    git(tmp_path, "clone", "-q", str(origin), str(pr))
    # Each adds a desk part (a file of users); both plans also create the two base users, and
    # both are bound to the same (empty, never saved) state.
    plans: dict[str, Path] = {}
    for branch, names in (("pr1", ("trader003",)), ("pr2", ("trader004",))):
        git(pr, "checkout", "-q", "-b", branch, "main")
        (pr / "desk" / f"{branch}.yaml").write_text(desk_file(*names, header=False))
        git(pr, "add", ".")
        git(pr, "commit", "-q", "-m", f"add {names[0]}")
        git(pr, "push", "-q", "origin", branch)
        # The pull-request pipeline: no credentials, no trader passwords in its environment.
        done = reconcile(
            pr,
            "plan", "-f", "desk/", "--endpoint", sim_url,
            "--out", "plan.json", "--format", "markdown", "--detailed-exitcode",
            env=clean_env(),
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert done.stdout.startswith("## reconcile plan: <code>sim</code>")
        assert "**Plan: 3 to create.**" in done.stdout
        artifact = tmp_path / "artifacts" / branch / "plan.json"
        artifact.parent.mkdir(parents=True)
        shutil.move(pr / "plan.json", artifact)
        plans[branch] = artifact
        assert PASSWORD not in artifact.read_text()

    # --- the merge pipeline of PR 1: another clone, the carried artifact, credentials present ----
    merge = tmp_path / "merge-pipeline"
    git(tmp_path, "clone", "-q", str(origin), str(merge))
    git(merge, "merge", "-q", "--ff-only", "origin/pr1")
    secrets = clean_env(TRADER_PASSWORD=PASSWORD)
    done = reconcile(
        merge, "apply", str(plans["pr1"]), "-f", "desk/", "--endpoint", sim_url, "--auto-approve", env=secrets
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Apply complete: 3 created" in done.stdout
    assert PASSWORD not in done.stdout + done.stderr + (merge / "state" / "sim.json").read_text()
    git(merge, "add", "state")
    git(merge, "commit", "-q", "-m", "reconcile: record state")
    git(merge, "push", "-q", "origin", "HEAD:main")

    # --- the next plan, from a fresh clone of main, is empty ------------------------------------
    after = tmp_path / "after-merge"
    git(tmp_path, "clone", "-q", str(origin), str(after))
    assert json.loads((after / "state" / "sim.json").read_text())["serial"] > 0
    done = reconcile(
        after, "plan", "-f", "desk/", "--endpoint", sim_url, "--detailed-exitcode", env=clean_env()
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "No changes." in done.stdout
    # ... and the live organization agrees with what was committed.
    done = reconcile(
        after, "plan", "-f", "desk/", "--endpoint", sim_url, "--refresh", "--detailed-exitcode", env=secrets
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "No drift: the API matches recorded state." in done.stdout

    # --- PR 2 merges next; its plan was made before PR 1 landed: refused, nothing applied --------
    git(merge, "pull", "-q", "--no-rebase", "origin", "main")
    git(merge, "merge", "-q", "--no-edit", "origin/pr2")
    before = (merge / "state" / "sim.json").read_text()
    done = reconcile(
        merge, "apply", str(plans["pr2"]), "-f", "desk/", "--endpoint", sim_url, "--auto-approve", env=secrets
    )
    assert done.returncode == 1
    message = done.stderr
    assert "the saved plan is stale" in message
    assert "the manifest changed" in message
    assert "the state was written since (none when planned, serial" in message
    assert "Make a new plan with `reconcile plan --out PLANFILE`" in message
    assert (merge / "state" / "sim.json").read_text() == before

    # A new plan on the merged main, applied, then nothing is left to do.
    done = reconcile(
        merge, "plan", "-f", "desk/", "--endpoint", sim_url, "--out", "new.json", env=clean_env()
    )
    assert done.returncode == 0 and "Plan: 1 to create." in done.stdout, done.stderr
    done = reconcile(
        merge, "apply", "new.json", "-f", "desk/", "--endpoint", sim_url, "--auto-approve", env=secrets
    )
    assert done.returncode == 0, done.stderr
    done = reconcile(
        merge, "plan", "-f", "desk/", "--endpoint", sim_url, "--detailed-exitcode", env=clean_env()
    )
    assert done.returncode == 0 and "No changes." in done.stdout
