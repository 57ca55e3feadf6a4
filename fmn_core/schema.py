"""Bringing a database's schema to the current version with Alembic.

The migration scripts live in the repository's top-level ``alembic/`` folder; an
installed (non-editable) fmn carries a copy in ``<prefix>/share/fmn/alembic``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from alembic import command

from .db import make_engine
from .errors import ConfigError

__all__ = ["alembic_config", "current_revision", "head_revision", "is_current", "upgrade"]


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
    config = AlembicConfig()
    config.set_main_option("script_location", str(_script_location()))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> str:
    """Apply every migration up to ``revision``; return the revision now in place."""
    config = alembic_config(database_url)
    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
        return current_revision(engine) or ""
    finally:
        engine.dispose()


def head_revision(database_url: str = "sqlite://") -> str:
    """The newest migration's revision id."""
    script = ScriptDirectory.from_config(alembic_config(database_url))
    head = script.get_current_head()
    return head or ""


def current_revision(engine: Engine) -> str | None:
    """The revision a database is at (``None`` for an empty one)."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def is_current(engine: Engine) -> bool:
    """Whether the database's schema is at the newest migration."""
    return current_revision(engine) == head_revision(str(engine.url))
