"""Which event loop an object's loop-bound resources belong to.

An aiohttp session, an asyncpg pool, a writer task, a lock with waiters: each works
only in the event loop it was made in. A sync application that runs each job in
``asyncio.run()`` (a Django or Flask view, a Celery task) gives a client, a ledger or a
``Payouts`` made once at import a new event loop every time; a threaded one may run two
loops at once. ``LoopBinding`` tells its owner which case it is in:

* the loop it is bound to, or none yet: nothing to do;
* a new loop, the last one closed (``asyncio.run`` ended): nothing of that loop can run
  again, so the owner makes its loop-bound resources anew here -- unless it was given
  one it cannot make (a caller's session or pool): then it is refused;
* a new loop while the last one is still open (another thread's, or one left unclosed):
  refused, since that loop may still use the same resources.

Refusals are ``ConfigurationError``\\ s, raised before anything is sent or written.
"""

from __future__ import annotations

import asyncio
import weakref

from ._errors import ConfigurationError

__all__ = ["LoopBinding"]


class LoopBinding:
    """The event loop ``owner`` (named in errors) was last used in. ``given``: what
    the owner was given and cannot make anew ("the session given to EnotClient"), if
    anything; it ties the owner to its first loop for good."""

    __slots__ = ("_given", "_loop", "owner")

    def __init__(self, owner: str, *, given: str | None = None) -> None:
        self.owner = owner
        self._given = given
        self._loop: weakref.ref[asyncio.AbstractEventLoop] | None = None

    def moved(self) -> bool:
        """Bind to the running loop. True when the owner was used before in a loop that
        has closed since (it makes its loop-bound resources anew); False when it is
        bound to this loop already, or to none. ``ConfigurationError`` when it may not
        move (``check``)."""
        loop = asyncio.get_running_loop()
        if self._loop is not None and self._loop() is loop:
            return False
        self.check()
        moved = self._loop is not None
        self._loop = weakref.ref(loop)
        return moved

    def check(self) -> None:
        """``ConfigurationError`` when the owner is bound to another event loop than the
        running one and may not move from it: that loop is still open, or it holds
        something ``given``. Nothing changes."""
        if self._loop is None:
            return
        bound = self._loop()
        if bound is asyncio.get_running_loop():
            return
        if bound is not None and not bound.is_closed():
            raise ConfigurationError(
                f"{self.owner} is in use by another event loop, which is still open "
                "(another thread's?): make one per event loop, inside it, or close that "
                "loop first"
            )
        if self._given is not None:
            raise ConfigurationError(
                f"{self._given} belongs to an event loop that has closed: give it one made "
                "in the event loop that uses it"
            )
