"""``payout-async sandbox`` and ``python -m payout_async``."""

from __future__ import annotations

import asyncio
import signal
import sys

import aiohttp
import pytest

from payout_async.cli import build_parser, main
from payout_async.cli._sandbox import _config
from payout_async.sandbox import FaultKind, SandboxCredentials


def test_options_become_the_config() -> None:
    args = build_parser().parse_args(
        ["sandbox", "--port", "0", "--fault-rate", "0.1", "--seed", "1",
         "--fault-kinds", "http_500,commit_then_close", "--fault-routes", "enot.create",
         "--duplicate-order-id", "reject", "--enot-balance", "50.5"]
    )  # fmt: skip
    config = _config(args)
    assert (config.fault_rate, config.seed, config.duplicate_order_id) == (0.1, 1, "reject")
    assert config.fault_kinds == {FaultKind.HTTP_500, FaultKind.COMMIT_THEN_CLOSE}
    assert config.fault_routes == frozenset({"enot.create"})
    assert str(config.enot_balance) == "50.5"
    assert config.im_final_after == 1.5  # untouched options keep the config's defaults
    assert (config.im_execute_lag, config.im_second_execute, config.enot_info_lag) == (
        0.0,
        "refuse",
        0.0,
    )


def test_provider_lag_options() -> None:
    args = build_parser().parse_args(
        ["sandbox", "--im-execute-lag", "0.5", "--im-second-execute", "pay_again",
         "--enot-info-lag", "2"]
    )  # fmt: skip
    config = _config(args)
    assert (config.im_execute_lag, config.im_second_execute, config.enot_info_lag) == (
        0.5,
        "pay_again",
        2.0,
    )
    with pytest.raises(SystemExit):
        build_parser().parse_args(["sandbox", "--im-second-execute", "twice"])


def test_bad_settings_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sandbox", "--fault-rate", "3"]) == 2
    assert "fault_rate" in capsys.readouterr().err
    assert main(["sandbox", "--im-execute-lag", "-1"]) == 2
    assert "im_execute_lag" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["sandbox", "--fault-kinds", "nonsense"])
    assert exited.value.code == 2


async def test_serves_until_interrupted() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "payout_async", "sandbox", "--port", "0", "--seed", "1",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        first = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
        url = first.rsplit(" ", 1)[-1].strip()
        assert url.startswith("http://127.0.0.1:")
        rest = (await asyncio.wait_for(process.stdout.readuntil(b"Ctrl-C"), 5)).decode()
        assert f"{url}/personal/payout/" in rest
        assert SandboxCredentials().enot_secret_key in rest
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{url}/_sandbox/stats") as response,
        ):
            assert response.status == 200
        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
