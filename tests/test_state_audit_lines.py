"""An audit line's bytes: sorted keys, JSON's default separators, anything else as its str()."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

from reconcile.state.audit import FileAuditLog

NOW = datetime(2026, 11, 30, 22, 38, 12, 130280, tzinfo=UTC)


def test_each_line_is_what_json_dumps_writes_with_sorted_keys_and_str_for_the_rest(tmp_path: Path) -> None:
    log = FileAuditLog(tmp_path / "sim.audit.jsonl", clock=lambda: NOW)
    log.record("update_contact", users=["bench00001"], outcome="ok")
    detail = {"reset": date(2026, 12, 1), "error": 'Zoë said "no"\n', "entitlement": "simplus"}
    log.record("grant_entitlement", users=["a", "b"], outcome="failed", request_id="r1", detail=detail)
    log.close()
    lines = [
        {
            "time": "2026-11-30T22:38:12.130+00:00",
            "action": "update_contact",
            "users": ["bench00001"],
            "outcome": "ok",
        },
        {
            "time": "2026-11-30T22:38:12.130+00:00",
            "action": "grant_entitlement",
            "users": ["a", "b"],
            "outcome": "failed",
            "request_id": "r1",
            "detail": detail,
        },
    ]
    want = "".join(json.dumps(line, sort_keys=True, default=str) + "\n" for line in lines)
    assert (tmp_path / "sim.audit.jsonl").read_bytes() == want.encode()
    assert '"reset": "2026-12-01"' in want and "\\u00eb" in want
