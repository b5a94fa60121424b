"""Cut the project's copy of the partner-API contract out of the published OpenAPI document.

The copy holds the paths the project uses and every component schema they reference
(transitively), with descriptions dropped, so contract tests run on a fresh clone. Regenerate it
after the published document or :data:`USED_PATHS` changes::

    python -m reconcile.contract.extract PATH/TO/tradovate-openapi-2026-08-21.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

USED_PATHS = (
    "/auth/accesstokenrequest",
    "/auth/renewaccesstoken",
    "/auth/me",
    "/user/createevaluationusers",
    "/user/modifyemailaddress",
    "/user/canceleverything",
    "/user/list",
    "/user/item",
    "/user/items",
    "/user/find",
    "/contactInfo/updatecontactinfo",
    "/contactInfo/item",
    "/contactInfo/deps",
    "/contactInfo/ldeps",
    "/userPlugin/addentitlementsubscription",
    "/userPlugin/deps",
    "/userPlugin/ldeps",
    "/userPlugin/list",
    "/entitlement/list",
    "/adminAlertSignal/deps",
    "/adminAlertSignal/item",
    "/adminAlertSignal/completealertsignal",
    # Stage 4: evaluation accounts, trading permissions, risk settings and resets.
    "/user/createevaluationaccounts",
    "/user/revoketradingpermission",
    "/user/revoketradingpermissions",
    "/account/resetdemoaccountstate",
    "/account/list",
    "/account/deps",
    "/account/ldeps",
    "/tradingPermission/list",
    "/tradingPermission/deps",
    "/tradingPermission/ldeps",
    "/accountRiskStatus/switchriskcategory",
    "/accountRiskStatus/setadminautoliqaction",
    "/accountRiskStatus/list",
    "/accountRiskStatus/deps",
    "/accountRiskStatus/ldeps",
    "/userAccountAutoLiq/updateuserautoliqs",
    "/userAccountAutoLiq/list",
    "/userAccountAutoLiq/deps",
    "/userAccountAutoLiq/ldeps",
)
"""The partner-API paths the project calls or simulates, spelled as the contract spells them."""

COPY_PATH = Path(__file__).with_name("partner-api.json")

_REF = re.compile(r"^#/components/schemas/(.+)$")
_DROPPED_KEYS = frozenset({"description"})


def _strip(node: Any) -> Any:
    # "description" is also a legitimate *property name* in some schemas: only drop it where it is
    # annotation text (a string value), never a key of a ``properties`` mapping.
    if isinstance(node, dict):
        return {
            key: _strip(value)
            for key, value in node.items()
            if not (key in _DROPPED_KEYS and isinstance(value, str))
        }
    if isinstance(node, list):
        return [_strip(item) for item in node]
    return node


def _refs(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and (match := _REF.match(value)):
                found.add(match.group(1))
            else:
                found |= _refs(value)
    elif isinstance(node, list):
        for item in node:
            found |= _refs(item)
    return found


def extract(document: dict[str, Any], paths: tuple[str, ...] = USED_PATHS) -> dict[str, Any]:
    """Return the part of ``document`` that ``paths`` need: those paths plus referenced schemas."""
    missing = [p for p in paths if p not in document["paths"]]
    if missing:
        raise KeyError(f"paths not in the published contract: {', '.join(missing)}")
    used_paths = {p: _strip(document["paths"][p]) for p in sorted(paths)}
    schemas = document["components"]["schemas"]
    wanted: set[str] = set()
    todo = sorted(_refs(used_paths))
    while todo:
        name = todo.pop()
        if name in wanted:
            continue
        wanted.add(name)
        todo.extend(sorted(_refs(schemas[name]) - wanted))
    components: dict[str, Any] = {"schemas": {n: _strip(schemas[n]) for n in sorted(wanted)}}
    if "securitySchemes" in document["components"]:
        components["securitySchemes"] = _strip(document["components"]["securitySchemes"])
    return {
        "openapi": document["openapi"],
        "info": {
            "title": document["info"].get("title", ""),
            "version": document["info"].get("version", ""),
            "x-extracted-by": "python -m reconcile.contract.extract",
        },
        "servers": document.get("servers", []),
        "paths": used_paths,
        "components": components,
    }


def render(copy: dict[str, Any]) -> str:
    """Serialise the copy deterministically (sorted keys, stable indentation, final newline)."""
    return json.dumps(copy, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the project's contract copy from the published document."""
    parser = argparse.ArgumentParser(prog="python -m reconcile.contract.extract", description=main.__doc__)
    parser.add_argument("source", type=Path, help="the published OpenAPI document (JSON)")
    parser.add_argument("-o", "--output", type=Path, default=COPY_PATH, help=f"default: {COPY_PATH}")
    args = parser.parse_args(argv)
    document = json.loads(args.source.read_text(encoding="utf-8"))
    copy = extract(document)
    args.output.write_text(render(copy), encoding="utf-8")
    print(
        f"wrote {args.output}: {len(copy['paths'])} paths, {len(copy['components']['schemas'])} schemas",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
