"""The simulated network: a stand-in for ``aiohttp.ClientSession`` that reaches the
simulated providers without a socket.

``Transport.send`` awaits the lease fence (``current_guard()``), then awaits
``session.request(method, url, **kw)``, reads ``.status``, ``.headers`` and
``await .read()``, and gives the answer back (``release()``, ``await
.wait_for_close()``). ``SimSession`` implements just that. Every request draws its fate
from the run's network generator (``Faults``):

* ``ok``: it arrives after an uplink latency (now and then most of the total
  timeout), the provider handles it then, and the answer comes back after a downlink
  latency (two requests in flight may overtake each other either way);
* ``connect_fail``: nothing is sent (``aiohttp.ConnectionTimeoutError``: *not sent*);
* ``lost_request``: it never arrives; the client times out (*outcome unknown*);
* ``lost_answer``: handled, the answer lost: a disconnect or the total timeout;
* ``slow``: handled on arrival, its answer arrives late, inside the total timeout (the
  evidence it carries is as old as its arrival, not as its delivery);
* ``throttled``: a 429 with ``Retry-After``, nothing done;
* ``refused``: a refusal before processing (Enot 422, IntellectMoney code 2);
* ``refused_processed``: handled (a payoff created, an execute performed), and yet
  the answer is a refusal (Enot 408 or 422 from an edge): issue 27;
* ``foreign``: a read answered about another payoff or operation of the books (a
  cache keyed on the path alone, a lax provider), or a create answered as another's
  was (a gateway replaying ``POST`` answers: nothing created), when there is another.

Before a money-moving request leaves, the sending process may be frozen (the admitted
assumption: the pause between a confirmed fence and the first byte). The time from the
fence to the departure of each money-moving request is recorded (``Departure``).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import random
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlencode

import aiohttp
import attrs
from multidict import CIMultiDict, CIMultiDictProxy

from payout_async import _fence, _transport

from .loop import PROCESS, neutral_context
from .providers import Answer, SimEnot, SimIntellectMoney

__all__ = ["FENCE_STARTED", "Departure", "Faults", "Network", "SimSession", "install_fence_clock"]

Provider = SimEnot | SimIntellectMoney

#: When the current task's fence began (virtual time), for money-moving requests.
FENCE_STARTED: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "sim_fence_started", default=None
)

_MONEY = ("/payoff/create", "/executeOperation")
FATES = (
    "ok",
    "connect_fail",
    "lost_request",
    "lost_answer",
    "slow",
    "throttled",
    "refused",
    "refused_processed",
    "foreign",
)


@attrs.frozen
class Faults:
    """How often each fate befalls a request (``money``: a money-moving one, which
    also risks a pause of its sender between its fence and its departure)."""

    connect_fail: float = 0.03
    lost_request: float = 0.03
    lost_answer: float = 0.06
    slow: float = 0.12
    throttled: float = 0.04
    refused: float = 0.0  # money-moving requests only
    refused_processed: float = 0.0  # money-moving requests only
    foreign: float = 0.0
    #: Chance that the sender freezes between its fence and the request leaving.
    post_fence_pause: float = 0.0
    #: Chance that a request takes most of its total timeout to arrive.
    slow_uplink: float = 0.0
    #: The ``Retry-After`` seconds a 429 may carry.
    retry_after: tuple[int, ...] = (1, 2, 5, 10, 20, 30, 60)
    money: Faults | None = None

    def for_request(self, money: bool) -> Faults:
        return self.money if money and self.money is not None else self

    def draw(self, rng: random.Random, money: bool) -> str:
        roll = rng.random()
        for fate in FATES[1:]:
            chance = getattr(self, fate)
            if fate.startswith("refused") and not money:
                continue
            if roll < chance:
                return fate
            roll -= chance
        return "ok"


#: The faults of a money-moving request by default: more of them.
MONEY_FAULTS = Faults(
    lost_answer=0.15, slow=0.06, throttled=0.12, post_fence_pause=0.06, slow_uplink=0.1
)
NO_FAULTS = Faults(connect_fail=0, lost_request=0, lost_answer=0, slow=0, throttled=0)


@attrs.frozen
class Departure:
    """A money-moving request that left: who sent it, when, and how long after its
    fence began."""

    process: str
    route: str
    subject: str
    at: float
    after_fence: float | None


class _Response:
    def __init__(self, answer: Answer) -> None:
        self.status = answer.status
        self.headers = CIMultiDictProxy(CIMultiDict(answer.headers))
        self._body = answer.body

    async def read(self) -> bytes:
        return self._body

    def release(self) -> None:
        return None

    async def wait_for_close(self) -> None:
        return None


class SimSession:
    """What ``Transport.send`` uses of an ``aiohttp.ClientSession``."""

    closed = False

    def __init__(self, network: Network) -> None:
        self._network = network

    async def request(self, method: str, url: str, **kwargs: Any) -> _Response:
        return await self._network.exchange(method, url, kwargs)

    async def close(self) -> None:
        return None


class Network:
    """Routes requests to one provider, drawing each one's fate."""

    def __init__(
        self,
        provider: Provider,
        rng: random.Random,
        faults: Faults,
        log: Callable[[str], None],
        *,
        pause: Callable[[str], None],
        margin: float,
        after_handle: Callable[[], None],
        on_money_fault: Callable[[str], None],
    ) -> None:
        self.provider = provider
        self.faults = faults
        self._rng = rng
        self._log = log
        self._pause = pause  # freezes the running process
        self._on_money_fault = on_money_fault  # may make it worse (a clock step), "ok" too
        self.margin = margin
        self._after_handle = after_handle  # the books changed: check them
        self.departures: list[Departure] = []
        self.requests = 0

    async def exchange(self, method: str, url: str, kwargs: Mapping[str, Any]) -> _Response:
        loop = asyncio.get_running_loop()
        if kwargs.get("params"):
            url = f"{url}?{urlencode(kwargs['params'])}"
        route = url.split("?", 1)[0]
        money = route.endswith(_MONEY)
        process = PROCESS.get()
        name = getattr(process, "name", "?")
        subject = _subject(url, kwargs.get("data"))
        faults = self.faults.for_request(money)
        if money and self._rng.random() < faults.post_fence_pause:
            self._pause("between its fence and the request")
            await asyncio.sleep(0)  # the process is frozen: this resumes when it thaws
        now = loop.time()
        self.requests += 1
        if money:
            fenced = FENCE_STARTED.get()
            after = None if fenced is None else now - fenced
            self.departures.append(Departure(name, route, subject, now, after))
        fate = faults.draw(self._rng, money)
        if money:
            self._on_money_fault(fate)
        timeout = kwargs.get("timeout")
        total = timeout.total if timeout is not None and timeout.total else 30.0
        self._log(f"{name} {method} {route.rsplit('/', 1)[-1]} {subject} fate={fate}")
        if fate == "connect_fail":
            await asyncio.sleep(self._rng.uniform(0.001, min(2.0, total / 2)))
            raise aiohttp.ConnectionTimeoutError("simulated: connect timed out")
        answered: asyncio.Future[Answer] = loop.create_future()
        deadline = now + total
        uplink = self._rng.uniform(0.001, 0.2 * total)
        if self._rng.random() < faults.slow_uplink:  # still on its way long after it left
            uplink = self._rng.uniform(0.2, 0.9) * total
        downlink = self._rng.uniform(0.001, 0.2 * total)
        if fate == "slow":
            downlink = self._rng.uniform(0.5, 0.95) * total - uplink
        context = neutral_context()
        body = kwargs.get("data")
        if fate != "lost_request":
            lost = None
            if fate == "lost_answer":
                lost = "timeout" if self._rng.random() < 0.5 else "disconnect"
            arrive = (method, url, body, fate, answered, downlink, deadline, lost)
            loop.call_at(now + uplink, self._arrive, *arrive, context=context)
        loop.call_at(deadline, _give_up, answered, context=context)
        return _Response(await answered)

    def _arrive(
        self,
        method: str,
        url: str,
        body: bytes | None,
        fate: str,
        answered: asyncio.Future[Answer],
        downlink: float,
        deadline: float,
        lost: str | None,
    ) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        provider = self.provider
        if fate == "throttled":
            answer = provider.throttled(self._rng.choice(self.faults.for_request(True).retry_after))
        elif fate == "refused":
            answer = provider.refusal(422)
        elif fate == "foreign":
            answer = provider.foreign(method, url, body, now, self._rng)
        else:
            answer = provider.handle(method, url, body, now)
            self._after_handle()
            if fate == "refused_processed":
                answer = provider.refusal(self._rng.choice((408, 422)))
        if lost == "timeout":
            return
        at = now + downlink
        if at >= deadline:
            return  # the client times out first
        if lost == "disconnect":
            loop.call_at(at, _fail, answered, context=neutral_context())
            return
        loop.call_at(at, _deliver, answered, answer, context=neutral_context())


def _deliver(answered: asyncio.Future[Answer], answer: Answer) -> None:
    if not answered.done():
        answered.set_result(answer)


def _fail(answered: asyncio.Future[Answer]) -> None:
    if not answered.done():
        answered.set_exception(aiohttp.ServerDisconnectedError("simulated: answer lost"))


def _give_up(answered: asyncio.Future[Answer]) -> None:
    if not answered.done():
        answered.set_exception(TimeoutError())


def _subject(url: str, data: Any) -> str:
    """What a request is about, for the log: an order_id, an operation or a key."""
    text = url.split("?", 1)[1] if "?" in url else ""
    if isinstance(data, bytes):
        fields = json.loads(data)
        for name in ("order_id", "PayoutOperationId", "Pan"):
            if name in fields:
                return f"{name}={fields[name]}"
    return text


def install_fence_clock(patches: Any, clock: Callable[[], float]) -> None:
    """Record when each money-moving request's fence began (``FENCE_STARTED``)."""
    original = _fence.current_guard

    def current_guard() -> _fence.Guard | None:
        guard = original()
        if guard is None:
            return None

        async def timed(total_timeout: float | None) -> None:
            FENCE_STARTED.set(clock())
            await guard(total_timeout)

        return timed

    patches.set(_transport, "current_guard", current_guard)
