"""The README and docs/ stand alone in a clone and say what the code does."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from reconcile.api.credentials import ENV_VARS, Credentials
from reconcile.errors import AuthError
from tests.cli_support import run

ROOT = Path(__file__).resolve().parent.parent
PAGES = [
    ROOT / "README.md",
    ROOT / "CHANGELOG.md",
    ROOT / "state" / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
]
SHIPPED = [*PAGES, ROOT / "pyproject.toml", *sorted((ROOT / "examples").rglob("*.y*ml"))]
_LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_nothing_points_outside_the_repository(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert "../shared" not in text and "shared/DESIGN" not in text and "shared/STYLE" not in text


@pytest.mark.parametrize("path", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_names_a_file_in_the_repository(path: Path) -> None:
    links = [link for link in _LINK.findall(path.read_text(encoding="utf-8")) if "://" not in link]
    for link in links:
        target = (path.parent / link.split("#", 1)[0]).resolve()
        assert target.is_relative_to(ROOT) and target.exists(), f"{path.name}: {link}"


def _required_in_code() -> list[str]:
    with pytest.raises(AuthError) as info:
        Credentials.from_env({})
    return [var for var in ENV_VARS.values() if var in str(info.value)]


def test_readme_credentials_say_what_the_code_requires() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    row = next(line for line in readme.splitlines() if line.startswith("| `demo`, `live`, `staging`"))
    required, optional = row.split("required:", 1)[1].split("optional:", 1)
    assert re.findall(r"TRADOVATE_\w+", required) == _required_in_code()
    assert set(re.findall(r"TRADOVATE_\w+", optional)) == set(ENV_VARS.values()) - set(_required_in_code())


def test_missing_credentials_error_names_exactly_the_missing_required_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = (ROOT / "examples" / "desk.yaml").read_text(encoding="utf-8")
    (tmp_path / "desk.yaml").write_text(manifest.replace("\nenvironment: sim\n", "\nenvironment: demo\n"))
    monkeypatch.chdir(tmp_path)
    for var in ENV_VARS.values():
        monkeypatch.delenv(var, raising=False)
    given = {"TRADOVATE_USERNAME": "admin", "TRADOVATE_PASSWORD": "pw", "TRADOVATE_APP_ID": "app"}
    result = run("refresh", "-f", "desk.yaml", env=given)
    assert result.exit_code == 1, result.output
    assert re.findall(r"TRADOVATE_\w+", result.stderr) == ["TRADOVATE_CID", "TRADOVATE_SEC"]
