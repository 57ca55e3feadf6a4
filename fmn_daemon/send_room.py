"""How many sends go at once, and how many are claimed ahead: slots, turns and rooms.

The senders (``fmn_daemon.delivery``) send each kind of context in slots of its own
(``Slots``): e-mail in its send threads', the fast contexts (feeds) in theirs, a
paced context (Matrix) and push each in their own. Push also takes turns
(``Turns``): one user's jobs hold at most a quarter of push's slots, the jobs to one
server (``push_host``) at most half, so that one user, or one server that hangs for
all its users, costs only itself.

What a claim keeps is bounded too, so that nothing claimed waits past its lease:
e-mail and the fast contexts by ``CLAIM_AHEAD`` times the slots, a paced context
by its lines (``paced_room``), push by send deadlines (``push_room``), counted per
user and per server with each one's share capped (``count_capped``).
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter, deque
from collections.abc import Hashable
from typing import TypeVar
from urllib.parse import parse_qsl

from fmn_core.config import Config, DeliveryConfig
from fmn_core.confirmation import MAX_DESTINATIONS_PER_CONTEXT
from fmn_core.push_urls import FIXED_ENDPOINT_SCHEMES, SCHEME_RE

from .planning import Job
from .transports import DESTINATIONS_AT_ONCE
from .transports.push import SEND_DEADLINE_TIMEOUTS

__all__ = [
    "CLAIM_AHEAD",
    "HOST_SHARE_OF_SLOTS",
    "PACED_LEASE_SHARE",
    "PUSH_CONTEXTS",
    "PUSH_JOB_TIMEOUTS",
    "USER_SHARE_OF_SLOTS",
    "Slots",
    "Turns",
    "capped_growth",
    "count_capped",
    "job_hosts",
    "job_lines",
    "job_rounds",
    "paced_room",
    "push_host",
    "push_room",
]

K = TypeVar("K", bound=Hashable)

#: ``Senders.run`` claims while fewer than this many times ``delivery.senders`` sends
#: are in flight or waiting for a slot: a slot that frees up finds a claimed mail waiting
#: rather than waiting for a claim (10-17 ms at 500 mails/s; claiming only once a
#: slot was free gave p99 173-177 ms against 114-121 ms with the senders alone).
CLAIM_AHEAD = 2
#: A paced context (Matrix) has at most this share of the claim lease in
#: lines claimed ahead: the last of them waits its turn a quarter of the lease, well
#: before the lease runs out and the row is claimed (and sent) again.
PACED_LEASE_SHARE = 0.25
#: The longest a push job takes, in ``push.timeout_seconds``: a send's deadline for
#: each round of a user's destinations.
PUSH_JOB_TIMEOUTS = SEND_DEADLINE_TIMEOUTS * -(
    -MAX_DESTINATIONS_PER_CONTEXT // DESTINATIONS_AT_ONCE
)
PUSH_CONTEXTS = frozenset({"push", "android", "desktop"})
#: One user's push jobs hold at most this share of the push send slots at once (at least
#: one): with a quarter, four users whose servers each keep every send to its deadline
#: are needed to fill them, and one user's backlog leaves the other users three quarters.
USER_SHARE_OF_SLOTS = 4
#: The push jobs to one host hold at most this share of the push send slots at once (at
#: least one): a push service that hangs for all its users (every user's ntfy on one
#: server) leaves the other hosts half the slots; two that hang at once are needed to
#: fill them.
HOST_SHARE_OF_SLOTS = 2
#: The host every Firebase device token (``fcm:TOKEN``) is sent to.
_FCM_HOST = "fcm.googleapis.com"
#: Where ntfy's cloud mode (``ntfy://topic``, ``?mode=cloud``) posts, whatever the URL's host.
_NTFY_CLOUD_HOST = "ntfy.sh"


class Slots:
    """Send slots (``delivery.senders``): e-mail's (its send threads'), the fast
    contexts' (their tasks'), a paced context's own, or push's own.

    Taken on the event loop only: by a task before its send, or for a send thread
    while mails wait for one (the thread gives it back, through the loop, once no
    mail waits). Waiting tasks get a freed slot in turn.
    """

    def __init__(self, size: int) -> None:
        self.free = size
        self._waiters: deque[asyncio.Future[None]] = deque()

    def try_take(self) -> bool:
        """Take a slot if one is free and no task waits for one."""
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return True
        return False

    async def take(self) -> None:
        if self.try_take():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.give()  # handed over just as this task was cancelled: pass it on
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise

    def give(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.free += 1


class Turns:
    """At most ``size`` sends of one user (or to one host) at once; the others wait in turn."""

    def __init__(self, size: int) -> None:
        self.size = size
        #: Only users (hosts) with a send in flight or waiting: dropped once the last is
        #: done, so many hosts seen once leave nothing behind.
        self._turns: dict[Hashable, Slots] = {}

    async def take(self, key: Hashable) -> None:
        slots = self._turns.get(key)
        if slots is None:
            slots = self._turns[key] = Slots(self.size)
        try:
            await slots.take()
        except BaseException:
            self._drop_if_idle(key, slots)
            raise

    def give(self, key: Hashable) -> None:
        slots = self._turns.get(key)
        if slots is not None:
            slots.give()
            self._drop_if_idle(key, slots)

    def _drop_if_idle(self, key: Hashable, slots: Slots) -> None:
        if slots.free >= self.size and self._turns.get(key) is slots:
            del self._turns[key]


def paced_room(lines_per_second: float, delivery: DeliveryConfig) -> int:
    """How many lines a paced context may have claimed ahead (``PACED_LEASE_SHARE``)."""
    room = int(lines_per_second * delivery.claim_lease_seconds * PACED_LEASE_SHARE)
    return max(1, min(room, delivery.batch_size))


def push_room(slots: int, config: Config) -> int:
    """How many send deadlines of push jobs ``slots`` slots may have claimed ahead: a
    quarter of the claim lease's worth (``PACED_LEASE_SHARE``), so that the last of
    them starts well before its lease ends, the slot waits of other users' included."""
    deadline = config.push.timeout_seconds * SEND_DEADLINE_TIMEOUTS
    room = int(slots * config.delivery.claim_lease_seconds * PACED_LEASE_SHARE / deadline)
    return max(1, min(room, config.delivery.batch_size))


def job_rounds(job: Job) -> int:
    """How many send deadlines a push job may take: one per ``DESTINATIONS_AT_ONCE``."""
    return max(1, -(-len(job.head.destinations) // DESTINATIONS_AT_ONCE))


def job_hosts(job: Job) -> list[str]:
    """The hosts a push job goes to (``push_host``), each once, sorted."""
    return sorted({push_host(job.head.context, d) for d in job.head.destinations})


def capped_growth(before: int, rounds: int, cap: int) -> int:
    """How much a sum that counts each entry up to ``cap`` grows when an entry at
    ``before`` gets ``rounds`` more (less, if negative)."""
    return min(before + rounds, cap) - min(before, cap)


def count_capped(counter: Counter[K], key: K, rounds: int, cap: int) -> int:
    """Add ``rounds`` to ``counter[key]``, an entry that falls to zero dropped (so many
    users or hosts seen once leave nothing behind); returns ``capped_growth``."""
    before = counter[key]
    if before + rounds:
        counter[key] = before + rounds
    else:
        counter.pop(key, None)
    return capped_growth(before, rounds, cap)


def push_host(context: str, destination: str) -> str:
    """The server a push destination's sends go to, for the host's turns: the URL's host
    and port (lower case, no user info), the service's own for a scheme with a fixed
    endpoint and for ntfy's cloud mode, and Google's for an Android device token.

    Only a key for the turns, never connected to: a destination the transport will
    refuse (not a URL) costs no turn's worth of time, whatever its key.
    """
    if "://" not in destination:
        # ``fcm:TOKEN``, or a bare token: Android sends every one through FCM.
        return _FCM_HOST if context == "android" else destination
    match = SCHEME_RE.match(destination.strip())
    if match is None:
        return destination
    scheme, rest = match.group(1).lower(), match.group(2)
    if scheme in FIXED_ENDPOINT_SCHEMES:
        return f"{scheme}://"
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if scheme in ("ntfy", "ntfys"):
        # Apprise's ntfy posts to ntfy.sh when told so (``mode=``), or else when the URL
        # names no topic after its host (the "host" is the topic then).
        path, _, query = rest[len(authority) :].partition("#")[0].partition("?")
        mode = dict(parse_qsl(query)).get("mode", "").strip().lower()
        if mode == "cloud" or (not mode and not path.strip("/")):
            return _NTFY_CLOUD_HOST
    return _server(authority.rpartition("@")[2].lower(), scheme)


def _server(hostport: str, scheme: str) -> str:
    """``host[:port]`` as one server is named however its URL spells it: without a
    trailing dot, and without the port its scheme goes to anyway (an Apprise scheme
    ending in ``s`` is HTTPS, 443; the others HTTP, 80)."""
    if hostport.startswith("["):  # an IPv6 literal: its colons are not the port's
        host, _, after = hostport.partition("]")
        host += "]"
        port = after[1:] if after.startswith(":") else ""
    else:
        host, _, port = hostport.partition(":")
        host = host.rstrip(".")
    if port == ("443" if scheme.endswith("s") else "80"):
        port = ""
    return f"{host}:{port}" if port else host


def job_lines(job: Job) -> int:
    """How many lines (turns of the pacing) a job takes: one per destination."""
    return max(1, len(job.head.destinations))
