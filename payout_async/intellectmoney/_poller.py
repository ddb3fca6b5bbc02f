"""Following an IntellectMoney operation until it reaches a terminal state."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from .._polling import PollPolicy, is_transient
from ._client import IntellectMoneyClient
from ._models import PayoutOperation

__all__ = ["wait_for_terminal"]


async def wait_for_terminal(
    client: IntellectMoneyClient,
    operation_id: str,
    *,
    policy: PollPolicy | None = None,
    on_poll: Callable[[PayoutOperation], Awaitable[None]] | None = None,
) -> PayoutOperation:
    """Poll ``GetOperationState`` until the operation is Completed, Failed,
    NotEnoughMoney or Deleted, and return it.

    At ``policy.deadline`` the last state seen is returned (``is_final`` False).
    Network and provider hiccups (after the client's own retries) do not stop the
    polling; if no state at all could be read by the deadline, the last error is
    raised. Unknown states are kept and polled on. ``on_poll`` sees every answer.
    """
    policy = policy or PollPolicy()
    stop_at = policy.expires_at()
    last: PayoutOperation | None = None
    for delay in policy.delays():
        try:
            last = await client.get_operation_state(operation_id)
        except Exception as error:
            if not is_transient(error) or (last is None and time.monotonic() >= stop_at):
                raise
        else:
            if on_poll is not None:
                await on_poll(last)
            if last.is_final:
                return last
        if time.monotonic() + delay >= stop_at:
            if last is not None:
                return last
            delay = max(0.0, stop_at - time.monotonic())
        await asyncio.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover - delays() never ends
