"""Bringing a database's schema to the current version with Alembic.

The migration scripts live in the repository's top-level ``alembic/`` folder; an
installed (non-editable) fmn carries a copy in ``<prefix>/share/fmn/alembic``.

Alembic itself (with Mako and Pygments) is imported only to change a schema. Every
start of the daemon, the bot and the TUI asks only "which revision is this database
at, and is it the newest?": that is answered from the ``alembic_version`` table and
the scripts' own ``revision`` lines, which keeps ~10 MiB of modules out of every
long-running process.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, inspect, text

from .db import make_engine
from .errors import ConfigError

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

__all__ = [
    "SchemaProblem",
    "alembic_config",
    "current_revision",
    "downgrade",
    "head_revision",
    "knows_revision",
    "schema_problem",
    "upgrade",
    "usable_schema_problem",
]

#: Alembic's default version table; fmn's ``alembic/env.py`` keeps the default.
VERSION_TABLE = "alembic_version"

# The two assignments every script under alembic/versions/ starts with, in the form
# Alembic writes them (``revision: str = "0008"``, ``down_revision: ... = "0007"``).
_ASSIGNMENT = re.compile(
    r"^(?P<name>revision|down_revision)\s*(?::[^=\n]*)?=\s*(?P<value>.+?)\s*$", re.MULTILINE
)
_QUOTED = re.compile(r"""^(["'])([^"']+)\1$""")


def _script_location() -> Path:
    candidates = [
        Path(__file__).resolve().parent.parent / "alembic",
        Path(sys.prefix) / "share" / "fmn" / "alembic",
    ]
    for candidate in candidates:
        if (candidate / "env.py").is_file():
            return candidate
    raise ConfigError(
        "(installation)",
        "the migration scripts are missing; reinstall fmn (looked in "
        + ", ".join(str(c) for c in candidates)
        + ")",
    )


def alembic_config(database_url: str) -> AlembicConfig:
    """An Alembic configuration for this database, independent of the working directory."""
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig()
    config.set_main_option("script_location", str(_script_location()))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> str:
    """Apply every migration up to ``revision``; return the revision now in place."""
    from alembic import command

    return _migrate(database_url, command.upgrade, revision)


def downgrade(database_url: str, revision: str) -> str:
    """Undo the migrations after ``revision`` (rolling a release back); return the
    revision now in place."""
    from alembic import command

    return _migrate(database_url, command.downgrade, revision)


def _migrate(database_url: str, step: Callable[[AlembicConfig, str], None], revision: str) -> str:
    config = alembic_config(database_url)
    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            step(config, revision)
        return current_revision(engine) or ""
    finally:
        engine.dispose()


def _plain_scripts(versions: Path) -> tuple[set[str], set[str]] | None:
    """The revisions of the scripts and the ones they revise, or ``None`` when a script
    is not written the usual way (a revision computed in code) and Alembic must read them."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in versions.glob("*.py"):
        found = {m["name"]: m["value"] for m in _ASSIGNMENT.finditer(script.read_text("utf-8"))}
        revision = _QUOTED.match(found.get("revision", ""))
        if revision is None:
            return None
        revisions.add(revision[2])
        parent = found.get("down_revision", "None")
        if parent != "None":
            quoted = _QUOTED.match(parent)
            if quoted is None:
                return None
            parents.add(quoted[2])
    return revisions, parents


def _linear_head(versions: Path) -> str | None:
    """The one head of a chain of plain scripts, or ``None`` when Alembic must decide.

    Anything but a single chain written the usual way (a merge, a branch label, a
    revision computed in code) is left to Alembic's own reading.
    """
    scripts = _plain_scripts(versions)
    if scripts is None:
        return None
    revisions, parents = scripts
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 and parents <= revisions else None


def knows_revision(revision: str, database_url: str = "sqlite://") -> bool:
    """Whether one of this fmn's migration scripts is ``revision``."""
    scripts = _plain_scripts(_script_location() / "versions")
    if scripts is not None:
        return revision in scripts[0]
    from alembic.script import ScriptDirectory

    try:
        return (
            ScriptDirectory.from_config(alembic_config(database_url)).get_revision(revision)
            is not None
        )
    except Exception:  # Alembic's "can't locate revision"
        return False


def head_revision(database_url: str = "sqlite://") -> str:
    """The newest migration's revision id."""
    head = _linear_head(_script_location() / "versions")
    if head is not None:
        return head
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config(database_url))
    return script.get_current_head() or ""


def current_revision(engine: Engine) -> str | None:
    """The revision a database is at (``None`` for an empty one)."""
    with engine.connect() as connection:
        if not inspect(connection).has_table(VERSION_TABLE):
            return None
        rows = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).all()
    if len(rows) > 1:
        raise ConfigError(
            "(database)",
            f"the database is at several schema revisions at once "
            f"({', '.join(sorted(r[0] for r in rows))}); run `fmn-daemon db upgrade`",
        )
    return rows[0][0] if rows else None


#: What to do about a schema that is missing or older than this fmn's.
UPGRADE = "run `fmn-daemon db upgrade`"


def schema_problem(engine: Engine, upgrade_hint: str = UPGRADE) -> str | None:
    """Why this fmn can't use the database's schema, and what to do, to follow "the
    database ..."; ``None`` when it is at the newest migration. ``upgrade_hint`` says
    what to do about a missing or older schema (a front end's users are not the
    operator).

    A schema newer than every script this fmn has was upgraded by a newer fmn:
    ``fmn-daemon db upgrade`` can do nothing for it, so that is not what it says.
    """
    url = engine.url.render_as_string(hide_password=False)
    current = current_revision(engine)
    head = head_revision(url)
    if current == head:
        return None
    if current is None:
        return f"has no fmn schema yet: {upgrade_hint}"
    if knows_revision(current, url):
        return f"is at schema {current}, older than this fmn's {head}: {upgrade_hint}"
    return (
        f"is at schema {current}, which this fmn does not know (its newest is {head}): a "
        "newer fmn has upgraded it; run that fmn, or take the schema back with that fmn's "
        f"`fmn-daemon db downgrade {head}`"
    )


@dataclass(frozen=True)
class SchemaProblem:
    """Why a front end can't use the database's schema (see :func:`usable_schema_problem`)."""

    #: What is wrong and what to do, to follow "the database ...".
    sentence: str
    #: Whether the database has no fmn tables at all (a front end may create them).
    missing: bool

    def __str__(self) -> str:
        return self.sentence


def usable_schema_problem(engine: Engine, upgrade_hint: str = UPGRADE) -> SchemaProblem | None:
    """Why a front end (the bot, the TUI) can't use the database's schema; ``None`` when
    it can.

    Unlike :func:`schema_problem`, tables without Alembic's bookkeeping count as usable:
    ``Base.metadata.create_all`` made them (tests, development), and they are the models'
    own. A database with Alembic's table must be at the newest migration.
    """
    with engine.connect() as connection:
        tables = set(inspect(connection).get_table_names())
    if "users" not in tables:
        return SchemaProblem(f"has no fmn schema yet: {upgrade_hint}", missing=True)
    if VERSION_TABLE not in tables:
        return None
    problem = schema_problem(engine, upgrade_hint)
    return None if problem is None else SchemaProblem(problem, missing=False)
