"""What every screen that talks to fmn's core shares: loading and changing, off the UI thread.

A screen says how to ``fetch`` its view through the account's gateway and how to
``show`` it. Reads run in an exclusive thread worker (a newer load supersedes an
older one), as requests whose transaction is rolled back. A change is a list of
preference calls (:class:`~fmn_core.gateway.PreferenceCall`) sent in a thread worker of its
own as one unit of work, and the view is fetched again once it has committed. Errors
never reach the user as tracebacks: a ``UserError`` (re-raised from the gateway's
reply) is shown as core wrote it, anything else becomes "internal error (reference …)"
through the app.

:class:`HoldsEdits` is the one way a screen keeps what the user typed or drafted
and has not saved: Esc (the footer's "Back"/"Cancel") and ctrl+q ask before
dropping it, and a "no" leaves the focus where it was, so the letters typed next go
into the field, never to the screen's shortcuts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, cast

from textual import work
from textual.screen import Screen
from textual.widgets import Input
from textual.worker import get_current_worker

from fmn_core.errors import UserError
from fmn_core.gateway import PreferenceCall

from ..account import Account
from .confirm import ConfirmScreen

if TYPE_CHECKING:
    from ..app import FmnApp

__all__ = ["CoreScreen", "HoldsEdits"]

ViewT = TypeVar("ViewT")
ResultT = TypeVar("ResultT")

#: Handles a refused change inline; returns whether it did (else it is notified).
FailureHandler = Callable[[UserError], bool]


class HoldsEdits:
    """A screen (mixed into a ``Screen`` or ``ModalScreen``) whose text fields hold
    the user's work until it is saved or used.

    The fields' text counts as unsaved when it differs from what :meth:`mark_saved`
    last recorded (empty until then): a screen that opens with values calls it when
    mounted, and again after loading or saving. A screen whose work is elsewhere
    (a rule draft) overrides :attr:`unsaved`. Bind Esc to :meth:`leave`; the app asks on ctrl+q.
    """

    #: The fields whose text is the user's work (a CSS selector; read-only ones left out).
    EDIT_FIELDS: ClassVar[str] = "Input"
    #: What leaving asks when something is unsaved.
    DISCARD_QUESTION: ClassVar[str] = "Leave without saving what you typed?"
    #: The button that drops it.
    DISCARD_YES: ClassVar[str] = "Discard"

    _saved_text: dict[str, str] | None = None

    def _edit_fields(self) -> Iterator[Input]:
        yield from cast("Screen[Any]", self).query(self.EDIT_FIELDS).results(Input)

    @staticmethod
    def _field_key(field: Input) -> str:
        return field.id or str(id(field))

    def mark_saved(self) -> None:
        """What the fields hold now is stored (or is the screen's starting point)."""
        self._saved_text = {self._field_key(f): f.value.strip() for f in self._edit_fields()}

    def fields_changed(self) -> bool:
        """Whether a field holds text the user typed and has not saved."""
        saved = self._saved_text or {}
        return any(
            field.value.strip() != saved.get(self._field_key(field), "")
            for field in self._edit_fields()
        )

    @property
    def unsaved(self) -> bool:
        """Whether leaving now would lose the user's work."""
        return self.fields_changed()

    def discard_question(self) -> str:
        """What to ask before dropping the unsaved work."""
        return self.DISCARD_QUESTION

    def leave(self, result: Any = None) -> None:
        """Close the screen with ``result``; when something is unsaved, only if the user
        says so ("no" keeps the screen as it was, focus included)."""
        screen = cast("Screen[Any]", self)
        if not self.unsaved:
            screen.dismiss(result)
            return

        def answered(discard: bool | None) -> None:
            if discard:
                screen.dismiss(result)

        screen.app.push_screen(
            ConfirmScreen(self.discard_question(), yes=self.DISCARD_YES), answered
        )


class CoreScreen(Screen[ResultT], Generic[ViewT, ResultT]):
    """A screen showing a view fetched from core, and changing it through core."""

    @property
    def fmn(self) -> FmnApp:
        """The app, typed."""
        return cast("FmnApp", self.app)

    @property
    def account(self) -> Account:
        """The account being edited."""
        return self.fmn.account

    def fetch(self) -> ViewT:
        """Read what the screen shows, through ``self.account`` (runs in a worker thread)."""
        raise NotImplementedError

    def show(self, view: ViewT) -> None:
        """Display a freshly fetched view (runs on the UI thread)."""
        raise NotImplementedError

    def on_screen_resume(self) -> None:
        """Fetch the view whenever the screen comes (back) to the top."""
        self.load()

    @work(thread=True, exclusive=True, group="load")
    def load(self) -> None:
        """Fetch and show the view.

        Reads run in a transaction that is rolled back: showing never stores anything,
        not even a draft's pending steps replayed to display them.
        """
        worker = get_current_worker()
        try:
            view = self.fetch()
        except Exception as error:
            if not worker.is_cancelled:
                self.app.call_from_thread(self.fmn.report, error)
            return
        if not worker.is_cancelled:
            self.app.call_from_thread(self._show_if_mounted, view)

    def change(
        self,
        *calls: PreferenceCall,
        done: Callable[[Any], object] | None = None,
        failed: FailureHandler | None = None,
        trial: bool = False,
    ) -> None:
        """Run ``calls`` in one unit of work, then fetch and show the view again.

        ``done`` gets the last call's result. With ``trial``, the transaction is rolled
        back: core checks the change and ``done`` gets its result, but nothing is
        stored and the view is not refetched. A save is acknowledged at once (the
        app shows it is saving until the gateway answers), so a busy database never
        leaves a key press without an answer.
        """
        if not trial:
            self.fmn.saving_started()
        self._change(calls, done, failed, trial)

    # A started write can't be cancelled (its thread runs on), so changes are not
    # exclusive: each one runs, and each ends by showing the committed state.
    @work(thread=True, group="change")
    def _change(
        self,
        calls: tuple[PreferenceCall, ...],
        done: Callable[[Any], object] | None,
        failed: FailureHandler | None,
        trial: bool,
    ) -> None:
        worker = get_current_worker()
        try:
            try:
                result = self.account.run(calls, trial=trial)[-1]
            finally:
                # Answered (whatever the answer): the header stops saying "saving…"
                # before the outcome is shown.
                if not trial:
                    self.fmn.answered_from_thread()
            if not trial:
                # Read back apart, like ``load``: whatever ``fetch`` replays is never stored.
                view = self.fetch()
        except Exception as error:
            if not worker.is_cancelled:
                self.app.call_from_thread(self._failed, error, failed)
            return
        if worker.is_cancelled:
            return
        if not trial:
            self.app.call_from_thread(self._show_if_mounted, view)
        if done is not None:
            self.app.call_from_thread(self._done_if_mounted, done, result)

    def _on_screen(self) -> bool:
        # A closing screen leaves the screen stack at once but keeps is_mounted while
        # its widgets are removed: a worker finishing then must not touch them.
        return self.is_mounted and self in self.app.screen_stack

    def _show_if_mounted(self, view: ViewT) -> None:
        if self._on_screen():
            self.show(view)

    def _done_if_mounted(self, done: Callable[[Any], object], result: Any) -> None:
        if self._on_screen():
            done(result)

    def _failed(self, error: Exception, handler: FailureHandler | None) -> None:
        if isinstance(error, UserError) and handler is not None and handler(error):
            return
        self.fmn.report(error)
