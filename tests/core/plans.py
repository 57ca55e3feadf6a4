"""Reading PostgreSQL's ``EXPLAIN (FORMAT JSON)`` plans in tests."""

from __future__ import annotations

import json
from typing import Any


def plan_values(plan: Any, key: str) -> list[Any]:
    """Every value of ``key`` in a JSON plan (as the driver gives it, or its text)."""
    return _values(json.loads(plan) if isinstance(plan, str) else plan, key)


def _values(node: Any, key: str) -> list[Any]:
    found: list[Any] = []
    if isinstance(node, dict):
        if key in node:
            found.append(node[key])
        for value in node.values():
            found.extend(_values(value, key))
    elif isinstance(node, list):
        for value in node:
            found.extend(_values(value, key))
    return found
