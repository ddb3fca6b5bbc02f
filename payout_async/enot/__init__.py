"""Enot payoffs: the client, its models and requests, and webhook verification."""

from ._client import DEFAULT_BASE_URL, EnotClient
from ._models import Balance, CreatedPayoff, Payoff, PayoffStatus, PayoffWebhook, SbpBank
from ._poller import reconcile_payoff, wait_for_final
from ._request import PayoffRequest
from ._webhook import SIGNATURE_HEADER, parse_webhook, sign_webhook, verify_webhook
from ._webhook_handler import webhook_handler

__all__ = [
    "DEFAULT_BASE_URL",
    "SIGNATURE_HEADER",
    "Balance",
    "CreatedPayoff",
    "EnotClient",
    "Payoff",
    "PayoffRequest",
    "PayoffStatus",
    "PayoffWebhook",
    "SbpBank",
    "parse_webhook",
    "reconcile_payoff",
    "sign_webhook",
    "verify_webhook",
    "wait_for_final",
    "webhook_handler",
]
