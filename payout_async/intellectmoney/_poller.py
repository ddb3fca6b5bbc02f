"""Following an IntellectMoney operation until it reaches a final state."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from operator import attrgetter

from .._polling import PollPolicy, poll_until_final
from ._client import IntellectMoneyClient
from ._models import PayoutOperation

__all__ = ["wait_for_final"]

_is_final: Callable[[PayoutOperation], bool] = attrgetter("is_final")


async def wait_for_final(
    client: IntellectMoneyClient,
    operation_id: str,
    *,
    policy: PollPolicy | None = None,
    on_poll: Callable[[PayoutOperation], Awaitable[None]] | None = None,
    started: float | None = None,
) -> PayoutOperation:
    """Poll ``GetOperationState`` until the operation is Completed, Failed,
    NotEnoughMoney or Deleted, and return it.

    Polls on ``policy``'s schedule (``PollPolicy``: by default an operation is seen
    final within 20% of the time it took), counted from ``started`` (a
    ``time.monotonic()`` value, e.g. when the execute was sent; default: now).

    At ``policy.deadline`` the last state seen is returned (``is_final`` False).
    Network and provider hiccups (after the client's own retries) and error answers
    to the read itself (a 4xx or a provider code saying no: ``is_inconclusive``) do
    not stop the polling; if no state at all could be read by the deadline, the last
    error is raised. Unknown states are kept and polled on. ``on_poll`` sees every
    answer.
    """
    return await poll_until_final(
        partial(client.get_operation_state, operation_id),
        _is_final,
        policy=policy or PollPolicy(),
        on_poll=on_poll,
        started=started,
    )
