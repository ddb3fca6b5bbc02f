"""mypy --strict on a small file: ``Payouts`` takes the request type of its client, and
the ledger ``ledger_from_url`` makes is an async context manager, as the docs use it.

``Payouts(IntellectMoneyClient(...), ledger)`` is a ``Payouts[OperationRequest]`` and
``Payouts(EnotClient(...), ledger)`` a ``Payouts[PayoffRequest]``, so paying with the
other provider's request is a type error, not only a ``ValidationError`` at run time.

One mypy run (``_mypy``).
"""

from __future__ import annotations

import re
from pathlib import Path

from ._mypy import ERROR, mypy_strict

#: Each line that must be a type error ends in ``# error: <its mypy code>``; no other
#: line may be one (the ``assert_type`` lines pin the types ``Payouts(...)`` binds).
SNIPPET = """\
from typing import assert_type

from payout_async import EnotClient, IntellectMoneyClient, Payouts
from payout_async.enot import PayoffRequest
from payout_async.intellectmoney import OperationRequest
from payout_async.ledger import Ledger, ledger_from_url


async def opened(url: str) -> None:
    async with ledger_from_url(url) as ledger:
        await ledger.counts()


async def pay(
    im: IntellectMoneyClient,
    enot: EnotClient,
    ledger: Ledger,
    operation: OperationRequest,
    payoff: PayoffRequest,
) -> None:
    im_payouts = Payouts(im, ledger, grace=30.0)
    enot_payouts = Payouts(enot, ledger, lookup_before_create=True)
    assert_type(im_payouts, Payouts[OperationRequest])
    assert_type(enot_payouts, Payouts[PayoffRequest])
    await im_payouts.pay("im-1", operation)
    await enot_payouts.pay("enot-1", payoff)
    async for _ in enot_payouts.pay_many([("enot-2", payoff)]):
        pass

    await enot_payouts.pay("enot-3", operation)  # error: arg-type
    await im_payouts.pay("im-2", payoff)  # error: arg-type
    async for _ in im_payouts.pay_many([("im-3", payoff)]):  # error: list-item
        pass
"""

_MARK = re.compile(r"# error: (?P<code>[a-z-]+)$")


def expected_errors(source: str) -> set[tuple[int, str]]:
    """(line, mypy error code) for each line marked ``# error: <code>``."""
    return {
        (number, mark["code"])
        for number, line in enumerate(source.splitlines(), start=1)
        if (mark := _MARK.search(line)) is not None
    }


def test_a_request_of_the_other_provider_is_a_type_error(tmp_path: Path) -> None:
    checked = tmp_path / "payouts_request_types.py"
    checked.write_text(SNIPPET)
    stdout = mypy_strict(checked)
    found = {
        (int(match["line"]), match["code"])
        for line in stdout.splitlines()
        # By name: mypy replays a cached file's errors under the path it had then.
        if (match := ERROR.match(line)) is not None and Path(match["path"]).name == checked.name
    }
    assert found == expected_errors(SNIPPET), stdout
    assert len(found) == 3
