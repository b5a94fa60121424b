"""The test suite itself: Hypothesis strategies stay cheap on a fresh clone of a busy machine."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).parent


def _calls(name: str) -> list[tuple[str, ast.Call]]:
    found = []
    for path in sorted(TESTS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            func = node.func if isinstance(node, ast.Call) else None
            if (
                isinstance(func, ast.Attribute)
                and func.attr == name
                and isinstance(func.value, ast.Name)
                and func.value.id in ("st", "strategies")
            ):
                found.append((f"{path.name}:{node.lineno}", node))  # type: ignore[arg-type]
    return found


def test_every_hypothesis_text_strategy_has_a_small_alphabet() -> None:
    """st.text() without an alphabet builds Hypothesis' Unicode tables (~1 s) and fails too_slow."""
    texts = _calls("text")
    assert texts, "no st.text() found: this check looks in the wrong place"
    unbounded = [where for where, call in texts if not any(k.arg == "alphabet" for k in call.keywords)]
    assert unbounded == []
    assert [where for where, _ in _calls("characters")] == []


def test_no_test_silences_the_slow_generation_health_check() -> None:
    silenced = [
        path.name
        for path in sorted(TESTS.glob("*.py"))
        if path.name != Path(__file__).name and "HealthCheck.too_slow" in path.read_text(encoding="utf-8")
    ]
    assert silenced == [], "make the strategy cheaper instead"
