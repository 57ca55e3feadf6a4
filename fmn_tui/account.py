"""Whose preferences the TUI edits, and the one way it reaches them: the preference gateway.

The TUI holds no database rights and no secrets. An :class:`Account` is a
connection to the gateway (``fmn_core.gateway``), which decides who is served: on a
shared host the gateway is ``fmn-daemon gateway``, run by fmn's service account,
and knows the caller by uid; on a laptop, or for an administrator working as the
service account, :meth:`Account.in_process` runs the same gateway in this process
over a socketpair. Either way, every read and every change is a list of
``fmn_core.preferences`` calls sent as one request, and the screens cannot tell
which end they talk to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fmn_core.db import Database
from fmn_core.gateway import GatewayClient, PreferenceCall, SessionInfo
from fmn_core.preferences import Actor

__all__ = ["Account"]


@dataclass(frozen=True)
class Account:
    """The account a TUI session works on, through its gateway connection."""

    client: GatewayClient
    #: Who the gateway serves, and the contexts and push rules to offer.
    info: SessionInfo

    @classmethod
    def connect(cls, path: str) -> Account:
        """Talk to ``fmn-daemon gateway`` on its socket (``GatewayUnavailable`` says why not)."""
        client = GatewayClient.connect(path)
        try:
            return cls(client, client.hello())
        except BaseException:
            client.close()
            raise

    @classmethod
    def in_process(cls, database: Database, actor: Actor, user: str | None = None) -> Account:
        """Run the gateway in this process, for ``actor`` (an admin may name another ``user``).

        Only a process that can open fmn's database gets here: the laptop default,
        or an administrator working as fmn's service account.
        """
        from fmn_core.gateway_serving import PreferenceGateway, Principal, serve_in_process

        principal = Principal(actor, user if user != actor.name else None)
        sock, _thread = serve_in_process(PreferenceGateway(database), principal)
        client = GatewayClient(sock)
        try:
            return cls(client, client.hello())
        except BaseException:
            client.close()
            raise

    @property
    def name(self) -> str:
        """The account name whose preferences are shown."""
        return self.info.account

    @property
    def is_own(self) -> bool:
        """Whether the person at the keyboard owns the account (and so sees full addresses)."""
        return self.info.is_own

    def run(self, calls: Sequence[PreferenceCall], *, trial: bool = False) -> list[Any]:
        """Run ``calls`` as one unit of work (rolled back with ``trial``); their results."""
        return self.client.run(calls, trial=trial)

    def do(self, call: PreferenceCall) -> Any:
        """Run one change as its own unit of work; its result."""
        return self.client.run([call])[0]

    def read(self, call: PreferenceCall) -> Any:
        """Run one read in a transaction that is rolled back; its result."""
        return self.client.run([call], trial=True)[0]

    def close(self) -> None:
        """Hang up (an in-process gateway's thread ends with the connection)."""
        self.client.close()
