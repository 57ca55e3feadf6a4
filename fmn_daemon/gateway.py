"""``fmn-daemon gateway``: the preference gateway on a Unix socket, run by fmn's service account.

The service account is the only one that can read fmn's configuration and
database. A user's ``fmn-tui`` holds neither: it connects to this socket, the
gateway asks the kernel (``SO_PEERCRED``) which uid is calling, maps the uid to an
account name (:func:`account_for_uid`, the seam for a directory check) and serves
:class:`fmn_core.gateway_serving.PreferenceGateway` for that account — never as an
administrator. A user who escapes the TUI to a shell can do through the socket
exactly what the TUI lets them do, to their own account, and nothing else.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import pwd
import signal
import socket
import stat
import struct
import threading
from collections.abc import Callable

from fmn_core.accounts import AccountDirectory, account_of_login, check_account_name
from fmn_core.errors import GatewayUnavailable, PermissionDenied, RateLimited, UserError
from fmn_core.gateway_serving import PreferenceGateway, Principal, reply_refusal
from fmn_core.preferences import Actor

__all__ = [
    "MAX_CONNECTIONS",
    "MAX_CONNECTIONS_PER_ACCOUNT",
    "GatewayServer",
    "account_for_uid",
    "directory_resolver",
    "peer_uid",
    "serve_gateway",
]

log = logging.getLogger(__name__)

#: Open connections one account may hold at once (a TUI session holds one).
MAX_CONNECTIONS_PER_ACCOUNT = 8
#: Open connections in all.
MAX_CONNECTIONS = 512

UidResolver = Callable[[int], str]


def account_for_uid(uid: int, directory: AccountDirectory | None = None) -> str:
    """The fmn account of a Unix uid: its login name, checked like any account name,
    and, with a ``directory``, an account the directory knows (``UnknownAccount``
    otherwise). ``LookupError`` or a ``UserError`` refuses the caller.
    """
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError as error:
        raise LookupError(f"uid {uid} has no account name") from error
    if directory is None:
        return check_account_name(name)
    return account_of_login(directory, name)


def directory_resolver(directory: AccountDirectory) -> UidResolver:
    """``account_for_uid`` checked against ``directory``: what ``fmn-daemon gateway`` uses."""
    return functools.partial(account_for_uid, directory=directory)


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process on the other end of a Unix socket, from the kernel."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


class GatewayServer:
    """The gateway on a Unix socket: one thread per connection, callers known by uid."""

    def __init__(
        self,
        gateway: PreferenceGateway,
        path: str,
        *,
        resolve: UidResolver = account_for_uid,
        per_account: int = MAX_CONNECTIONS_PER_ACCOUNT,
    ) -> None:
        self.gateway = gateway
        self.path = path
        self.resolve = resolve
        self.per_account = per_account
        self._listener: socket.socket | None = None
        self._lock = threading.Lock()
        self._open: dict[str, int] = {}
        self._connections: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self._stopping = threading.Event()

    def bind(self) -> None:
        """Listen on the socket path (replacing a stale socket, never another kind of file)."""
        try:
            if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(self.path)
            # Anyone may connect: who they are comes from the kernel, and they get only that.
            os.chmod(self.path, 0o666)
            listener.listen(64)
        except OSError as error:
            listener.close()
            raise GatewayUnavailable(f"cannot listen on {self.path}: {error.strerror}") from error
        except BaseException:
            listener.close()
            raise
        listener.settimeout(0.5)
        self._listener = listener
        log.info("preference gateway listening on %s", self.path)

    def serve_forever(self) -> None:
        """Accept connections until :meth:`stop`."""
        assert self._listener is not None, "bind() first"
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stopping.is_set():
                    break
                raise
            conn.settimeout(None)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            with self._lock:
                self._threads.add(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        account: str | None = None
        try:
            uid = peer_uid(conn)
            try:
                account = self.resolve(uid)
            except (LookupError, UserError) as error:
                log.warning("refused uid %d: %s", uid, error)
                reply_refusal(
                    conn,
                    PermissionDenied("This login is not an fmn account; ask the fmn operators."),
                )
                conn.close()
                return
            with self._lock:
                busy = self._open.get(account, 0) >= self.per_account or (
                    len(self._connections) >= MAX_CONNECTIONS
                )
                if not busy:
                    self._open[account] = self._open.get(account, 0) + 1
                    self._connections.add(conn)
            if busy:
                log.warning("refused a connection from %s: too many open", account)
                reply_refusal(
                    conn,
                    RateLimited(
                        "Too many fmn sessions are open for this account; close one and try again."
                    ),
                )
                conn.close()
                account = None
                return
            self.gateway.serve_connection(conn, Principal(Actor(account)))
        finally:
            with self._lock:
                if account is not None:
                    self._open[account] -= 1
                    if not self._open[account]:
                        del self._open[account]
                self._connections.discard(conn)
                self._threads.discard(threading.current_thread())

    def request_stop(self) -> None:
        """Ask :meth:`serve_forever` to return (safe from a signal handler)."""
        self._stopping.set()

    def stop(self) -> None:
        """Stop accepting, hang up every connection, remove the socket."""
        self._stopping.set()
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            connections = list(self._connections)
            threads = list(self._threads)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join(timeout=5)
        try:
            if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                os.unlink(self.path)
        except FileNotFoundError:
            pass


def serve_gateway(
    gateway: PreferenceGateway, path: str, resolve: UidResolver = account_for_uid
) -> int:
    """Run the gateway on ``path`` until SIGTERM or SIGINT; the exit status.

    ``resolve`` maps a caller's uid to its fmn account (a directory check plugs in here).
    """
    server = GatewayServer(gateway, path, resolve=resolve)
    server.bind()
    previous = {
        signum: signal.signal(signum, lambda *_: server.request_stop())
        for signum in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        server.serve_forever()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        server.stop()
    return 0
