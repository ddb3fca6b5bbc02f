"""Which event loop, in which process, an object's loop-bound resources belong to.

An aiohttp session, an asyncpg pool, a writer task, a lock with waiters: each works
only in the event loop it was made in, and a connection only in the process that opened
it. A sync application that runs each job in ``asyncio.run()`` (a Django or Flask view,
a Celery task) gives a client, a ledger or a ``Payouts`` made once at import a new event
loop every time; a threaded one may run two loops at once; a pre-forking server
(``gunicorn --preload``, Celery's prefork pool) hands what the parent made to each
child. ``LoopBinding`` tells its owner which case it is in (``moved``):

* the loop it is bound to, or none yet: nothing to do (None);
* a new loop, the last one closed (``asyncio.run`` ended): nothing of that loop can run
  again, so the owner makes its loop-bound resources anew here (``LOOP_CLOSED``);
* a child process of the one it was used in (``FORKED``): the parent's connections are
  the parent's -- its sockets, its SQLite connection, whose thread did not come along
  -- so the owner leaves them untouched (``keep``) and makes its own;
* a new loop while the last one is still open (another thread's, or one left
  unclosed): refused, since that loop may still use the same resources; and so is any
  move of an owner ``given`` a resource it cannot make anew (a caller's session or pool).

Refusals are ``ConfigurationError``\\ s, raised before anything is sent or written.
"""

from __future__ import annotations

import asyncio
import enum
import os
import weakref

from ._errors import ConfigurationError

__all__ = ["LoopBinding", "Moved", "keep"]

#: Forks this process descends from (``os.register_at_fork``): a binding made with
#: another count was made in an ancestor.
_forks = 0
#: What a child was handed by its parent and must neither close nor let be collected
#: (a finaliser would close or shut down what the parent still uses).
_inherited: list[object] = []


def _forked() -> None:
    global _forks
    _forks += 1


if hasattr(os, "register_at_fork"):  # POSIX: Windows has no fork
    os.register_at_fork(after_in_child=_forked)


def keep(resource: object) -> None:
    """Hold ``resource``, inherited from the parent process, for the life of this
    one: it is never closed here, nor collected (its finaliser would act on the
    parent's connection)."""
    _inherited.append(resource)


class Moved(enum.Enum):
    """Why an owner's loop-bound resources must be made anew (``LoopBinding.moved``)."""

    LOOP_CLOSED = "the event loop they belong to has closed"
    FORKED = "they belong to the parent of this process"


class LoopBinding:
    """The event loop and process ``owner`` (named in errors) was last used in.
    ``given``: what the owner was given and cannot make anew ("the session given to
    EnotClient"), if anything; it ties the owner to its first loop for good."""

    __slots__ = ("_forks", "_given", "_loop", "owner")

    def __init__(self, owner: str, *, given: str | None = None) -> None:
        self.owner = owner
        self._given = given
        self._loop: weakref.ref[asyncio.AbstractEventLoop] | None = None
        self._forks = _forks

    def moved(self) -> Moved | None:
        """Bind to the running loop, in this process. None when the owner is bound to
        it already, or to none; else why its resources must be made anew.
        ``ConfigurationError`` when it may not move (``check``)."""
        loop = asyncio.get_running_loop()
        if self._forks == _forks and self._loop is not None and self._loop() is loop:
            return None
        self.check()
        if self._forks != _forks:
            moved: Moved | None = Moved.FORKED
        else:
            moved = None if self._loop is None else Moved.LOOP_CLOSED
        self._loop, self._forks = weakref.ref(loop), _forks
        return moved

    def check(self) -> None:
        """``ConfigurationError`` when the owner may not move to the running event
        loop: its loop, in this process, is another one still open; or it holds
        something ``given``, bound to another loop or process. Nothing changes."""
        if self._loop is None:
            return
        forked = self._forks != _forks
        bound = self._loop()
        if not forked and bound is asyncio.get_running_loop():
            return
        if not forked and bound is not None and not bound.is_closed():
            raise ConfigurationError(
                f"{self.owner} is in use by another event loop, which is still open "
                "(another thread's?): make one per event loop, inside it, or close that "
                "loop first"
            )
        if self._given is not None:
            where = (
                "the parent of this process (made before a fork)"
                if forked
                else "an event loop that has closed"
            )
            raise ConfigurationError(
                f"{self._given} belongs to {where}: give it one made in the event loop, "
                "and the process, that uses it"
            )
