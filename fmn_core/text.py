"""Text from outside, made safe for where it goes: the one place that cleans it.

Topics, ids, summaries and names arrive from the bus, from users and from the
network. Before such text reaches a mail header, an IRC line, an XML document or a
log line it passes through one of these functions, so that a control character in a
topic can neither forge a log line nor break a feed, whichever part shows it.

- ``one_line``: for headers, IRC lines, log lines and titles. Every control or
  format character, line or paragraph separator becomes a space, runs of white space
  fold into one, and the result is cut to ``limit`` characters with an ellipsis.
- ``xml_text``: for XML and HTML bodies, which may keep line breaks. Characters
  that XML 1.0 forbids (C0 controls but tab and newline, lone surrogates, U+FFFE/F)
  are dropped; other control characters become spaces.
- ``for_log``: for log arguments: like ``one_line`` but control characters are
  shown escaped (``\\x1b``), so an operator still sees what arrived.
- ``has_control``: whether a value contains any character the others would change;
  what a validator refuses.
"""

from __future__ import annotations

import string
import unicodedata

__all__ = ["for_log", "has_control", "irc_fold", "one_line", "xml_text"]

# Categories that are never shown as text: controls, formats (bidi and zero-width
# marks included), surrogates, line and paragraph separators.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def _is_unsafe(character: str) -> bool:
    return unicodedata.category(character) in _UNSAFE_CATEGORIES


def _plain(text: str) -> bool:
    # Printable ASCII has none of those categories; most bus text is, and this
    # check runs in C instead of a category lookup per character.
    return text.isascii() and text.isprintable()


def has_control(text: str) -> bool:
    """Whether ``text`` holds a control, format, surrogate or separator character."""
    return not _plain(text) and any(_is_unsafe(c) for c in text)


def _cut(text: str, limit: int | None) -> str:
    if limit is None or len(text) <= limit:
        return text
    return text[: max(limit - 1, 0)].rstrip() + "…"


def one_line(text: object, *, limit: int | None = None) -> str:
    """``text`` on one line without control characters, at most ``limit`` characters."""
    value = text if isinstance(text, str) else str(text)
    if _plain(value):
        # In printable ASCII the space is the only white space: without one
        # there is nothing to fold (topics, application names, most summaries).
        return _cut(value if " " not in value else " ".join(value.split()), limit)
    flat = "".join(" " if _is_unsafe(c) else c for c in value)
    return _cut(" ".join(flat.split()), limit)


#: ``xml_text`` of ASCII text in one C call: what the loop below makes of each ASCII
#: character (a carriage return a line break, other controls spaces).
_XML_ASCII = str.maketrans(
    {c: ("\n" if c == "\r" else " ") for c in map(chr, [*range(32), 127]) if c not in "\n\t"}
)


def xml_text(text: object) -> str:
    """``text`` with only characters XML 1.0 allows; line breaks and tabs are kept."""
    value = text if isinstance(text, str) else str(text)
    if value.isascii():
        # Every mail's summary passes here: a category lookup per character cost
        # more than the rest of rendering it.
        return value.translate(_XML_ASCII)
    kept: list[str] = []
    for c in value:
        if c in "\n\t":
            kept.append(c)
        elif c == "\r":
            kept.append("\n")
        elif unicodedata.category(c) == "Cs" or c in "\ufffe\uffff":
            continue
        elif _is_unsafe(c):
            kept.append(" ")
        else:
            kept.append(c)
    return "".join(kept)


def for_log(text: object, *, limit: int = 200) -> str:
    """``text`` for a log line: one line, control characters escaped, cut at ``limit``."""
    value = text if isinstance(text, str) else repr(text)
    if _plain(value):
        return _cut(value, limit)
    shown = "".join(
        c.encode("unicode_escape").decode("ascii") if _is_unsafe(c) else c for c in value
    )
    return _cut(shown, limit)


#: RFC 1459's case folding: ASCII capitals, and ``[]\~``, the capitals of ``{}|^``.
_IRC_CAPITALS = str.maketrans(string.ascii_uppercase + "[]\\~", string.ascii_lowercase + "{}|^")


def irc_fold(nick: str) -> str:
    """An IRC nick or account in RFC 1459 case folding (``Alice[m]`` and ``alice{m}`` are one).

    ASCII only, as the servers fold: ``str.lower`` would also make the Kelvin sign
    (U+212A) a ``k``, and an account spelled with it the same as one spelled without.
    """
    return nick.translate(_IRC_CAPITALS)
