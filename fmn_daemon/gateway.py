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
import errno
import functools
import logging
import os
import pwd
import signal
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable

from fmn_core.accounts import AccountDirectory, account_of_login, check_account_name
from fmn_core.errors import (
    AccountDirectoryUnavailable,
    GatewayUnavailable,
    PermissionDenied,
    RateLimited,
    UserError,
)
from fmn_core.gateway_serving import PreferenceGateway, Principal, reply_refusal
from fmn_core.preferences import Actor

from .rate_limited_log import RateLimitedLog

__all__ = [
    "MAX_CONNECTIONS",
    "MAX_CONNECTIONS_PER_ACCOUNT",
    "REFUSAL_LOG_SECONDS",
    "GatewayServer",
    "RefusalLog",
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
#: Seconds :meth:`GatewayServer.stop` waits in all for connection threads to end. A
#: thread stuck where hanging up cannot reach it (a slow account directory) is a
#: daemon thread and ends with the process; systemd's TimeoutStopSec is 15 s.
STOP_GRACE_SECONDS = 5.0
#: A caller's refusals are logged at most once in this many seconds, with a count of
#: those in between: a local user connecting in a loop past their limit would
#: otherwise write a line per attempt and reach journald's limit for the service,
#: which then drops the gateway's other lines too.
REFUSAL_LOG_SECONDS = 60.0
#: Seconds the accept loop pauses when the process is out of descriptors or memory:
#: connections already open go on being served and close, and accepting resumes.
ACCEPT_BACKOFF_SECONDS = 0.1
#: accept() errors that say the process is short of a resource for now, not broken.
_ACCEPT_TRANSIENT = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

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


class RefusalLog:
    """A caller's refused connections, logged as a ``RateLimitedLog`` of their own: the
    first at once, then a line a ``every`` seconds that counts the others, so that
    another caller's refusals are still seen. Counted from the accept loop and the
    connections' threads, hence the lock; callers quiet for ``every`` are forgotten once
    many are known (uids are few, but a loop over them must not grow the table)."""

    def __init__(
        self, every: float = REFUSAL_LOG_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.every = every
        self.clock = clock
        self._lock = threading.Lock()
        self._callers: dict[int, RateLimitedLog] = {}

    def refused(self, uid: int, reason: object) -> None:
        with self._lock:
            caller = self._callers.get(uid)
            if caller is None:
                if len(self._callers) >= 1024:
                    now = self.clock()
                    self._callers = {
                        u: c
                        for u, c in self._callers.items()
                        if c.last_logged is not None and now - c.last_logged < self.every
                    }
                caller = self._callers[uid] = RateLimitedLog(self.every, self.clock, log)
            caller.event("refused a connection from uid %d: %s", uid, reason)


class GatewayServer:
    """The gateway on a Unix socket: one thread per connection, callers known by uid.

    A connection takes its caller's slot before a thread is started for it, so the
    threads and descriptors one local user can make the gateway hold are bounded by
    ``per_account`` however fast they connect, and all of them by ``max_connections``.
    Slots are counted by uid, which the kernel gives at once; the account name may
    need the directory, which can be slow.
    """

    def __init__(
        self,
        gateway: PreferenceGateway,
        path: str,
        *,
        resolve: UidResolver = account_for_uid,
        per_account: int = MAX_CONNECTIONS_PER_ACCOUNT,
        max_connections: int = MAX_CONNECTIONS,
        stop_grace: float = STOP_GRACE_SECONDS,
    ) -> None:
        self.gateway = gateway
        self.path = path
        self.resolve = resolve
        self.per_account = per_account
        self.max_connections = max_connections
        self.stop_grace = stop_grace
        self._listener: socket.socket | None = None
        self._lock = threading.Lock()
        self._open: dict[int, int] = {}
        self._connections: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self.refusals = RefusalLog()
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
            except OSError as error:
                if self._stopping.is_set():
                    break
                if error.errno not in _ACCEPT_TRANSIENT:
                    raise
                # Out of descriptors: dying would lock every user out, so wait
                # for open connections to close and go on.
                log.warning("cannot accept a connection for now: %s", error.strerror)
                self._stopping.wait(ACCEPT_BACKOFF_SECONDS)
                continue
            self._admit(conn)

    def _admit(self, conn: socket.socket) -> None:
        """Take a slot for ``conn`` and start its thread, or refuse it here, threadless."""
        try:
            uid = peer_uid(conn)
        except OSError:
            conn.close()
            return
        with self._lock:
            if self._open.get(uid, 0) >= self.per_account:
                refusal: UserError | None = RateLimited(
                    "Too many fmn sessions are open for this account; close one and try again."
                )
            elif len(self._connections) >= self.max_connections:
                refusal = RateLimited(
                    "fmn's preference service is serving as many sessions as it can; "
                    "try again in a few minutes."
                )
            else:
                refusal = None
                self._open[uid] = self._open.get(uid, 0) + 1
                self._connections.add(conn)
        if refusal is not None:
            self.refusals.refused(uid, refusal)
            # From the accept loop: a client that does not read must not stall it
            # (the refusal fits in an empty socket buffer; if not, it is dropped).
            conn.setblocking(False)
            reply_refusal(conn, refusal)
            conn.close()
            return
        thread = threading.Thread(target=self._serve, args=(conn, uid), daemon=True)
        with self._lock:
            self._threads.add(thread)
        try:
            thread.start()
        except RuntimeError:
            self.refusals.refused(uid, "cannot start a thread")
            self._release(conn, uid, thread)
            conn.close()

    def _release(self, conn: socket.socket, uid: int, thread: threading.Thread) -> None:
        with self._lock:
            self._open[uid] -= 1
            if not self._open[uid]:
                del self._open[uid]
            self._connections.discard(conn)
            self._threads.discard(thread)

    def _serve(self, conn: socket.socket, uid: int) -> None:
        try:
            with conn:
                try:
                    account = self.resolve(uid)
                except (LookupError, UserError) as error:
                    self.refusals.refused(uid, error)
                    reply_refusal(
                        conn,
                        PermissionDenied(
                            "This login is not an fmn account; ask the fmn operators."
                        ),
                    )
                    return
                except AccountDirectoryUnavailable as error:
                    # Not the caller's fault and not a bug: say so, and hang up
                    # rather than leave the client waiting for a reply.
                    self.refusals.refused(uid, f"cannot check who it is: {error}")
                    reply_refusal(
                        conn,
                        UserError(
                            "fmn cannot check who you are right now (its account directory "
                            "did not answer); try again in a few minutes."
                        ),
                    )
                    return
                if self._stopping.is_set():
                    return
                self.gateway.serve_connection(conn, Principal(Actor(account)))
        finally:
            self._release(conn, uid, threading.current_thread())

    def request_stop(self) -> None:
        """Ask :meth:`serve_forever` to return (safe from a signal handler)."""
        self._stopping.set()

    def stop(self) -> None:
        """Stop accepting, hang up every connection, remove the socket.

        Waits at most ``stop_grace`` seconds in all for the connections' threads.
        """
        self._stopping.set()
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            connections = list(self._connections)
            threads = list(self._threads)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + self.stop_grace
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
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
