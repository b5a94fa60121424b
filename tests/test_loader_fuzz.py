"""Hypothesis against the loader: garbage in gives a ManifestError, never another exception or a hang."""

from __future__ import annotations

from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconcile.errors import ManifestError
from reconcile.manifest.loader import load_manifest

DESK = (Path(__file__).parent.parent / "examples" / "desk.yaml").read_bytes()
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

YAMLISH = st.text(alphabet=st.sampled_from(list("abc:- \n\t[]{}&*!|>'\"#%@`,?~01\u00e9\u0000")), max_size=300)


def _load_bytes(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(data)
    _loads_or_locates_every_problem(path)


def _loads_or_locates_every_problem(path: Path) -> None:
    """Assert the documented outcome: a valid manifest, or a ManifestError locating each problem in PATH."""
    try:
        loaded = load_manifest([path])
    except ManifestError as exc:
        assert exc.problems, "a ManifestError must say what is wrong"
        for problem in exc.problems:
            assert problem.message
            assert problem.location is not None, f"unlocated problem: {problem}"
            assert problem.location.file == str(path), str(problem)
            assert problem.location.line >= 1 and problem.location.column >= 1, str(problem)
        return
    assert loaded.files == (str(path),)
    assert loaded.manifest.apiVersion == "reconcile/v1"
    assert {u.name for u in loaded.manifest.users} == set(loaded.locations)
    assert all(where.file == str(path) for where in loaded.locations.values())


@FUZZ
@given(data=st.binary(max_size=500))
def test_random_bytes(tmp_path_factory: object, data: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        _load_bytes(Path(tmp), data)


@FUZZ
@given(text=YAMLISH)
def test_random_yamlish_text(text: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        _load_bytes(Path(tmp), text.encode("utf-8", "surrogatepass"))


@FUZZ
@given(
    cut=st.integers(0, len(DESK)),
    length=st.integers(0, 40),
    insert=st.binary(max_size=20) | YAMLISH.map(lambda s: s.encode()),
)
def test_mutations_of_the_example(cut: int, length: int, insert: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        _load_bytes(Path(tmp), DESK[:cut] + insert + DESK[cut + length :])


def _leaf_paths(node: object, path: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _leaf_paths(v, (*path, k))] + [path]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in _leaf_paths(v, (*path, i))] + [path]
    return [path]


DESK_DATA = yaml.safe_load(DESK)
LEAVES = [p for p in _leaf_paths(DESK_DATA) if p]
# Text from a fixed alphabet of the characters the rules care about (separators, digits, '+', '@',
# whitespace, NUL, non-ASCII, an emoji): st.text() without one makes Hypothesis build its Unicode
# tables on a fresh clone, which fails the too_slow health check on a busy machine.
VALUE_ALPHABET = "aZ09 .@+-_:#\t\n\x00\u00e9\u4e2d\u200b\U0001f600"
VALUES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(alphabet=VALUE_ALPHABET, max_size=80)
    | st.just([])
    | st.just({})
)


@FUZZ
@given(path=st.sampled_from(LEAVES), value=VALUES)
def test_replacing_any_value_is_handled_and_located(path: tuple[object, ...], value: object) -> None:
    import copy
    import json
    import tempfile

    data = copy.deepcopy(DESK_DATA)
    target = data
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "m.yaml"
        # JSON is YAML: a faithful rendering of the mutated manifest with real line numbers.
        file.write_text(json.dumps(data, indent=1))
        _loads_or_locates_every_problem(file)


def test_a_duplicate_key_beside_what_only_yaml_rs_refuses_is_reported_not_raised(tmp_path: Path) -> None:
    # PyYAML finds only the repeated key; yaml-rs also refuses the flow mapping's less indented line.
    text = DESK.decode().replace(
        "users:\n", "users:\n  - {name: dup, email: d@example.com, lastName: x,\n lastName: y}\n", 1
    )
    path = tmp_path / "desk.yaml"
    path.write_text(text)
    _loads_or_locates_every_problem(path)
    try:
        load_manifest([path])
    except ManifestError as exc:
        messages = [p.message for p in exc.problems]
    assert any(m.startswith("invalid YAML") for m in messages), messages
    assert any(m.startswith("duplicate key 'lastName'") for m in messages), messages
