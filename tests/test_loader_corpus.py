"""Every bad manifest in tests/corpus gets exactly its expected problems, and nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconcile.errors import ManifestError
from reconcile.manifest.loader import load_manifest

CORPUS = Path(__file__).parent / "corpus"
CASES = sorted(p.with_suffix("") for p in CORPUS.glob("*.expected"))


def _input(case: Path) -> str:
    folder = case
    return folder.name if folder.is_dir() else f"{case.name}.yaml"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_corpus_case_reports_expected_problems(case: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(CORPUS)
    with pytest.raises(ManifestError) as caught:
        load_manifest([_input(case)])
    assert str(caught.value) + "\n" == case.with_suffix(".expected").read_text()


def test_every_corpus_input_has_an_expectation() -> None:
    inputs = {p.stem for p in CORPUS.glob("*.yaml")} | {p.name for p in CORPUS.iterdir() if p.is_dir()}
    assert inputs == {c.name for c in CASES}
