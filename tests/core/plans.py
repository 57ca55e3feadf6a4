"""Reading PostgreSQL's ``EXPLAIN (FORMAT JSON)`` plans in tests."""

from __future__ import annotations

import json
from typing import Any


def plan_values(plan: Any, key: str) -> list[Any]:
    """Every value of ``key`` in a JSON plan (or its text), at any depth."""
    if isinstance(plan, str):
        plan = json.loads(plan)
    found: list[Any] = []
    if isinstance(plan, dict):
        if key in plan:
            found.append(plan[key])
        for value in plan.values():
            found.extend(plan_values(value, key))
    elif isinstance(plan, list):
        for value in plan:
            found.extend(plan_values(value, key))
    return found
