"""Discourse (discussion.fedoraproject.org): topics and posts in a category."""

from __future__ import annotations

from ..messages import MessageFacts
from ..rules import IndexHint, Parameter, RuleContext, rule
from .hints import RANK_APP
from .reading import app_named, body_get, body_integer, body_text

__all__ = [
    "discourse_category",
]


@rule(
    "Discourse category",
    Parameter(
        "category",
        "a discussion.fedoraproject.org category: its slug as in the "
        "address (e.g. project), or its number",
    ),
    hint=IndexHint("app", lambda arguments, context: ("discourse",), RANK_APP),
)
def discourse_category(message: MessageFacts, context: RuleContext, category: str) -> bool:
    """New and changed topics and posts in this Discourse category."""
    if not app_named(message, "discourse"):
        return False
    event = body_get(message.body, "webhook_body")
    post = body_get(event, "post")
    if body_text(post, "category_slug") == category:
        return True
    if not (category.isascii() and category.isdigit()):
        return False
    number = body_integer(post, "category_id")
    if number is None:
        number = body_integer(event, "topic", "category_id")
    return number == int(category)
