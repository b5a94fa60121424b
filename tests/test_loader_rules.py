"""Manifest rules, one by one, as a user sees them: FILE:LINE:COL: path: message."""

from __future__ import annotations

from pathlib import Path

import pytest

import reconcile.manifest.loader as loader_module
from reconcile.errors import Location, ManifestError
from reconcile.manifest.loader import load_manifest

HEADER = """\
apiVersion: reconcile/v1
environment: {environment}
partner:
  dataAccountId: 11111
  entitlements: {{simplus: 12345, tradingview: 31}}
users:
"""

GOOD_USER = """\
  - name: trader001
    email: trader001@example.com
    password: {env: PW}
    firstName: Ada
    lastName: Lovelace
"""


def write(tmp_path: Path, users: str, *, environment: str = "sim", name: str = "m.yaml") -> Path:
    path = tmp_path / name
    path.write_text(HEADER.format(environment=environment) + users)
    return path


def problems(path: Path | list[Path]) -> list[str]:
    paths = path if isinstance(path, list) else [path]
    with pytest.raises(ManifestError) as caught:
        load_manifest(paths)
    return [str(p) for p in caught.value.problems]


def user(**fields: str) -> str:
    """A valid user entry (YAML, at users' indentation) with fields replaced or added."""
    base = {
        "name": "trader001",
        "email": "trader001@example.com",
        "password": "{env: PW}",
        "firstName": "Ada",
        "lastName": "Lovelace",
    }
    base.update(fields)
    lines = [f"{key}: {value}" for key, value in base.items() if value != "<drop>"]
    return "  - " + "\n    ".join(lines) + "\n"


def test_valid_manifest_loads_with_digest_locations_and_no_warnings(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD_USER)
    loaded = load_manifest([path])
    assert [u.name for u in loaded.manifest.users] == ["trader001"]
    assert loaded.files == (str(path),)
    assert loaded.warnings == ()
    assert loaded.locations["trader001"] == Location(str(path), 7, 5)
    assert len(loaded.digest) == 64


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"name": "ab"}, "7:11: users[0].name: too short: expected at least 3 characters (has 2)"),
        ({"name": "t" * 65}, "7:11: users[0].name: too long: expected at most 64 characters (has 65)"),
        ({"email": "nobody"}, "8:12: users[0].email: expected a valid email address"),
        ({"email": "a@b@example.com"}, "8:12: users[0].email: expected a valid email address"),
        ({"email": "x" * 53 + "@example.com"}, "8:12: users[0].email: too long: expected at most 64"),
        ({"password": "short"}, "9:15: users[0].password: too short: expected at least 8 characters"),
        ({"password": "'" + "p" * 65 + "'"}, "9:15: users[0].password: too long: expected at most 64"),
        (
            {"firstName": "F" * 31, "lastName": "L" * 30},
            "7:5: users[0]: firstName and lastName may have at most 60 characters together (have 61)",
        ),
        (
            {"tradovateSubscriptionPlanId": "0"},
            "12:34: users[0].tradovateSubscriptionPlanId: expected a number greater than 0, got 0",
        ),
        (
            {"tradovateSubscriptionPlanId": "'7'"},
            "12:34: users[0].tradovateSubscriptionPlanId: expected a whole number, got '7': "
            "remove the quotes",
        ),
        (
            {"entitlements": "[bloomberg]"},
            "12:20: users[0].entitlements[0]: 'bloomberg' is not defined under partner.entitlements "
            "(defined: simplus, tradingview)",
        ),
        ({"status": "paused"}, "12:13: users[0].status: expected 'active' or 'cancelled', got 'paused'"),
        ({"email": "<drop>"}, "7:5: users[0]: an active user needs email"),
        (
            {"emial": "x@example.com"},
            "12:5: users[0].emial: unknown key 'emial' (expected one of: accounts, contact, email, "
            "entitlements, expiresOn, firstName, lastName, name, password, status, "
            "tradovateSubscriptionPlanId; "
            "did you mean 'email'?)",
        ),
    ],
)
def test_user_rule(tmp_path: Path, fields: dict[str, str], expected: str) -> None:
    path = write(tmp_path, user(**fields))
    found = problems(path)
    assert len(found) == 1, found
    assert found[0].startswith(f"{path}:{expected}")


@pytest.mark.parametrize(
    ("contact", "expected"),
    [
        ("phone: '12125550100'", "phone: expected a phone number in international form"),
        ("phone: '+1212'", "phone: too short: expected at least 10 characters (has 5)"),
        ("phone: '+1212555010012345678901'", "phone: too long: expected at most 21 characters"),
        ("phone: '+1212555abcd'", "phone: expected a phone number in international form"),
        ("streetAddress1: '1 '", "streetAddress1: too short: expected at least 3"),
        ("streetAddress1: " + "s" * 62, "streetAddress1: too long: expected at most 61"),
        ("streetAddress2: " + "s" * 62, "streetAddress2: too long: expected at most 61"),
        ("city: X", "city: too short: expected at least 2"),
        ("city: " + "c" * 36, "city: too long: expected at most 35"),
        ("postCode: '123'", "postCode: too short: expected at least 4"),
        ("postCode: '123456789012'", "postCode: too long: expected at most 11"),
        (
            "postCode: 10001",
            'postCode: expected a string, got 10001 (read as a number): quote it, e.g. "10001"',
        ),
        ("country: USA", "country: too long: expected at most 2 characters"),
        ("country: ZZ", "country: expected a 2-letter ISO 3166 country code such as US or GB, got 'ZZ'"),
        ("state: null", "contact: state is required when country is US"),
    ],
)
def test_contact_rule(tmp_path: Path, contact: str, expected: str) -> None:
    fields = {
        "phone": "'+12125550100'",
        "streetAddress1": "1 Main St",
        "city": "New York",
        "state": "NY",
        "postCode": "'10001'",
        "country": "US",
    }
    key, value = contact.split(": ", 1)
    fields[key] = value
    block = "\n      ".join(f"{k}: {v}" for k, v in fields.items() if v != "null")
    path = write(tmp_path, user() + f"    contact:\n      {block}\n")
    found = problems(path)
    assert len(found) == 1, found
    assert f": users[0].contact.{expected}" in found[0] or f": users[0].{expected}" in found[0]


def test_norway_and_yes_are_strings_not_booleans(tmp_path: Path) -> None:
    contact = (
        "    contact:\n      phone: '+4722000000'\n      streetAddress1: Karl Johans gate 1\n"
        "      city: Oslo\n      postCode: '0154'\n      country: NO\n"
    )
    path = write(tmp_path, user(firstName="Yes", lastName="On") + contact)
    manifest = load_manifest([path]).manifest
    assert manifest.users[0].contact is not None
    assert manifest.users[0].contact.country == "NO"
    assert (manifest.users[0].firstName, manifest.users[0].lastName) == ("Yes", "On")


def test_environment_must_be_known(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD_USER, environment="production")
    assert problems(path) == [
        f"{path}:2:14: environment: expected 'sim', 'demo', 'live' or 'staging', got 'production'"
    ]


def test_simplus_id_under_another_name_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(
        "apiVersion: reconcile/v1\nenvironment: sim\npartner:\n  dataAccountId: 1\n"
        "  entitlements: {simplus: 5, plus: 5}\nusers: []\n"
    )
    (found,) = problems(path)
    assert found.startswith(f"{path}:4:3: partner: entitlements: plus has the Sim+ id 5")


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    users = user(name="ab") + user(name="trader002", email="bad", password="x")
    path = write(tmp_path, users)
    found = problems(path)
    assert [p.split(": ")[1] for p in found] == ["users[0].name", "users[1].email", "users[1].password"]


def test_duplicate_names_and_emails_name_both_places(tmp_path: Path) -> None:
    path = write(tmp_path, user() + user(email="TRADER001@EXAMPLE.COM"))
    assert problems(path) == [
        f"{path}:12:11: users[1].name: user 'trader001' is defined twice (first defined at {path}:7:5)",
        f"{path}:13:12: users[1].email: email 'TRADER001@EXAMPLE.COM' is already used by user "
        f"'trader001' (emails are unique, ignoring case) (first defined at {path}:7:5)",
    ]


def test_folder_merges_users_from_files_sorted_and_recursive(tmp_path: Path) -> None:
    (tmp_path / "org.yaml").write_text(HEADER.format(environment="sim").replace("users:\n", ""))
    (tmp_path / "team" / "b").mkdir(parents=True)
    (tmp_path / "team" / "a.yml").write_text("users:\n" + user(name="trader002", email="t2@example.com"))
    (tmp_path / "team" / "b" / "c.yaml").write_text("users:\n" + user())
    (tmp_path / "team" / ".hidden.yaml").write_text("garbage: [")
    (tmp_path / "team" / "notes.txt").write_text("garbage: [")
    loaded = load_manifest([tmp_path])
    assert [u.name for u in loaded.manifest.users] == ["trader002", "trader001"]
    assert loaded.files == (
        str(tmp_path / "org.yaml"),
        str(tmp_path / "team" / "a.yml"),
        str(tmp_path / "team" / "b" / "c.yaml"),
    )
    assert loaded.locations["trader001"] == Location(str(tmp_path / "team" / "b" / "c.yaml"), 2, 5)


def test_digest_follows_bytes_not_order(tmp_path: Path) -> None:
    org = tmp_path / "org.yaml"
    org.write_text(HEADER.format(environment="sim").replace("users:\n", ""))
    team = tmp_path / "team.yaml"
    team.write_text("users:\n" + user())
    first = load_manifest([org, team]).digest
    assert load_manifest([team, org]).digest == first
    team.write_text("users:\n" + user() + "# a comment\n")
    assert load_manifest([org, team]).digest != first


def test_same_section_in_two_files_must_agree(tmp_path: Path) -> None:
    a = write(tmp_path, GOOD_USER, name="a.yaml")
    b = write(tmp_path, user(name="trader002", email="t2@example.com"), environment="live", name="b.yaml")
    assert problems([a, b]) == [
        f"{b}:2:1: environment: also set at {a}:2:1 with a different value: set each top-level "
        "section in one file (or identically in every file that sets it)"
    ]
    same = write(tmp_path, user(name="trader002", email="t2@example.com"), name="c.yaml")
    assert len(load_manifest([a, same]).manifest.users) == 2


def test_missing_paths_and_empty_folders_are_problems(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    found = problems([tmp_path / "nope.yaml", tmp_path / "empty"])
    assert found == [
        f"{tmp_path / 'empty'}: folder holds no *.yaml or *.yml files",
        f"{tmp_path / 'nope.yaml'}: no such file or folder",
    ]


def test_literal_password_outside_sim_warns_without_the_password(tmp_path: Path) -> None:
    path = write(tmp_path, user(password="'Sup3r-Secret!'"), environment="demo")
    loaded = load_manifest([path])
    assert [str(w) for w in loaded.warnings] == [
        f"{path}:9:15: users[0].password: a literal password in a demo manifest: literal passwords "
        "belong in sim only; use {env: VAR} or {file: PATH} (or {generate: true})"
    ]
    assert load_manifest([write(tmp_path, user(password="'Sup3r-Secret!'"), name="s.yaml")]).warnings == ()


def test_password_never_appears_in_problems(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        user(password="hunter2")
        + user(name="trader002", email="x@example.com", password="'" + "hunter2" * 10 + "'"),
    )
    text = "\n".join(problems(path))
    assert "hunter2" not in text
    assert "users[0].password" in text and "users[1].password" in text


def test_oversized_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader_module, "MAX_FILE_BYTES", 1024 * 1024)
    path = tmp_path / "huge.yaml"
    path.write_text(HEADER.format(environment="sim") + user() * 20000)
    assert problems(path) == [
        f"{path}:1:1: file is larger than 1 MiB: split the users over several files in a folder"
    ]


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD_USER)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert len(load_manifest([path]).manifest.users) == 1


def test_cross_checks_also_run_when_the_models_are_used_directly() -> None:
    from pydantic import ValidationError

    from reconcile.manifest.models import Manifest

    entry = {"email": "a@example.com", "password": {"generate": True}, "firstName": "A", "lastName": "B"}
    data = {
        "apiVersion": "reconcile/v1",
        "environment": "sim",
        "partner": {"dataAccountId": 1},
        "users": [{"name": "abc", **entry}, {"name": "abc", **entry}],
    }
    with pytest.raises(ValidationError, match=r"users\[1\]\.name: user 'abc' is defined twice"):
        Manifest.model_validate(data)
