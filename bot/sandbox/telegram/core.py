"""The sandbox's shared state and bookkeeping, used by API methods, the HTTP
server and the Python control surface alike."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .errors import ApiError, default_description
from .files import FileStore
from .ratelimit import RateLimiter
from .signals import Notifier
from .state import State, User
from .updates import UpdateQueue, WebhookReply


@dataclass(slots=True)
class CallRecord:
    """One Bot API request: what was asked and what the sandbox answered.

    ``started_at``/``finished_at`` are :func:`time.perf_counter` values taken when
    the request arrived and when its answer was ready.  ``dropped``: the connection was dropped instead of
    answering (:meth:`TelegramSandbox.drop_next`); ``ok`` and ``result`` then say what the call did, unseen by the
    client (a call dropped before it was executed is ``ok=False`` with no ``error_code``).
    """

    method: str
    params: dict[str, Any]
    chat_id: int | str | None
    started_at: float
    finished_at: float
    ok: bool
    error_code: int | None = None
    description: str | None = None
    result: Any = None
    dropped: bool = False


@dataclass(slots=True)
class ThrottleRecord:
    """A 429 the sandbox answered with (``scope`` is the limit, or ``"injected"``)."""

    method: str
    chat_id: int | str | None
    retry_after: int
    scope: str
    at: float


class ConnectionDrop(Exception):
    """A call answered by dropping the connection (``drop_next``), after executing it or not."""

    def __init__(self, executed: bool) -> None:
        super().__init__("connection dropped " + ("after executing the call" if executed else "before executing the call"))
        self.executed = executed


@dataclass(slots=True)
class Fault:
    """``fail_next``/``drop_next`` rule: the next ``count`` matching calls answer with this error, or (``drop``
    set) get no answer at all: ``drop`` is the :class:`ConnectionDrop` they get."""

    method: str  # lower-case method name
    error_code: int
    description: str
    retry_after: int | None
    count: int
    chat_id: int | str | None
    drop: ConnectionDrop | None = None


class FaultInjector:
    """Pending injected failures, consumed in the order they were added."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        # (lower-case method, chat id or None for every chat) → (until, the error every call gets)
        self._outages: dict[tuple[str, int | str | None], tuple[float, ApiError]] = {}

    def outage(self, method: str, *, error_code: int, seconds: float, retry_after: int | None,
               chat_id: int | str | None = None) -> None:
        """Every call of ``method`` (to ``chat_id``, if given) fails with ``error_code`` for the next ``seconds``
        (0 ends the outage)."""
        error = ApiError(error_code, default_description(error_code, retry_after), retry_after=retry_after)
        self._outages[method.lower(), chat_id] = (time.monotonic() + seconds, error)

    def add(self, method: str, *, error_code: int, description: str | None, retry_after: int | None,
            count: int, chat_id: int | str | None) -> None:
        """Make the next ``count`` calls of ``method`` (to ``chat_id``, if given) fail."""
        description = description or default_description(error_code, retry_after)
        self._faults.append(Fault(method.lower(), error_code, description, retry_after, count, chat_id))

    def add_drop(self, method: str, *, executed: bool, count: int, chat_id: int | str | None) -> None:
        """Make the next ``count`` calls of ``method`` (to ``chat_id``, if given) get no answer."""
        self._faults.append(Fault(method.lower(), 0, "", None, count, chat_id, ConnectionDrop(executed)))

    def take(self, method: str, chat_id: int | str | None) -> ApiError | ConnectionDrop | None:
        """The error (or dropped connection) for this call, if a rule matches (consuming one use of it)."""
        name = method.lower()
        for key in ((name, None), (name, chat_id)):
            outage = self._outages.get(key)
            if outage is not None:
                if time.monotonic() < outage[0]:
                    return outage[1]
                del self._outages[key]
        if not self._faults:
            return None
        for fault in self._faults:
            if fault.method == name and (fault.chat_id is None or fault.chat_id == chat_id):
                fault.count -= 1
                if fault.count <= 0:
                    self._faults.remove(fault)
                if fault.drop is not None:
                    return fault.drop
                return ApiError(fault.error_code, fault.description, retry_after=fault.retry_after)
        return None


@dataclass
class Core:
    """Everything the sandbox knows, in one place."""

    token: str
    state: State
    updates: UpdateQueue
    strict_html: bool = True
    files: FileStore = field(default_factory=FileStore)
    limiter: RateLimiter = field(default_factory=RateLimiter)
    faults: FaultInjector = field(default_factory=FaultInjector)
    delays: dict[str | None, float] = field(default_factory=dict)  # lower-case method (None = all) → seconds
    calls: list[CallRecord] = field(default_factory=list)
    calls_changed: Notifier = field(default_factory=Notifier)
    throttles: list[ThrottleRecord] = field(default_factory=list)
    callback_queries: dict[str, dict[str, Any]] = field(default_factory=dict)  # unanswered, by id
    callback_answers: list[dict[str, Any]] = field(default_factory=list)
    commands: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)

    @classmethod
    def create(cls, token: str, bot: User, *, strict_html: bool, on_webhook_reply: WebhookReply,
               webhook_retry_delays: tuple[float, ...]) -> Core:
        """Build a core for ``bot``."""
        updates = UpdateQueue(on_webhook_reply=on_webhook_reply, retry_delays=webhook_retry_delays)
        return cls(token=token, state=State(bot), updates=updates, strict_html=strict_html)

    def delay_for(self, method: str) -> float:
        """Artificial latency for ``method``."""
        if not self.delays:
            return 0.0
        return self.delays.get(method.lower(), self.delays.get(None, 0.0))

    def record(self, call: CallRecord) -> None:
        """Append a finished call and wake :meth:`TelegramSandbox.wait_for_call` waiters."""
        self.calls.append(call)
        self.calls_changed.notify()
