"""The fmn TUI: one person manages their own notifications, usually over ssh.

The App holds who is being edited (an :class:`~fmn_tui.account.Account`: a
connection to the preference gateway, which also says which contexts to offer), the
rule catalog, the named screens and the app-wide bindings,
and it is where failures are rendered: a ``UserError`` as core wrote it, anything
else as "internal error (reference …)" with the traceback in the log, never on screen.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any, ClassVar

from textual import work
from textual.app import App
from textual.binding import Binding, BindingType
from textual.screen import Screen

from fmn_core import preferences
from fmn_core.errors import (
    GatewayInternalError,
    GatewayUnavailable,
    InternalErrorNotice,
    UserError,
    report_internal_error,
)
from fmn_core.gateway import PreferenceCall
from fmn_core.rules import Catalog

from .account import Account
from .commands import FmnCommands
from .screens._base import HoldsEdits
from .screens.confirm import ConfirmScreen
from .screens.contexts import ContextsScreen
from .screens.destinations import DestinationsScreen
from .screens.digest import DigestScreen
from .screens.filters import FiltersScreen
from .screens.help import HelpScreen
from .screens.notifications import NotificationsScreen
from .screens.templates import TemplatesScreen

__all__ = ["FmnApp"]

log = logging.getLogger(__name__)

#: After this long without an answer, a save says what it is waiting for.
SLOW_SAVE_SECONDS = 0.5


def _has_unsaved(screen: Screen[Any]) -> bool:
    """Whether a screen holds work not yet saved (a rule draft, typed values)."""
    return isinstance(screen, HoldsEdits) and screen.unsaved


class FmnApp(App[int]):
    """Manage your fmn notifications: contexts, filters, rules, destinations."""

    CSS_PATH = "app.tcss"
    TITLE = "fmn"

    SCREENS: ClassVar[dict[str, Callable[[], Screen[Any]]]] = {"contexts": ContextsScreen}
    """The home screen; the others are opened for one context at a time."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f1,question_mark", "help", "Help", key_display="F1"),
        # Not in the footers (every screen has its own way out; F1 lists it).
        Binding("ctrl+q", "quit", "Quit", priority=True, show=False),
    ]
    """Bindings available on every screen."""

    COMMANDS = App.COMMANDS | {FmnCommands}
    """The command palette offers fmn's main actions as well as Textual's own."""

    def __init__(self, account: Account, catalog: Catalog) -> None:
        super().__init__()
        self.account = account
        self.catalog = catalog
        #: The references of internal errors shown in this session (tests check it's empty).
        self.internal_errors: list[str] = []
        #: The "quit without saving?" dialog while it is open.
        self._quit_question: ConfirmScreen | None = None
        #: Saves sent to the gateway and not answered yet.
        self.saving = 0
        #: Whether the saves under way have already said what they wait for.
        self._slow_told = False
        self._who = account.name if account.is_own else f"{account.name} (as admin)"
        self.sub_title = self._who

    def on_mount(self) -> None:
        """Open on the contexts overview; greet a new account, pass on fmn's notices."""
        self.push_screen("contexts")
        if self.account.is_own:
            self._first_contact()

    @work(thread=True, group="first-contact")
    def _first_contact(self) -> None:
        """A new account's first start gives it the default filters; then the notices
        fmn keeps for the user (an exclusion that ended), each shown once."""
        try:
            told = self.account.run(
                [
                    PreferenceCall.of(preferences.first_contact),
                    PreferenceCall.of(preferences.take_notices),
                ]
            )
        except Exception as error:
            self.call_from_thread(self.report, error)
            return
        for sentence in [*told[0], *told[1]]:
            self.call_from_thread(self.notify, sentence, markup=False, timeout=15)

    # --- saving ---------------------------------------------------------------------

    def saving_started(self) -> None:
        """A save was sent: say so at once, and what it waits for if it takes a while."""
        self.saving += 1
        self.sub_title = f"{self._who} · saving…"
        self.set_timer(SLOW_SAVE_SECONDS, self._still_saving)

    def saving_finished(self) -> None:
        """The gateway answered a save (whatever the answer)."""
        self.saving = max(0, self.saving - 1)
        if not self.saving:
            self.sub_title = self._who
            self._slow_told = False

    def answered_from_thread(self) -> None:
        """``saving_finished`` from a save's worker thread, even if its screen has closed."""
        # The app may be exiting (ctrl+q while a save waits): nothing left to update.
        with contextlib.suppress(RuntimeError):
            self.call_from_thread(self.saving_finished)

    def _still_saving(self) -> None:
        # Once while saves keep waiting, not once per key pressed.
        if self.saving and not self._slow_told:
            self._slow_told = True
            self.notify(
                "Saving… waiting for fmn's preferences database. What you typed is kept.",
                markup=False,
                timeout=3,
            )

    # --- failures -----------------------------------------------------------------

    def report(self, error: BaseException) -> None:
        """Show a failure: a user error as it is, anything else as an internal error."""
        if isinstance(error, UserError):
            self.notify(str(error), severity="error", markup=False, timeout=8)
            return
        if isinstance(error, GatewayInternalError):
            # The gateway logged the traceback under this reference (in-process: our log).
            notice = InternalErrorNotice(error.reference)
            log.error("internal error (reference %s) in the preference gateway", error.reference)
            self.internal_errors.append(error.reference)
        elif isinstance(error, GatewayUnavailable):
            # Its message names the cause (service down, connection lost).
            log.warning("%s", error)
            self.notify(f"{error}; nothing more was changed.", severity="error", markup=False)
            return
        else:
            notice = self._log_internal_error(error)
        self.notify(
            f"{notice}. Nothing was changed by it.",
            severity="error",
            markup=False,
            timeout=15,
        )

    def _log_internal_error(self, error: BaseException) -> InternalErrorNotice:
        notice = report_internal_error(log, f"serving {self.account.name}", error)
        self.internal_errors.append(notice.reference)
        return notice

    def _handle_exception(self, error: Exception) -> None:
        # A bug in the UI itself (core failures are caught in the workers and
        # reported above). Textual stops the widget whose handler raised, so the
        # session can't go on; and its default prints a traceback with local
        # variables (configuration included). An ssh user gets a reference instead.
        notice = self._log_internal_error(error)
        self.exit(return_code=1, message=f"fmn-tui: {notice}")

    # --- navigation ---------------------------------------------------------------

    async def action_quit(self) -> None:
        """Quit; when a screen holds unsaved changes, ask first (they would be lost)."""
        unsaved = [screen for screen in self.screen_stack if _has_unsaved(screen)]
        if not unsaved or self.screen is self._quit_question:
            # ctrl+q again on the question itself: the user has been asked.
            self.exit()
            return

        def answered(leave: bool | None) -> None:
            self._quit_question = None
            if leave:
                self.exit()

        self._quit_question = ConfirmScreen(
            "Quit fmn? Your unsaved changes will be lost.", yes="Quit"
        )
        self.push_screen(self._quit_question, answered)

    def action_help(self) -> None:
        """Show every key of the current screen, and the app-wide ones."""
        if isinstance(self.screen, HelpScreen):
            return
        self.push_screen(HelpScreen.for_screen(self, self.screen))

    def open_filters(self, context: str) -> None:
        """Show a context's filters."""
        self.push_screen(FiltersScreen(context))

    def open_destinations(self, context: str) -> None:
        """Show and set a context's destination."""
        self.push_screen(DestinationsScreen(context))

    def open_digest(self, context: str) -> None:
        """Edit a context's digest settings."""
        self.push_screen(DigestScreen(context))

    def open_templates(self, context: str) -> None:
        """Pick a template to clone into a context."""
        self.push_screen(TemplatesScreen(context))

    def open_notifications(self, context: str | None = None) -> None:
        """Show the recent notifications (of one context, or all)."""
        self.push_screen(NotificationsScreen(context))
