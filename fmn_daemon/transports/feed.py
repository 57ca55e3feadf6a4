"""RSS/Atom feeds: per user, behind a secret token, built from sent notifications.

"Sending" an ``rss`` notification only marks it sent: a feed reader polls, so
the feed (``/feeds/<token>.atom`` or ``.rss``) is built on request from that
user's newest sent ``rss`` notifications (see :func:`build_feed`), with a link to
the older ones (RFC 5005 archived feeds: :class:`FeedPage`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from fmn_core.destinations import check_feed_token
from fmn_core.errors import InvalidDestination
from fmn_core.feeds import SentEntry
from fmn_core.rendering import Rendered
from fmn_core.text import one_line, xml_text

from . import TransportRefused

__all__ = ["FEED_LIMIT", "FeedPage", "FeedTransport", "build_feed"]

#: How many notifications a feed document shows (the subscription one and each archive page).
FEED_LIMIT = 50

_ATOM = "http://www.w3.org/2005/Atom"
#: RFC 5005's namespace (``fh:archive``).
_FH = "http://purl.org/syndication/history/1.0"


@dataclass(frozen=True)
class FeedPage:
    """Where a feed document stands among the feed's pages (RFC 5005, section 4)."""

    #: This document's own address (``rel="self"``).
    self_url: str
    #: The next older page (``rel="prev-archive"``); None when no older entry is left.
    prev_archive: str | None = None
    #: An archive page (``fh:archive``, ``rel="current"`` to the feed) rather than the
    #: subscription document.
    archive: bool = False


class FeedTransport:
    """Accepts ``rss`` notifications; the feed endpoint serves them once sent."""

    async def send(self, destination: str, rendered: Rendered) -> None:
        """Nothing to push: the row being marked sent is what puts it in the feed."""
        try:
            check_feed_token(destination)
        except InvalidDestination as exc:
            raise TransportRefused(str(exc)) from None


def _line(text: str) -> str:
    # one_line folds controls and separators; xml_text then drops what XML 1.0 still
    # forbids (U+FFFE, U+FFFF), which one_line leaves alone.
    return xml_text(one_line(text))


def _history_extension(feed_url: str, page: FeedPage) -> type[Any]:
    """A feedgen extension writing ``page``'s RFC 5005 links and marker.

    feedgen writes only ``rel="self"`` as an ``atom:link`` in RSS; readers of RSS 2.0
    look for the paging links as ``atom:link`` elements in the channel.
    """
    from feedgen.ext.base import BaseExtension

    links = [("prev-archive", page.prev_archive)] if page.prev_archive else []
    if page.archive:
        links.append(("current", feed_url))

    def add(parent: Any) -> None:
        # Before the first entry or item, with the document's other metadata.
        index = next(
            (i for i, child in enumerate(parent) if child.tag in (f"{{{_ATOM}}}entry", "item")),
            len(parent),
        )
        added = [parent.makeelement(f"{{{_ATOM}}}link", rel=rel, href=href) for rel, href in links]
        if page.archive:
            added.append(parent.makeelement(f"{{{_FH}}}archive"))
        for offset, element in enumerate(added):
            parent.insert(index + offset, element)

    class History(BaseExtension):  # type: ignore[misc]
        def extend_ns(self) -> dict[str, str]:
            return {"fh": _FH}

        def extend_atom(self, feed: Any) -> Any:
            add(feed)
            return feed

        def extend_rss(self, feed: Any) -> Any:
            add(feed.find("channel"))
            return feed

    return History


def build_feed(
    user: str,
    entries: Sequence[SentEntry],
    *,
    feed_url: str,
    kind: Literal["atom", "rss"],
    actions: Callable[[SentEntry], Sequence[tuple[str, str]]] | None = None,
    page: FeedPage | None = None,
) -> bytes:
    """The feed document for ``user``'s entries (newest first).

    Every text that reaches the XML passes through :mod:`fmn_core.text` (titles
    on one line, bodies with only characters XML 1.0 allows), so one entry with
    an ESC or a BEL in its topic costs nothing but that character: lxml would
    refuse the whole document otherwise. ``actions`` gives each entry's signed
    one-click action links (title, URL), listed after its description. ``page``
    places the document among the feed's pages; the feed's and its entries' ids stay
    those of ``feed_url`` on every page, so a reader sees one feed.
    """
    # Imported on the first feed asked for: feedgen and lxml are ~4 MiB of the
    # daemon's memory, which a deployment whose users read no feed never needs.
    from feedgen.feed import FeedGenerator

    generator = FeedGenerator()
    generator.id(feed_url)
    generator.title(_line(f"fmn notifications for {user}"))
    generator.author({"name": "fmn"})
    generator.link(href=page.self_url if page is not None else feed_url, rel="self")
    generator.description(_line(f"Fedora bus messages that matched {user}'s fmn filters"))
    generator.language("en")
    if entries:
        generator.updated(max(e.sent_at for e in entries))
    # feedgen prepends each new entry: add oldest first so the document lists newest first.
    for entry in reversed(entries):
        item = generator.add_entry()
        item.id(f"{feed_url}#{entry.id}")
        item.guid(f"{feed_url}#{entry.id}", permalink=False)
        summary = _line(entry.summary) or _line(entry.topic) or "(no summary)"
        app = _line(entry.app)
        item.title(f"[{app}] {summary}" if app else summary)
        if entry.url:
            item.link(href=xml_text(entry.url))
        description = f"{summary} (topic {_line(entry.topic)}, filter {_line(entry.filter_name)!r})"
        if actions is not None:
            description += "".join(f"\n{title}: {url}" for title, url in actions(entry))
        item.description(xml_text(description))
        item.category(term=app or "fedora")
        item.published(entry.created_at)
        item.updated(entry.sent_at)
    if page is not None and (page.prev_archive or page.archive):
        from feedgen.ext.base import BaseEntryExtension

        generator.register_extension(
            "fmn_history", _history_extension(feed_url, page), BaseEntryExtension
        )
    if kind == "atom":
        return bytes(generator.atom_str(pretty=True))
    # RSS needs a channel link even when no item has one.
    generator.link(href=feed_url, rel="alternate")
    return bytes(generator.rss_str(pretty=True))
