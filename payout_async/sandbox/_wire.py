"""Small helpers for writing answers: JSON bodies, money as numbers or strings, HTML pages."""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from aiohttp import web

__all__ = ["html_page", "json_answer", "money_number", "money_text"]


def json_answer(
    payload: Mapping[str, Any] | list[Any],
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """A JSON answer (UTF-8, non-ASCII kept as is)."""
    return web.Response(
        body=json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode(),
        status=status,
        headers=headers,
        content_type="application/json",
        charset="utf-8",
    )


def money_number(amount: Decimal) -> int | float:
    """``amount`` as a JSON number: an int when whole, else a float (two decimals
    round-trip exactly through ``repr``)."""
    return int(amount) if amount == amount.to_integral_value() else float(amount)


def money_text(amount: Decimal) -> str:
    """``amount`` as a string with two decimals."""
    return f"{amount:.2f}"


def html_page(status: int, title: str, *, headers: Mapping[str, str] | None = None) -> web.Response:
    """An nginx-style HTML error page, as a gateway in front of a provider sends."""
    body = (
        f"<html>\r\n<head><title>{status} {title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{status} {title}</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    )
    return web.Response(
        text=body, status=status, headers=headers, content_type="text/html", charset="utf-8"
    )
