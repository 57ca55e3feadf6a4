"""fmn's main actions in the command palette (ctrl+p)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, cast

from textual.command import DiscoveryHit, Hit, Hits, Provider

if TYPE_CHECKING:
    from .app import FmnApp

__all__ = ["FmnCommands"]

Command = tuple[str, Callable[[], Any], str]


class FmnCommands(Provider):
    """Open any context's screens from anywhere, or run the current screen's actions."""

    def _commands(self) -> list[Command]:
        app = cast("FmnApp", self.app)
        commands: list[Command] = [
            ("Recent notifications", app.open_notifications, "What fmn sent you lately"),
        ]
        for context in app.account.info.contexts:
            commands += [
                (
                    f"Filters of {context}",
                    partial(app.open_filters, context),
                    f"Add, edit, reorder or delete the filters of {context}",
                ),
                (
                    f"Destination of {context}",
                    partial(app.open_destinations, context),
                    f"Set or confirm where {context} notifications go",
                ),
                (
                    f"Digest of {context}",
                    partial(app.open_digest, context),
                    f"Gather {context} notifications into fewer messages",
                ),
                (
                    f"Templates for {context}",
                    partial(app.open_templates, context),
                    f"Start {context} from a ready-made set of filters",
                ),
            ]
        screen = self.screen
        seen: set[str] = set()
        for active in screen.active_bindings.values():
            binding = active.binding
            if active.node is not screen or not binding.show or not binding.description:
                continue
            if binding.action in seen:
                continue
            seen.add(binding.action)
            key = app.get_key_display(binding)
            commands.append(
                (
                    f"{binding.description} (this screen)",
                    partial(screen.run_action, binding.action),
                    f"Key: {key}",
                )
            )
        return commands

    async def discover(self) -> Hits:
        """Everything, before anything is typed."""
        for name, command, help_text in self._commands():
            yield DiscoveryHit(name, command, help=help_text)

    async def search(self, query: str) -> Hits:
        """The commands whose name matches what was typed."""
        matcher = self.matcher(query)
        for name, command, help_text in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), command, text=name, help=help_text)
