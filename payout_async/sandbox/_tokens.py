"""IntellectMoney UserTokens: which are valid, and for how long."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable

__all__ = ["UserTokens"]


class UserTokens:
    """The UserTokens the sandbox accepts, each valid for ``lifetime`` seconds after
    it was issued (forever when ``None``). ``base_token`` counts as issued at start
    and at every ``reset``."""

    def __init__(
        self, base_token: str, *, lifetime: float | None, clock: Callable[[], float]
    ) -> None:
        self._base_token = base_token
        self._lifetime = lifetime
        self._clock = clock
        self._issued: dict[str, float] = {base_token: clock()}

    def issue(self) -> str:
        """A fresh token, valid from now (64 characters, like the provider's)."""
        token = base64.b64encode(secrets.token_bytes(48)).decode()
        self._issued[token] = self._clock()
        return token

    def is_valid(self, token: str | None) -> bool:
        """True when ``token`` was issued here and has not expired."""
        if token is None:
            return False
        issued_at = self._issued.get(token)
        if issued_at is None:
            return False
        return self._lifetime is None or self._clock() - issued_at < self._lifetime

    def reset(self) -> None:
        """Forget issued tokens; the base token is valid afresh."""
        self._issued = {self._base_token: self._clock()}
