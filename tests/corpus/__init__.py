"""Where the bus-message corpus is, for the tests and the benchmarks.

The corpus is the two JSONL files beside this module (see ``README.md`` and
``PROVENANCE.md``). ``FMN_CORPUS`` points every test and benchmark at another
directory holding the same two files; it is read here and nowhere else, so
there is one override and one message when it is wrong.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["FILES", "CorpusMissing", "corpus_dir", "corpus_lines", "corpus_paths"]

#: The corpus files, in the order tests and benchmarks read them.
FILES = ("messages.jsonl", "legacy.jsonl")

HERE = Path(__file__).resolve().parent


class CorpusMissing(FileNotFoundError):
    """A corpus file is not where ``FMN_CORPUS`` (or the default) says it is."""


def corpus_dir() -> Path:
    """The directory the corpus is read from: ``FMN_CORPUS`` if set, else this one."""
    override = os.environ.get("FMN_CORPUS")
    return Path(override).expanduser() if override else HERE


def corpus_paths() -> list[Path]:
    """The corpus files; ``CorpusMissing`` names the first one that is absent."""
    directory = corpus_dir()
    paths = [directory / name for name in FILES]
    for path in paths:
        if not path.is_file():
            origin = "FMN_CORPUS" if os.environ.get("FMN_CORPUS") else "the default location"
            raise CorpusMissing(
                f"the corpus file {path} is missing ({origin}); unset FMN_CORPUS to use "
                f"the copy in {HERE}, or point it at a directory holding {' and '.join(FILES)}"
            )
    return paths


def corpus_lines() -> list[str]:
    """Every line of the corpus files, in file order."""
    lines: list[str] = []
    for path in corpus_paths():
        lines.extend(path.read_text(encoding="utf-8").splitlines())
    return lines
