"""Following an Enot payoff to ``success``/``fail``, and finding a payoff whose
create answer was lost."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from functools import partial
from operator import attrgetter

from .._errors import NotFoundError, ValidationError
from .._polling import PollPolicy, is_inconclusive, poll_until_final
from ._client import EnotClient
from ._models import Payoff

__all__ = ["reconcile_payoff", "wait_for_final"]

_is_final: Callable[[Payoff], bool] = attrgetter("is_final")


def _inconclusive_or_not_found(error: BaseException) -> bool:
    """Poll on: a failed read that says nothing (``is_inconclusive``), or a payoff not
    found yet (shortly after its create)."""
    return is_inconclusive(error) or isinstance(error, NotFoundError)


async def wait_for_final(
    client: EnotClient,
    *,
    payoff_id: str | None = None,
    order_id: str | None = None,
    policy: PollPolicy | None = None,
    on_poll: Callable[[Payoff], Awaitable[None]] | None = None,
    started: float | None = None,
) -> Payoff:
    """Poll ``payoff/info`` until the payoff is ``success`` or ``fail``, and return it.

    Polls on ``policy``'s schedule (``PollPolicy``: by default a payoff is seen final
    within 20% of the time it took), counted from ``started`` (a ``time.monotonic()``
    value, e.g. when the create was sent; default: now).
    At ``policy.deadline`` the last payoff seen is returned (``is_final`` False).
    Network and provider hiccups, an error answer to the read itself (a 4xx a proxy or
    Enot's edge may send; ``is_inconclusive``) and a "not found" shortly after
    creation do not stop the polling; if nothing could be read by the deadline the
    last error is raised. ``on_poll`` sees every answer.
    """
    if (payoff_id is None) == (order_id is None):
        raise ValidationError("payoff_id", "give exactly one of payoff_id or order_id")
    return await poll_until_final(
        partial(client.get_payoff, payoff_id=payoff_id, order_id=order_id),
        _is_final,
        policy=policy or PollPolicy(),
        on_poll=on_poll,
        keep_going=_inconclusive_or_not_found,
        started=started,
    )


async def reconcile_payoff(
    client: EnotClient,
    order_id: str,
    *,
    grace: float = 60.0,
    since: float | None = None,
    policy: PollPolicy | None = None,
) -> Payoff | None:
    """Find out whether a payoff whose create answer was lost exists.

    Looks the payoff up by ``order_id`` at once, then on ``policy``'s schedule
    (default: after about 0.5 s, then 1.6 times as long after the first look each
    time, at most 5 s apart). Returns it as soon as Enot has
    it; returns ``None`` only once a lookup *sent* ``grace`` seconds or more after
    ``since`` has answered "not found" -- evidence is dated by its request, not by
    when its answer arrived. ``since`` is a ``time.monotonic()`` value of this process
    (e.g. when the create answer was lost), by default when the first lookup that
    found nothing was sent -- never another host's clock. Only then may the payoff be
    created again, with the same order_id.
    Errors that prove nothing (network, 5xx, 429, any error answer but "not found":
    ``is_inconclusive``) never count as "not found"; if they persist past
    ``policy.deadline`` the last one is raised.
    """
    policy = policy or PollPolicy(
        initial=0.5, multiplier=1.6, maximum=5.0, deadline=max(3 * grace, 30.0)
    )
    stop_at = policy.expires_at()
    for delay in policy.delays():
        # "Not found" is only as new as the moment its query was sent: the answer may
        # have been read from Enot's books long before it arrived (a slow answer).
        asked = time.monotonic()
        try:
            return await client.get_payoff(order_id=order_id)
        except NotFoundError:
            if since is None:
                since = asked
            if asked - since >= grace:
                return None
            delay = min(delay, max(0.0, since + grace - time.monotonic()) + 0.01)
        except Exception as error:
            if not is_inconclusive(error) or time.monotonic() >= stop_at:
                raise
        await asyncio.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover - delays() never ends
