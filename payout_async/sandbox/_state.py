"""Everything one running sandbox knows: settings, books, tokens, faults, webhook log."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from decimal import Decimal

import attrs

from ._config import SandboxConfig, SandboxCredentials
from ._enot_book import EnotBook
from ._faults import Faults
from ._im_book import IntellectMoneyBook
from ._im_inner import InnerAnswers
from ._scripted_errors import ErrorScript
from ._tokens import UserTokens
from ._traffic import Traffic

__all__ = ["SandboxState", "WebhookDelivery"]


@attrs.frozen
class WebhookDelivery:
    """One attempt to deliver a payoff webhook: the HTTP status it got, or why not."""

    payoff_id: str
    url: str
    attempt: int
    status: int | None = None
    error: str | None = None

    @property
    def delivered(self) -> bool:
        """True when the receiver answered 2xx."""
        return self.status is not None and 200 <= self.status < 300


class SandboxState:
    """The sandbox's whole state; ``build_app`` serves it, ``reset`` empties it.

    ``clock`` is a monotonic clock in seconds (``time.monotonic`` by default): every
    delay is measured on it, so a test may pass a manual one.
    """

    def __init__(
        self,
        config: SandboxConfig | None = None,
        *,
        credentials: SandboxCredentials | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config or SandboxConfig()
        self.credentials = credentials or SandboxCredentials()
        self.clock = clock
        #: Set when the sandbox shuts down: stalled answers give up at once.
        self.closing = asyncio.Event()
        self._on_enot_change: Callable[[], None] | None = None
        self._build()

    def _build(self) -> None:
        config = self.config
        self.intellectmoney = IntellectMoneyBook(config, self.clock)
        self.enot = EnotBook(config, self.clock, self._on_enot_change)
        self.tokens = UserTokens(
            self.credentials.im_user_token, lifetime=config.user_token_lifetime, clock=self.clock
        )
        self.faults = Faults(
            rate=config.fault_rate,
            kinds=config.fault_kinds,
            routes=config.fault_routes,
            seed=config.seed,
        )
        self.webhooks: list[WebhookDelivery] = []
        self.im_inner = InnerAnswers()
        self.errors = ErrorScript()
        self.traffic = Traffic(config, self.clock)
        #: Seconds each route's answer is held after its request was processed.
        self.answer_delays: dict[str, float] = dict(config.answer_delay)

    def watch_enot(self, callback: Callable[[], None] | None) -> None:
        """Call ``callback`` whenever Enot payoffs are created or webhooks fall due."""
        self._on_enot_change = callback
        self.enot.on_change = callback

    def reset(self) -> None:
        """Empty the books, restore the balances, forget tokens, faults (scripted inner
        codes and error answers too), webhooks and the requests' arrival times."""
        self._build()
        if self._on_enot_change is not None:
            self._on_enot_change()

    def top_up(self, provider: str, amount: Decimal) -> Decimal:
        """Add ``amount`` to ``provider``'s balance (Enot: its active balance); returns
        the balance it now has to pay from."""
        if not amount.is_finite() or amount <= 0:
            raise ValueError("a top-up must be a finite amount above 0")
        if provider == "intellectmoney":
            self.intellectmoney.balance += amount
            return self.intellectmoney.balance
        if provider == "enot":
            self.enot.active += amount
            return self.enot.active
        raise ValueError(f"unknown provider {provider!r}: intellectmoney or enot")
