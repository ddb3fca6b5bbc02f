"""The sandbox's settings and the fixed test credentials it accepts."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Literal

import attrs

from ._faults import DEFAULT_KINDS, FaultKind, check_route

__all__ = ["SandboxConfig", "SandboxCredentials"]


@attrs.frozen
class SandboxCredentials:
    """The secrets the sandbox accepts: test values, safe to print."""

    im_user_token: str = "sandbox-im-user-token-0123456789abcdefghijklmnopqrstuvwxyz/+ABCDEF"
    im_secret_key: str = "sandbox-im-sign-secret-key"
    im_bearer_token: str = "sandbox0im0bearer0token0000000001"
    enot_user_id: str = "a6f112da-7c3f-4323-ad99-ec3630e7c8ff"
    enot_secret_key: str = "sandbox-enot-secret-key-d6be996241deef23"
    enot_additional_key: str = "sandbox-enot-additional-key"


def _non_negative(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must not be negative")


def _positive_or_none(
    _: object, attribute: attrs.Attribute[float | None], value: float | None
) -> None:
    if value is not None and (not math.isfinite(value) or value <= 0):
        raise ValueError(f"{attribute.name} must be a finite number above 0")


def _ratio(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} must be between 0 and 1")


def _kinds(value: Iterable[FaultKind]) -> frozenset[FaultKind]:
    return frozenset(value)


def _delays(
    value: Mapping[str, float] | Iterable[tuple[str, float]],
) -> tuple[tuple[str, float], ...]:
    """``answer_delay`` as sorted ``(route, seconds)`` pairs (a frozen config stays hashable)."""
    pairs = value.items() if isinstance(value, Mapping) else value
    checked = {}
    for route, seconds in pairs:
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(
                f"answer_delay[{route!r}] must be a finite number of seconds, 0 or more"
            )
        checked[check_route(route)] = float(seconds)
    return tuple(sorted(checked.items()))


def _routes(value: Iterable[str] | None) -> frozenset[str] | None:
    if value is None:
        return None
    return frozenset(check_route(route) for route in ([value] if isinstance(value, str) else value))


@attrs.frozen(kw_only=True)
class SandboxConfig:
    """How the sandbox behaves. Delays are in seconds, money in rubles.

    IntellectMoney: after execute an operation is ``SentToBank``, ``InProcess`` from
    ``im_in_process_after`` and final (``Completed``, or ``Failed`` with probability
    ``failure_ratio``) from ``im_final_after``; an execute the balance cannot cover
    ends ``NotEnoughMoney`` at once. A UserToken lives ``user_token_lifetime`` seconds
    (forever when ``None``).

    Where the IntellectMoney documents are silent (all off by default):
    ``im_execute_lag`` > 0 makes an accepted execute answer ``OperationState.Code`` 1
    ("accepted, still processing") and the operation keep reading ``Created`` for that
    many seconds; its timeline above then starts at the end of the lag (the outcome is
    still decided at the execute). A delete in the lag is accepted (``Result`` true)
    yet the execute still completes: the operation reads ``Deleted`` until the lag ends
    and the execution's states after it. ``im_second_execute`` is what an execute of
    an operation already executed gets, in the lag or after it: ``"refuse"`` (an error,
    no money moves), ``"accept"`` (answered like the first accepted execute, no money
    moves) or ``"pay_again"`` (performed again: a ``Completed`` outcome debits the
    amount once more and the recipient is paid twice; the books count it).

    Enot: a payoff waits ``enot_final_after`` seconds, then ends ``success`` (or
    ``fail`` with probability ``failure_ratio``, refunding its withdrawal). The fee is
    ``enot_fee_percent`` % plus ``enot_fee_fixed``; amounts outside
    ``enot_min_amount``..``enot_max_amount`` are refused (403). A second payoff with
    an ``order_id`` already used is created (``"accept"``) or refused with 422
    (``"reject"``). Webhooks are tried ``webhook_attempts`` times. ``enot_info_lag``
    > 0 makes ``payoff/info`` (by id and by ``order_id``) answer 404 "not found", as
    for an unknown payoff, until that many seconds after the payoff's create (off by
    default; webhooks and the balance are not delayed).

    Faults: each call of a route in ``fault_routes`` (all when ``None``) gets, with
    probability ``fault_rate``, a kind drawn from ``fault_kinds`` (by default every kind
    but the ``MISLEADING`` ones, which only a script or an explicit set gives). ``stall_seconds``
    is how long ``COMMIT_THEN_STALL`` stays silent, ``latency`` the (low, high) range
    of ``LATENCY``, ``retry_after`` the ``Retry-After`` of ``RATE_LIMIT``. ``seed``
    makes outcomes and faults reproducible.

    Slow answers (off by default): ``answer_delay`` maps a route to seconds, e.g.
    ``{"enot.info": 20.0, "im.state": 20.0}``. A request of that route is processed
    when it arrives -- the state is read, a create or execute commits -- and its answer
    leaves that many seconds later, carrying the state as it was when read: "the
    provider answered 20 s after it read its state". (``LATENCY`` is the opposite: it
    waits first, then reads.) Routes: ``im.create`` (CreatePayoutOperation),
    ``im.execute`` (ExecutePayoutOperation), ``im.state`` (GetOperationState),
    ``im.delete`` (DeleteOperation), ``enot.create`` (payoff/create), ``enot.info``
    (payoff/info), ``enot.banks`` (the SBP bank list), ``enot.balance`` (the balance).
    ``Sandbox.delay_answers`` changes it while the sandbox runs.

    Rate limit (off by default): with ``rate_limit_per_second`` set, each provider
    accepts that many requests a second, with bursts of ``rate_limit_burst``, and
    answers the others 429 with a ``Retry-After`` saying when the next would be
    accepted (counted in ``stats().rate_limited``; see ``_traffic``).
    """

    im_in_process_after: float = attrs.field(default=0.5, validator=_non_negative)
    im_final_after: float = attrs.field(default=1.5, validator=_non_negative)
    im_balance: Decimal = attrs.field(default=Decimal("1000000.00"), converter=Decimal)
    im_eshop_id: int = 450000
    user_token_lifetime: float | None = None
    im_execute_lag: float = attrs.field(default=0.0, validator=_non_negative)
    im_second_execute: Literal["refuse", "accept", "pay_again"] = attrs.field(
        default="refuse", validator=attrs.validators.in_(("refuse", "accept", "pay_again"))
    )

    enot_final_after: float = attrs.field(default=1.0, validator=_non_negative)
    enot_balance: Decimal = attrs.field(default=Decimal("1000000.00"), converter=Decimal)
    enot_fee_percent: Decimal = attrs.field(default=Decimal("2.5"), converter=Decimal)
    enot_fee_fixed: Decimal = attrs.field(default=Decimal("0"), converter=Decimal)
    enot_min_amount: Decimal = attrs.field(default=Decimal("1"), converter=Decimal)
    enot_max_amount: Decimal = attrs.field(default=Decimal("600000"), converter=Decimal)
    duplicate_order_id: Literal["accept", "reject"] = attrs.field(
        default="accept", validator=attrs.validators.in_(("accept", "reject"))
    )
    webhook_attempts: int = attrs.field(default=3, validator=attrs.validators.ge(1))
    webhook_retry_delay: float = attrs.field(default=0.5, validator=_non_negative)
    enot_info_lag: float = attrs.field(default=0.0, validator=_non_negative)

    failure_ratio: float = attrs.field(default=0.0, validator=_ratio)
    seed: int | None = None

    fault_rate: float = attrs.field(default=0.0, validator=_ratio)
    fault_kinds: frozenset[FaultKind] = attrs.field(default=DEFAULT_KINDS, converter=_kinds)
    fault_routes: frozenset[str] | None = attrs.field(default=None, converter=_routes)
    stall_seconds: float = attrs.field(default=30.0, validator=_non_negative)
    latency: tuple[float, float] = (0.05, 0.3)
    retry_after: float = attrs.field(default=1.0, validator=_non_negative)

    answer_delay: tuple[tuple[str, float], ...] = attrs.field(default=(), converter=_delays)

    rate_limit_per_second: float | None = attrs.field(default=None, validator=_positive_or_none)
    rate_limit_burst: int = attrs.field(default=1, validator=attrs.validators.ge(1))

    def __attrs_post_init__(self) -> None:
        if self.im_in_process_after > self.im_final_after:
            raise ValueError("im_in_process_after must not exceed im_final_after")
        low, high = self.latency
        if not 0 <= low <= high:
            raise ValueError("latency must be (low, high) with 0 <= low <= high")
        if self.user_token_lifetime is not None and self.user_token_lifetime < 0:
            raise ValueError("user_token_lifetime must not be negative")
