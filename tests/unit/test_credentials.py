"""Credentials with a line break or a space at an end -- read with it from a file
(``open(...).read()``) or a variable (a Kubernetes secret made ``--from-file``) -- are
refused when the client is made, naming the setting and never showing its value.

Before, an Enot ``secret_key`` ending in a newline failed every request inside aiohttp
("Forbidden control character detected in headers") after the intent was recorded: the
create counted as an unknown outcome, the payout waited out Enot's grace and parked
``needs_attention`` with nothing sent. An IntellectMoney key signed wrongly instead."""

from __future__ import annotations

from typing import Any

import pytest

from payout_async import ConfigurationError, EnotClient, IntellectMoneyClient
from payout_async.sandbox import Sandbox

SECRET = "s3cr3t-VALUE"
BAD = {
    "a trailing line break": SECRET + "\n",
    "a Windows line break": SECRET + "\r\n",
    "a leading space": " " + SECRET,
    "a tab inside": "s3cr3t\tVALUE",
    "nothing": "",
}


def _enot(**credentials: str) -> EnotClient:
    return EnotClient(**{"user_id": "42", "secret_key": SECRET, **credentials})


def _intellectmoney(**credentials: Any) -> IntellectMoneyClient:
    settings = {"user_token": "token-1", "secret_key": SECRET, "bearer_token": "bearer-1"}
    return IntellectMoneyClient(**{**settings, **credentials})


@pytest.mark.parametrize("value", list(BAD.values()), ids=list(BAD))
@pytest.mark.parametrize(
    ("make", "field"),
    [
        (_enot, "user_id"),
        (_enot, "secret_key"),
        (_intellectmoney, "secret_key"),
        (_intellectmoney, "bearer_token"),
        (_intellectmoney, "user_token"),
    ],
)
def test_a_credential_with_a_line_break_or_space_is_refused_by_name(
    make: Any, field: str, value: str
) -> None:
    with pytest.raises(ConfigurationError, match=field) as raised:
        make(**{field: value})
    if value.strip():
        assert value.strip() not in str(raised.value)  # a secret is never shown


async def test_a_token_the_callable_returns_with_a_line_break_is_refused_unsent() -> None:
    async with Sandbox() as sandbox:
        credentials = sandbox.credentials

        async def token() -> str:
            return credentials.im_user_token + "\n"

        async with sandbox.intellectmoney_client(user_token=token) as client:
            with pytest.raises(ConfigurationError, match="user_token callable returned"):
                await client.get_operation_state("1")
        assert sandbox.request_times() == []  # nothing was sent


def test_good_credentials_are_kept_as_given() -> None:
    assert _enot(user_id="42").user_id == "42"
    _intellectmoney(api="legacy", bearer_token=None)  # the legacy API needs no bearer
