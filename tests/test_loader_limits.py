"""The documented manifest limits hold on both parse paths (yaml-rs at once, or the event scan first).

Limits are lowered here so that small files reach them; `scanned` forces the event scan by making
every line "long", `direct` leaves a short-lined file to yaml-rs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_loader_rules import HEADER, problems, user, write

import reconcile.manifest.loader as loader
from reconcile.errors import ManifestError
from reconcile.manifest.loader import load_manifest

PATHS = ["direct", "scanned"]


@pytest.fixture(params=PATHS)
def path_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "scanned":
        monkeypatch.setattr(loader, "_LONG_LINE_WINDOW", 8)
    return str(request.param)


def users(count: int) -> str:
    return "".join(user(name=f"trader{i:03d}", email=f"t{i}@example.com") for i in range(count))


def test_too_many_users_in_one_file(tmp_path: Path, path_kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "MAX_USERS", 3)
    path = write(tmp_path, users(4))
    (found,) = problems(path)
    where = f"{path}:6:1: users:" if path_kind == "direct" else f"{path}:22:5: users:"
    assert found.startswith(where), found
    assert "more than 3 users" in found and "split the desk" in found
    assert len(load_manifest([write(tmp_path, users(3))]).manifest.users) == 3


def test_too_many_users_across_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "MAX_USERS", 5)
    first = write(tmp_path, users(3), name="a.yaml")
    second = tmp_path / "b.yaml"
    second.write_text("users:\n" + "".join(user(name=f"other{i:03d}", email=f"o{i}@x.com") for i in range(3)))
    (found,) = problems([first, second])
    assert found.startswith(f"{second}:1:1: users: the files together list more than 5 users")


def test_a_long_value_is_refused_before_it_is_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "MAX_SCALAR_CHARS", 100)
    monkeypatch.setattr(loader, "_LONG_LINE_WINDOW", 50)
    path = write(tmp_path, user(lastName="x" * 101))
    assert problems(path) == [
        f"{path}:11:15: users[0].lastName: a value longer than 100 characters: no manifest value is"
    ]


def test_too_many_items_in_a_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "MAX_ITEMS", 6)  # a user entry has 6 keys here
    monkeypatch.setattr(loader, "_LONG_LINE_WINDOW", 8)
    path = write(tmp_path, user(entitlements="[a, b, c, d, e, f, g]"))
    assert problems(path) == [
        f"{path}:12:38: users[0].entitlements: more than 6 items in one list or mapping: "
        "only users may hold that many"
    ]


def test_too_many_values_in_one_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "MAX_USER_VALUES", 10)
    monkeypatch.setattr(loader, "_LONG_LINE_WINDOW", 8)
    path = write(tmp_path, user(entitlements="[a, b, c]"))
    (found,) = problems(path)
    # The 11th value (keys count too) is firstName's: the entry's mapping, 2 per key, 3 in password.
    assert found.startswith(f"{path}:10:16: users[0]: a user entry with more than 10 values")


def test_a_dense_big_file_is_scanned_and_refused_at_the_excess(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loader, "_DENSE_FROM_CHARS", 1000)
    monkeypatch.setattr(loader, "_DENSE_AFTER", 100)
    monkeypatch.setattr(loader, "MAX_USERS", 1000)
    path = tmp_path / "dense.yaml"
    path.write_text(HEADER.format(environment="sim") + "- 1\n" * 1001)
    (found,) = problems(path)
    assert found.startswith(f"{path}:1007:3: users: more than 1,000 users")


def test_at_most_100_problems_are_listed_and_the_rest_counted(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(HEADER.format(environment="sim") + "- {}\n" * 30_000)
    with pytest.raises(ManifestError) as caught:
        load_manifest([path])
    assert len(caught.value.problems) == loader.MAX_PROBLEMS == 100
    assert str(caught.value.problems[0]).startswith(f"{path}:7:3: users[0]")
    assert str(caught.value).endswith("… and 29900 more problems: fix these first")


def test_a_file_over_the_size_limit_is_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "MAX_FILE_BYTES", 2 * 1024 * 1024)
    path = tmp_path / "sparse.yaml"
    with path.open("wb") as handle:
        handle.truncate(10 * 1024**3)  # 10 GiB of holes: reading it would take minutes
    assert problems(path) == [
        f"{path}:1:1: file is larger than 2 MiB: split the users over several files in a folder"
    ]


def test_too_many_entitlements_on_the_direct_path_too(tmp_path: Path) -> None:
    names = "".join(f"\n      - e{i}" for i in range(loader.MAX_ITEMS + 1))
    path = write(tmp_path, user(entitlements=names))
    found = problems(path)
    assert found[0].startswith(
        f"{path}:13:7: users[0].entitlements: more than 1,000 items in one list or mapping"
    )


def test_validate_json_counts_the_problems_it_leaves_out(tmp_path: Path) -> None:
    from cli_support import run

    path = tmp_path / "broken.yaml"
    path.write_text(HEADER.format(environment="sim") + "- {}\n" * 150)
    result = run("validate", "-f", path, "--format", "json")
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert (len(document["problems"]), document["more_problems"]) == (100, 50)


def test_user_locations_are_the_same_when_a_big_file_is_composed_along_the_wanted_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, users(50))
    whole = dict(load_manifest([path]).locations)
    monkeypatch.setattr(loader, "_PRUNE_FROM", 0)  # as for a file over 1 MiB
    assert dict(load_manifest([path]).locations) == whole
    assert len(whole) == 50 and whole["trader049"].line == 7 + 49 * 5
