"""The migrations and the models describe the same schema, on both databases."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from fmn_core.db import make_engine
from fmn_core.models import Base
from fmn_core.schema import current_revision, head_revision, schema_problem, upgrade


def _check_matches_models(url: str) -> None:
    revision = upgrade(url)
    assert revision == head_revision(url)
    engine = make_engine(url)
    try:
        assert schema_problem(engine) is None
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, Base.metadata)
        assert differences == [], f"models and migrations differ: {differences}"
        tables = set(inspect(engine).get_table_names())
        assert set(Base.metadata.tables) <= tables
    finally:
        engine.dispose()


def test_schema_upgrade_matches_models_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.sqlite'}"
    _check_matches_models(url)


@pytest.mark.postgres
def test_schema_upgrade_matches_models_on_postgres(postgres_database: str) -> None:
    # A database of its own: the shared session engine already has create_all's tables.
    from sqlalchemy import create_engine, text

    base = postgres_database.rsplit("/", 1)[0]
    admin = create_engine(f"{base}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text('DROP DATABASE IF EXISTS "fmn_schema_check" WITH (FORCE)'))
        connection.execute(text('CREATE DATABASE "fmn_schema_check"'))
    try:
        _check_matches_models(f"{base}/fmn_schema_check")
    finally:
        with admin.connect() as connection:
            connection.execute(text('DROP DATABASE IF EXISTS "fmn_schema_check" WITH (FORCE)'))
        admin.dispose()


def test_schema_upgrade_is_idempotent(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'twice.sqlite'}"
    first = upgrade(url)
    second = upgrade(url)
    assert first == second == head_revision(url)
    engine = make_engine(url)
    try:
        assert current_revision(engine) == first
    finally:
        engine.dispose()


def test_head_revision_read_from_the_scripts_is_alembics_head() -> None:
    from alembic.script import ScriptDirectory

    from fmn_core.schema import _linear_head, _script_location, alembic_config

    alembics = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert _linear_head(_script_location() / "versions") == alembics
    assert head_revision() == alembics


def _script(folder: Path, name: str, revision: str, down: str) -> None:
    (folder / f"{name}.py").write_text(
        f'"""{name}"""\n\nrevision: str = {revision}\ndown_revision: str | None = {down}\n'
    )


def test_a_chain_that_is_not_plain_is_left_to_alembic(tmp_path: Path) -> None:
    from fmn_core.schema import _linear_head

    _script(tmp_path, "a", '"0001"', "None")
    _script(tmp_path, "b", '"0002"', '"0001"')
    assert _linear_head(tmp_path) == "0002"
    _script(tmp_path, "c", '"0003"', '"0001"')  # a branch: two heads
    assert _linear_head(tmp_path) is None
    (tmp_path / "c.py").unlink()
    _script(tmp_path, "m", '"0003"', '("0001", "0002")')  # a merge
    assert _linear_head(tmp_path) is None
    (tmp_path / "m.py").unlink()
    _script(tmp_path, "x", "make_id()", '"0002"')  # computed in code
    assert _linear_head(tmp_path) is None


def test_current_revision_agrees_with_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'agree.sqlite'}"
    engine = make_engine(url)
    try:
        assert current_revision(engine) is None
        upgrade(url, "0003")
        with engine.connect() as connection:
            assert MigrationContext.configure(connection).get_current_revision() == "0003"
        assert current_revision(engine) == "0003"
        assert schema_problem(engine) is not None
        upgrade(url)
        assert current_revision(engine) == head_revision()
        assert schema_problem(engine) is None
    finally:
        engine.dispose()


def test_checking_the_schema_does_not_load_alembic(tmp_path: Path) -> None:
    # The daemon, its commands and the TUI check the schema at every start; Alembic
    # and its templating stay out of those processes unless a schema is being
    # changed, whether the schema is the newest or not.
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'lean.sqlite'}"
    older = f"sqlite:///{tmp_path / 'older.sqlite'}"
    upgrade(url)
    upgrade(older, "0010")
    probe = (
        "import sys\n"
        "import fmn_core, fmn_daemon.cli, fmn_daemon.service\n"
        "from fmn_core.db import make_engine\n"
        "from fmn_core.schema import schema_problem\n"
        f"assert schema_problem(make_engine({url!r})) is None\n"
        f"assert 'older' in schema_problem(make_engine({older!r}))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('alembic', 'mako')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_schema_problem_says_what_to_do_for_a_missing_an_older_and_a_newer_schema(
    tmp_path: Path,
) -> None:
    from sqlalchemy import text

    from fmn_core.schema import schema_problem

    url = f"sqlite:///{tmp_path / 'versions.sqlite'}"
    engine = make_engine(url)
    head = head_revision(url)
    try:
        assert schema_problem(engine) == "has no fmn schema yet: run `fmn-daemon db upgrade`"
        upgrade(url, "0010")
        assert schema_problem(engine) == (
            f"is at schema 0010, older than this fmn's {head}: run `fmn-daemon db upgrade`"
        )
        assert schema_problem(engine, "ask the operator") == (
            f"is at schema 0010, older than this fmn's {head}: ask the operator"
        )
        upgrade(url)
        assert schema_problem(engine) is None
        # Upgraded by a newer fmn: upgrading with this one can do nothing for it.
        with engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = '9001'"))
        problem = schema_problem(engine)
        assert problem is not None
        assert problem.startswith(
            f"is at schema 9001, which this fmn does not know (its newest is {head})"
        )
        assert "newer fmn" in problem and "db upgrade" not in problem
        assert f"`fmn-daemon db downgrade {head}`" in problem
    finally:
        engine.dispose()


def test_usable_schema_problem_accepts_create_all_and_only_the_newest_alembic_schema(
    tmp_path: Path,
) -> None:
    from fmn_core.schema import usable_schema_problem

    url = f"sqlite:///{tmp_path / 'usable.sqlite'}"
    made = f"sqlite:///{tmp_path / 'create_all.sqlite'}"
    engine = make_engine(url)
    made_engine = make_engine(made)
    head = head_revision(url)
    try:
        missing = usable_schema_problem(engine, "ask the operator")
        assert missing is not None and missing.missing
        assert str(missing) == "has no fmn schema yet: ask the operator"
        # Tests and development make the models' tables without Alembic's bookkeeping.
        Base.metadata.create_all(made_engine)
        assert usable_schema_problem(made_engine) is None
        assert schema_problem(made_engine) is not None  # which the daemon refuses
        upgrade(url, "0010")
        older = usable_schema_problem(engine)
        assert older is not None and not older.missing
        assert str(older) == (
            f"is at schema 0010, older than this fmn's {head}: run `fmn-daemon db upgrade`"
        )
        upgrade(url)
        assert usable_schema_problem(engine) is None
    finally:
        engine.dispose()
        made_engine.dispose()
