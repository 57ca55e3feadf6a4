"""Migration 0011: the start-up's reads of every rule and every package owner come in
order from an index, with no sort before their first row."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect

from fmn_core.db import make_engine
from fmn_core.ownership import _OWNERS_SQL
from fmn_core.schema import downgrade, upgrade
from fmn_core.snapshots import _GROUPED_RULES

from .plans import plan_values


def _indexes(url: str, table: str) -> dict[str, list[str | None]]:
    engine = make_engine(url)
    try:
        return {i["name"] or "": i["column_names"] for i in inspect(engine).get_indexes(table)}
    finally:
        engine.dispose()


def _check(url: str) -> None:
    upgrade(url, "0010")
    assert _indexes(url, "rules") == {"ix_rules_filter_id": ["filter_id"]}
    assert _indexes(url, "package_owners")["ix_package_owners_owner"] == ["owner"]
    upgrade(url, "0011")
    assert _indexes(url, "rules") == {"ix_rules_filter_order": ["filter_id", "position", "id"]}
    owners = _indexes(url, "package_owners")
    assert owners["ix_package_owners_namespace_owner"] == ["namespace", "owner"]
    assert "ix_package_owners_owner" not in owners
    downgrade(url, "0010")
    assert _indexes(url, "rules") == {"ix_rules_filter_id": ["filter_id"]}
    owners = _indexes(url, "package_owners")
    assert owners["ix_package_owners_owner"] == ["owner"]
    assert "ix_package_owners_namespace_owner" not in owners


def test_migration_0011_replaces_the_two_indexes_and_goes_back_on_sqlite(tmp_path: Path) -> None:
    _check(f"sqlite:///{tmp_path / 'old.sqlite'}")


@pytest.mark.postgres
def test_migration_0011_reads_rules_and_owners_in_index_order_on_postgres(
    empty_postgres_url: str,
) -> None:
    _check(empty_postgres_url)
    upgrade(empty_postgres_url)
    engine = make_engine(empty_postgres_url)
    try:
        with engine.connect() as connection:
            # Sorting made as dear as the planner allows: a plan still sorts only
            # when no index gives the order.
            connection.exec_driver_sql("SET enable_sort = off")
            for sql in (_OWNERS_SQL, _GROUPED_RULES):
                (plan,) = connection.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {sql}").one()
                nodes = plan_values(plan, "Node Type")
                assert "Sort" not in nodes and "Incremental Sort" not in nodes, (sql, nodes)
                assert any(n.startswith("Index") for n in nodes), (sql, nodes)
    finally:
        engine.dispose()
    downgrade(empty_postgres_url, "0010")
    engine = make_engine(empty_postgres_url)
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("SET enable_sort = off")
            (plan,) = connection.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {_OWNERS_SQL}").one()
    finally:
        engine.dispose()
    # Without the index the owners are sorted: the check above can fail.
    assert {"Sort", "Incremental Sort"} & set(plan_values(plan, "Node Type"))
