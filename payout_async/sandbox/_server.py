"""``Sandbox``: the emulator running on 127.0.0.1, with clients pointed at it."""

from __future__ import annotations

import math
import socket
import time
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from types import TracebackType
from typing import Any, Literal

from aiohttp import web

from ..enot import EnotClient
from ..intellectmoney import Api, IntellectMoneyClient
from ._app import build_app
from ._config import SandboxConfig, SandboxCredentials
from ._enot_book import FAIL, SUCCESS, PayoffDetails, PayoffRefused
from ._faults import Faults, check_route
from ._im_routes import IM_PREFIX
from ._state import SandboxState, WebhookDelivery
from ._stats import Duplicate, SandboxStats, collect_stats, find_duplicates, paid_per_payout

__all__ = ["Sandbox"]

HOST = "127.0.0.1"


class Sandbox:
    """Both providers, emulated on ``127.0.0.1:port`` (a free port when 0).

    Use as ``async with Sandbox() as sandbox:``; pass ``sandbox.intellectmoney_url``
    and ``sandbox.enot_url`` with ``sandbox.credentials`` to the clients, or let
    ``intellectmoney_client()`` / ``enot_client()`` build them. ``faults`` scripts
    misbehaviour; ``delay_answers`` holds a route's answers after reading the state;
    ``foreign_payoff`` books a payoff of another system on the same Enot account;
    ``stats()``, ``duplicates()`` and ``paid_per_payout()`` say what the books hold.
    """

    def __init__(
        self,
        *,
        config: SandboxConfig | None = None,
        port: int = 0,
        credentials: SandboxCredentials | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.state = SandboxState(config, credentials=credentials, clock=clock)
        self._requested_port = port
        self._port: int | None = None
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> Sandbox:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Bind the port and start serving."""
        if self._runner is not None:
            raise RuntimeError("the sandbox is already running")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, self._requested_port))
        except OSError:
            sock.close()
            raise
        self.state.closing.clear()
        runner = web.AppRunner(
            build_app(self.state), access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await runner.setup()
        await web.SockSite(runner, sock).start()
        self._runner = runner
        self._port = sock.getsockname()[1]

    async def close(self) -> None:
        """Stop serving; stalled answers are released at once."""
        runner, self._runner = self._runner, None
        if runner is not None:
            self.state.closing.set()
            await runner.cleanup()

    @property
    def port(self) -> int:
        """The port the sandbox listens on."""
        if self._port is None:
            raise RuntimeError("the sandbox is not running: use 'async with Sandbox()'")
        return self._port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{HOST}:{self.port}"

    @property
    def intellectmoney_url(self) -> str:
        """Base URL for ``IntellectMoneyClient`` (``.../personal/payout/``)."""
        return self.url + IM_PREFIX

    @property
    def enot_url(self) -> str:
        """Base URL for ``EnotClient``."""
        return self.url

    @property
    def credentials(self) -> SandboxCredentials:
        """The secrets the sandbox accepts."""
        return self.state.credentials

    @property
    def config(self) -> SandboxConfig:
        """The sandbox's settings."""
        return self.state.config

    @property
    def faults(self) -> Faults:
        """The fault plan: ``faults.script(route, kind=..., nth=...)``, call counts."""
        return self.state.faults

    def script_inner_code(self, route: str, code: int, desc: str | None = None) -> None:
        """Make the next answer of the IntellectMoney ``route`` (``"im.create"``,
        ``"im.execute"``, ``"im.state"``, ``"im.delete"``) say ``OperationState.Code``
        0 with ``Result.State`` ``{"Code": code, "Desc": desc}``. Code 1 (WithWarn;
        ``desc`` is the warning) carries the request out; any other code (2 NoAuth,
        ``desc`` "Неверная подпись" by default) refuses it. Calls queue up in order;
        ``reset()`` forgets them."""
        self.state.im_inner.script(route, code, desc)

    def script_error(self, route: str, status: int, message: str, *, times: int = 1) -> None:
        """Answer the next ``times`` calls of ``route`` with the provider's error at HTTP
        ``status`` carrying ``message`` (502, 503 and 504: a gateway's HTML page with
        ``message`` in it, as it is); nothing happens for them. Scripts queue up in
        order; ``clear_scripted_errors()`` and ``reset()`` forget them."""
        self.state.errors.script(route, status, message, times=times)

    def clear_scripted_errors(self) -> None:
        """Forget the scripted error answers not given yet."""
        self.state.errors.clear()

    def delay_answers(self, route: str, seconds: float) -> None:
        """Hold each answer of ``route`` (``"enot.info"``, ``"im.state"``... see
        ``SandboxConfig.answer_delay``) ``seconds`` after its request was processed,
        from the next request on (0: at once again). ``reset()`` restores the config's."""
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError("seconds must be a finite number, 0 or more")
        self.state.answer_delays[check_route(route)] = float(seconds)

    def foreign_payoff(
        self,
        *,
        order_id: str,
        amount: Decimal | str,
        service: str = "card",
        wallet_to: str | None = None,
        status: Literal["success", "fail"] = "success",
        hook_url: str | None = None,
        final_after: float = 0.0,
        comment: str | None = None,
    ) -> str:
        """Book a payoff that *another system* on the same Enot account created under
        ``order_id`` (not our library): ``payoff/info`` shows it by id and by
        ``order_id`` as Enot would, it draws on the balance, and it ends ``status``
        after ``final_after`` seconds, when its webhook -- signed with the additional
        key, as the sandbox signs every webhook -- is POSTed to ``hook_url`` (loopback
        only). It is kept apart from ours: ``stats()``, ``duplicates()`` and
        ``paid_per_payout()`` count only our payouts (``state.enot.foreign()`` lists
        theirs). Its order_id counts as used: a create of ours with it is accepted or
        refused by ``duplicate_order_id``. Returns its payoff id.
        Raises ``ValueError`` when the tariff or the balance refuses it."""
        if status not in (SUCCESS, FAIL):
            raise ValueError("status must be 'success' or 'fail'")
        if not (math.isfinite(final_after) and final_after >= 0):
            raise ValueError("final_after must be a finite number of seconds, 0 or more")
        details = PayoffDetails(
            service=service,
            wallet=wallet_to,
            amount=Decimal(amount),
            order_id=order_id,
            comment=comment,
            hook_url=hook_url,
        )
        try:
            payoff = self.state.enot.create(
                details, foreign=True, outcome=status, final_after=final_after
            )
        except PayoffRefused as refused:
            raise ValueError(f"Enot would refuse it: {refused.message}") from None
        return payoff.id

    def issue_user_token(self) -> str:
        """A fresh IntellectMoney UserToken, valid for ``config.user_token_lifetime``."""
        return self.state.tokens.issue()

    def intellectmoney_client(self, api: Api = "current", **kwargs: Any) -> IntellectMoneyClient:
        """An ``IntellectMoneyClient`` for this sandbox; ``kwargs`` override its
        arguments (``user_token``, ``body_format``, ``retry``, ``timeouts``...)."""
        credentials = self.credentials
        kwargs.setdefault("user_token", credentials.im_user_token)
        kwargs.setdefault("secret_key", credentials.im_secret_key)
        if api == "current":
            kwargs.setdefault("bearer_token", credentials.im_bearer_token)
        kwargs.setdefault("base_url", self.intellectmoney_url)
        return IntellectMoneyClient(api=api, **kwargs)

    def enot_client(self, **kwargs: Any) -> EnotClient:
        """An ``EnotClient`` for this sandbox; ``kwargs`` override its arguments."""
        credentials = self.credentials
        kwargs.setdefault("user_id", credentials.enot_user_id)
        kwargs.setdefault("secret_key", credentials.enot_secret_key)
        kwargs.setdefault("base_url", self.enot_url)
        return EnotClient(**kwargs)

    def stats(self) -> SandboxStats:
        """Counts of what the books hold now."""
        return collect_stats(self.state)

    def duplicates(self) -> list[Duplicate]:
        """Payouts that look paid more than once (see ``Duplicate``)."""
        return find_duplicates(self.state)

    def paid_per_payout(self) -> Counter[tuple[str, str]]:
        """How many times each payout was paid, across both providers: a ``Counter``
        keyed by ``("intellectmoney", Description)`` and ``("enot", order_id)`` (the
        operation / payoff id when those are absent). A payment counts once the
        provider has committed it (outcome ``Completed`` / ``success``), before the
        state reads final; unpaid payouts are absent. "Nobody paid twice" is
        ``max(sandbox.paid_per_payout().values(), default=0) <= 1``."""
        return paid_per_payout(self.state)

    @property
    def webhooks(self) -> list[WebhookDelivery]:
        """Every webhook delivery attempt so far."""
        return list(self.state.webhooks)

    def request_times(self, route: str | None = None) -> list[float]:
        """When each request of ``route`` (``"enot.create"``...; every route when
        ``None``) arrived, on the sandbox's clock, oldest first: measure the rate seen
        with ``payout_async.sandbox.peak_rate``. Requests refused 429 by
        ``rate_limit_per_second`` are included."""
        return self.state.traffic.times(route)

    def top_up(self, provider: str, amount: Decimal | str) -> Decimal:
        """Add ``amount`` to ``"intellectmoney"``'s or ``"enot"``'s balance (Enot:
        the active one); returns the balance now available."""
        return self.state.top_up(provider, Decimal(amount))

    def reset(self) -> None:
        """Empty the books and forget tokens, faults, webhooks and arrival times."""
        self.state.reset()
