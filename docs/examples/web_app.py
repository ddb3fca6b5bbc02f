"""Pay out from an aiohttp request handler, and answer within a few seconds.

``pay(..., wait=5)`` returns within five seconds with the payout's status so far --
``processing`` is a normal answer (HTTP 202) -- while the same ``Payouts`` goes on
driving the payout in the background. Asking again with the same key (or ``get()``, or
the Enot webhook) gives the outcome. On shutdown ``aclose()`` hands unfinished payouts
back to the ledger, where ``payout-async resume`` (or a worker) finishes them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal, InvalidOperation

from aiohttp import web

from payout_async import IdempotencyConflictError, Payouts, PayoutStatus, ValidationError
from payout_async.enot import PayoffRequest

PAYOUTS = web.AppKey("payouts", Payouts)
#: How long a request may wait for its payout: well under a proxy's 60 s.
WAIT = 5.0
_DONE = {PayoutStatus.SUCCEEDED, PayoutStatus.FAILED, PayoutStatus.REJECTED}


async def withdraw(request: web.Request) -> web.Response:
    """POST /withdrawals/{id} with form fields ``card`` and ``amount``."""
    form = await request.post()
    try:
        amount = Decimal(str(form.get("amount", "")))
    except InvalidOperation:
        return web.json_response({"error": "amount: must be a decimal number"}, status=422)
    try:
        result = await request.app[PAYOUTS].pay(
            f"withdrawal-{request.match_info['id']}",  # your idempotency key
            PayoffRequest(service="card", wallet_to=str(form.get("card", "")), amount=amount),
            wait=WAIT,
        )
    except ValidationError as error:  # bad input: nothing was recorded or sent
        return web.json_response({"error": str(error)}, status=422)
    except IdempotencyConflictError as error:  # this id was used with other details
        return web.json_response({"error": str(error)}, status=409)
    body = {"payout": result.key, "status": result.status.value, "reason": result.reason}
    return web.json_response(body, status=200 if result.status in _DONE else 202)


def make_app(payouts: Payouts[PayoffRequest]) -> web.Application:
    """The app, paying through ``payouts`` (closed with the app)."""

    async def payouts_context(app: web.Application) -> AsyncIterator[None]:
        app[PAYOUTS] = payouts
        yield
        await payouts.aclose(drain=WAIT)  # then hand the rest back to the ledger

    app = web.Application()
    app.cleanup_ctx.append(payouts_context)
    app.router.add_post("/withdrawals/{id}", withdraw)
    return app
