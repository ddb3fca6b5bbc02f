"""Issue 24: no error about a ledger URL shows the database password, however the URL
is malformed; a malformed URL is a ``ConfigurationError`` (one ``error:`` line in the
CLI, exit 2), never another exception."""

from __future__ import annotations

import pytest

from payout_async import ConfigurationError
from payout_async.ledger import ledger_from_url
from payout_async.ledger._url import parse_ledger_url, redacted

from ..cli.support import cli_many

PASSWORD = "Hunter2-pw"
#: Malformed ledger URLs, each holding the password somewhere.
BAD_URLS = [
    f"postgresql://u:{PASSWORD}@db.example/payouts ",  # a trailing space
    f" postgresql://u:{PASSWORD}@db.example/payouts",  # a leading space
    f"postgresql:u:{PASSWORD}@db.example/payouts",  # no //
    f"postgresql:/u:{PASSWORD}@db.example/payouts",  # one /
    f"postgresql://u:{PASSWORD}@db.example/payouts\n",  # a line break
    f"postgresql://u:{PASSWORD}@[::1:5432/payouts",  # an unclosed IPv6 bracket
    f"postgresql://u:{PASSWORD}@::1]:5432/payouts",  # an unopened one
    f"postgresql://u:{PASSWORD}@db.example:99999/payouts",  # port out of range
    f"postgresql://u:{PASSWORD}@db.example:port/payouts",  # port not a number
    f"postgresql://u:{PASSWORD}@db.example/payouts?max_connections=many",
    f"postgresql://u:{PASSWORD}@db.example/payouts?command_timeout=-1",
    f"postgresql://u:{PASSWORD}@db.example/payouts?key_env=1-not-a-name",
    f"postgresql://u@db.example/payouts?password={PASSWORD}&command_timeout=x ",
    f"sqlite://u:{PASSWORD}@host/payouts.db",
    f"memory://u:{PASSWORD}@x",
    f"mysql://u:{PASSWORD}@db.example/payouts",
    f"postgresql://u:{PASSWORD[:4]}/{PASSWORD[4:]}@db.example:x/payouts",  # a / in it
]


@pytest.mark.parametrize("url", BAD_URLS)
def test_no_error_shows_the_password(url: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_ledger_url(url)
    with pytest.raises(ConfigurationError):
        ledger_from_url(url)
    message = str(caught.value)
    for piece in (PASSWORD, PASSWORD[:4], PASSWORD[4:]):
        assert piece not in message, message


def test_redacted_keeps_what_helps() -> None:
    shown = redacted(f"postgresql://u:{PASSWORD}@db.example:5432/payouts?password=x&schema=s")
    assert shown == "postgresql://u:***@db.example:5432/payouts?password=***&schema=s"
    assert redacted("postgresql://u@db.example/p") == "postgresql://u@db.example/p"
    assert redacted("sqlite:///payouts.db") == "sqlite:///payouts.db"


def test_a_malformed_ipv6_address_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match=r"IPv6 address needs both \[ and \]"):
        parse_ledger_url("postgresql://u:p@[::1:5432/db")


async def test_the_cli_says_one_line_without_the_password() -> None:
    runs = await cli_many([["status", "--ledger", url] for url in BAD_URLS])
    for url, run in zip(BAD_URLS, runs, strict=True):
        assert run.code == 2 and len(run.errors) == 1, (url, run)
        assert "Traceback" not in run.err, run
        assert PASSWORD not in run.err and PASSWORD not in run.out, run
