"""Pay out from an aiohttp request handler, and answer within a few seconds.

Run it with the command line's settings in the environment (``payout-async sandbox``
prints them for the sandbox): ``python web_app.py``, then
``curl -d card=4111111111111111 -d amount=10.00 http://127.0.0.1:8000/withdrawals/1``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from decimal import Decimal, InvalidOperation

from aiohttp import web

from payout_async import (
    EnotClient,
    IdempotencyConflictError,
    Payouts,
    PayoutStatus,
    ValidationError,
)
from payout_async.enot import DEFAULT_BASE_URL, PayoffRequest
from payout_async.ledger import SQLiteLedger

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
            wait=WAIT,  # answer within WAIT seconds; the payout goes on in the background
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


async def app_from_environment() -> web.Application:
    """The app with an Enot client and a SQLite ledger (``payouts.db``), set up from
    the command line's variables: ``PAYOUT_ASYNC_ENOT_USER_ID``,
    ``PAYOUT_ASYNC_ENOT_SECRET_KEY``, ``PAYOUT_ASYNC_ENOT_BASE_URL`` (the sandbox's;
    unset for Enot itself) and ``PAYOUT_ASYNC_LEDGER_KEY``."""
    client = EnotClient(
        os.environ["PAYOUT_ASYNC_ENOT_USER_ID"],
        os.environ["PAYOUT_ASYNC_ENOT_SECRET_KEY"],
        base_url=os.environ.get("PAYOUT_ASYNC_ENOT_BASE_URL", DEFAULT_BASE_URL),
    )
    ledger = SQLiteLedger("payouts.db", encryption_key=os.environ["PAYOUT_ASYNC_LEDGER_KEY"])
    await ledger.open()
    app = make_app(Payouts(client, ledger))

    async def close_client_and_ledger(app: web.Application) -> None:
        await client.aclose()  # Payouts never closes what it is given
        await ledger.aclose()

    app.on_cleanup.append(close_client_and_ledger)
    return app


if __name__ == "__main__":
    web.run_app(app_from_environment(), host="127.0.0.1", port=8000)
