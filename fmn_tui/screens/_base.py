"""What every screen that talks to fmn's core shares: loading and changing, off the UI thread.

A screen says how to ``fetch`` its view through the account's gateway and how to
``show`` it. Reads run in an exclusive thread worker (a newer load supersedes an
older one), as requests whose transaction is rolled back. A change is a list of
preference calls (:class:`~fmn_core.gateway.PreferenceCall`) sent in a thread worker of its
own as one unit of work, and the view is fetched again once it has committed. Errors
never reach the user as tracebacks: a ``UserError`` (re-raised from the gateway's
reply) is shown as core wrote it, anything else becomes "internal error (reference …)"
through the app.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from textual import work
from textual.screen import Screen
from textual.worker import get_current_worker

from fmn_core.errors import UserError
from fmn_core.gateway import PreferenceCall

from ..account import Account

if TYPE_CHECKING:
    from ..app import FmnApp

__all__ = ["CoreScreen"]

ViewT = TypeVar("ViewT")
ResultT = TypeVar("ResultT")

#: Handles a refused change inline; returns whether it did (else it is notified).
FailureHandler = Callable[[UserError], bool]


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
        finally:
            if not trial:
                self.fmn.answered_from_thread()

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
