"""Bounded, classified calls to PostgreSQL for ``PostgresLedger``.

Every call -- waiting for a pool slot, connecting, the statement, and the retries of
what was certainly not written -- shares one budget of ``timeout`` seconds. A failure
becomes ``LedgerNotWrittenError`` when nothing can have been committed (no connection,
a statement the server refused or cancelled, or a read) and
``LedgerOutcomeUnknownError`` when a write was sent and its answer lost (the connection
broke, the wait ran out, the server went away mid-statement). A connection whose
statement timed out, broke or was cancelled is closed, never handed back to the pool,
so nothing waits on it. A broken constraint (SQLSTATE class 23) is no failure of the
ledger's: it passes through unchanged, for the ledger's methods to interpret.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from .._errors import PayoutError
from ._errors import LedgerError, LedgerNotWrittenError, LedgerOutcomeUnknownError
from ._patience import Patience, Strain

__all__ = ["BoundedPool", "is_integrity_violation"]

T = TypeVar("T")

_FIRST_PAUSE, _MAX_PAUSE = 0.02, 0.5
# Refusals worth another try within the budget: a statement rolled back as a
# serialisation failure or a deadlock victim; a connection refused as one too many, or
# while the server starts or stops. (Not a lock or statement timeout: the server gave
# up on purpose, and a retry would run into the client's own deadline.)
_RETRY_STATES = frozenset({"40001", "40P01"})
_RETRY_CONNECT_STATES = frozenset({"53300", "57P01", "57P02", "57P03"})
# Errors the server may report after a write committed: the connection or the server
# failed (57014, a cancelled statement, rolled it back).
_UNKNOWN_CLASSES = frozenset({"08", "57", "58", "XX"})


class _Failure(Exception):
    """One attempt's failure: the classified error, whether to try again, whether the
    connection may be unusable, and whether the wait ran out."""

    def __init__(
        self, error: LedgerError, *, retry: bool, broken: bool, timed_out: bool = False
    ) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry = retry
        self.broken = broken
        self.timed_out = timed_out


def _is_read(sql: str) -> bool:
    """A plain ``SELECT`` changes nothing (every write of the ledger starts otherwise)."""
    return sql.lstrip().upper().startswith("SELECT")


def is_integrity_violation(error: BaseException) -> bool:
    """SQLSTATE class 23: the statement broke a constraint (``begin`` turns the
    order_id index's refusal into ``IdempotencyConflictError``). Nothing was written,
    and the error passes through as asyncpg raised it."""
    sqlstate = getattr(error, "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate.startswith("23")


def _message(error: BaseException) -> str:
    """The error's own message, without asyncpg's DETAIL (which may quote a row)."""
    text = getattr(error, "message", None) or (str(error.args[0]) if error.args else "")
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _classify(error: Exception, *, reads: bool, timeout: float) -> _Failure:
    sqlstate = getattr(error, "sqlstate", None)
    if isinstance(error, TimeoutError):
        text = f"PostgreSQL did not answer within {timeout:g}s"
        if reads:
            return _Failure(LedgerNotWrittenError(text), retry=False, broken=True, timed_out=True)
        return _Failure(
            LedgerOutcomeUnknownError(f"{text}; the write may have committed"),
            retry=False,
            broken=True,
            timed_out=True,
        )
    if isinstance(sqlstate, str):  # the server's (or asyncpg's) PostgresError
        lost = sqlstate[:2] in _UNKNOWN_CLASSES and sqlstate != "57014"
        text = _message(error)
        if lost and not reads:
            return _Failure(
                LedgerOutcomeUnknownError(f"the write may have committed: {text}", code=sqlstate),
                retry=False,
                broken=True,
            )
        return _Failure(
            LedgerNotWrittenError(text, code=sqlstate),
            retry=sqlstate in _RETRY_STATES or (lost and reads),
            broken=lost,
        )
    if isinstance(error, ValueError):  # asyncpg could not encode an argument: unsent
        return _Failure(LedgerNotWrittenError(_message(error)), retry=False, broken=False)
    # The connection failed under the statement (reset, closed, a protocol error).
    if reads:
        return _Failure(LedgerNotWrittenError(_message(error)), retry=True, broken=True)
    return _Failure(
        LedgerOutcomeUnknownError(f"the write may have committed: {_message(error)}"),
        retry=False,
        broken=True,
    )


class BoundedPool:
    """``fetch``, ``fetchrow`` and ``execute`` on an asyncpg pool, each bounded by
    ``timeout`` seconds (less for a payout whose call ran out: see ``Patience``) and raising
    only ``LedgerError``\\ s (or ``CancelledError``)."""

    def __init__(self, pool: Any, timeout: float) -> None:
        self.pool = pool
        self.timeout = timeout
        self.patience = Patience(timeout)
        #: Connections made too late for their callers, on their way back to the pool.
        self._giving_back: set[asyncio.Future[None]] = set()

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        """Rows of ``sql``."""
        return list(await self._call("fetch", sql, args))

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        """The first row of ``sql``, or None."""
        return await self._call("fetchrow", sql, args)

    async def execute(self, sql: str, *args: Any) -> str:
        """Run ``sql``; its status tag."""
        return str(await self._call("execute", sql, args))

    async def fetch_for(
        self, scopes: Sequence[Strain | None], deadline: float, sql: str, *args: Any
    ) -> list[Any]:
        """Rows of ``sql``, a statement written for several payouts at once (their
        ``Patience.scope()``\\ s), by ``deadline`` (on the loop's clock) at the latest:
        whether it got through or ran out counts for each of them."""
        return list(await self._call("fetch", sql, args, batch=(scopes, deadline)))

    async def session(self, work: Callable[[Any], Awaitable[T]], *, deadline: float) -> T:
        """Run ``work(connection)`` (idempotent work, such as creating the schema) by
        ``deadline`` (on the loop's clock); any failure is ``LedgerNotWrittenError``."""
        try:
            conn = await self._acquire(deadline)
        except _Failure as unsent:
            raise unsent.error from None
        broken = True
        try:
            async with asyncio.timeout_at(deadline):
                result = await work(conn)
            broken = False
            return result
        except TimeoutError:
            raise LedgerNotWrittenError(
                f"PostgreSQL did not answer within {self.timeout:g}s"
            ) from None
        except PayoutError:  # the work's own verdict (say, a ledger it must not upgrade)
            broken = False
            raise
        except Exception as error:
            failure = _classify(error, reads=True, timeout=self.timeout)
            broken = failure.broken
            raise failure.error from None
        finally:
            await self._release(conn, broken=broken)

    async def _call(
        self,
        method: str,
        sql: str,
        args: tuple[Any, ...],
        *,
        batch: tuple[Sequence[Strain | None], float] | None = None,
    ) -> Any:
        """``method`` with retries of what was certainly not written, within the calling
        payout's budget -- or, for a ``batch`` (its payouts' scopes and the loop time by
        which it must end), within that."""
        loop = asyncio.get_running_loop()
        if batch is None:
            scopes: Sequence[Strain | None] = (self.patience.scope(),)
            budget = self.patience.budget(scopes[0])
        else:
            scopes, until = batch
            budget = max(until - loop.time(), 0.001)
        deadline = loop.time() + budget
        reads = _is_read(sql)
        pause = _FIRST_PAUSE
        while True:
            try:
                result = await self._once(
                    method, sql, args, deadline=deadline, budget=budget, reads=reads
                )
            except _Failure as failure:
                out_of_time = loop.time() + pause >= deadline
                if failure.timed_out or (failure.retry and out_of_time):
                    for scope in scopes:
                        self.patience.ran_out(scope)
                if not failure.retry or out_of_time:
                    raise failure.error from None
            else:
                for scope in scopes:
                    self.patience.succeeded(scope)
                return result
            await asyncio.sleep(pause)
            pause = min(pause * 2, _MAX_PAUSE)

    async def _once(
        self,
        method: str,
        sql: str,
        args: tuple[Any, ...],
        *,
        deadline: float,
        budget: float,
        reads: bool,
    ) -> Any:
        conn = await self._acquire(deadline, budget)
        broken = True  # unless the statement ends cleanly: cancelled, say
        try:
            remaining = max(deadline - asyncio.get_running_loop().time(), 0.001)
            result = await getattr(conn, method)(sql, *args, timeout=remaining)
            broken = False
            return result
        except Exception as error:
            if is_integrity_violation(error):
                broken = False
                raise  # a constraint doing its job: the ledger's own business
            failure = _classify(error, reads=reads, timeout=budget)
            broken = failure.broken
            raise failure from None
        finally:
            await self._release(conn, broken=broken)

    async def _acquire(self, deadline: float, budget: float | None = None) -> Any:
        """A connection by ``deadline``; else a ``_Failure`` (nothing was sent).

        A connection still being made then is not cut short: asyncpg leaves an error
        nobody reads ("Future exception was never retrieved") behind a connect
        cancelled during its TLS negotiation. It goes back to the pool once made. (When
        an idle connection is there, taking it connects nothing: no task is needed.)"""
        if self.pool.get_idle_size():
            try:
                # Not ``acquire(timeout=...)``: Python 3.11's ``wait_for`` behind it can
                # swallow a cancellation that arrives as the connection does.
                async with asyncio.timeout_at(deadline):
                    return await self.pool.acquire()
            except Exception as error:
                raise self._no_connection(error, budget) from None
        acquiring = asyncio.ensure_future(self.pool.acquire())
        try:
            async with asyncio.timeout_at(deadline):
                return await asyncio.shield(acquiring)
        except BaseException as error:
            # (A connection that came just as the wait ended is given back too.)
            if acquiring.done():
                self._give_back(acquiring)
            else:
                acquiring.add_done_callback(self._give_back)
            if not isinstance(error, Exception):  # cancelled
                raise
            raise self._no_connection(error, budget) from None

    def _give_back(self, acquiring: asyncio.Future[Any]) -> None:
        """Release a connection made after its caller stopped waiting for it."""
        if acquiring.cancelled() or acquiring.exception() is not None:  # (read: no log)
            return
        releasing = asyncio.ensure_future(self._release(acquiring.result(), broken=False))
        self._giving_back.add(releasing)
        releasing.add_done_callback(self._giving_back.discard)

    def _no_connection(self, error: Exception, budget: float | None) -> _Failure:
        """The ``_Failure`` of a connection not had in time (``TimeoutError``) or that
        could not be made."""
        if isinstance(error, TimeoutError):
            waited = self.timeout if budget is None else budget
            return _Failure(
                LedgerNotWrittenError(
                    f"no PostgreSQL connection within {waited:g}s; nothing was sent"
                ),
                retry=False,
                broken=False,
                timed_out=True,
            )
        sqlstate = getattr(error, "sqlstate", None)
        code = sqlstate if isinstance(sqlstate, str) else None
        failure = LedgerNotWrittenError(
            f"could not connect to PostgreSQL: {_message(error)}", code=code
        )
        # Refused, reset, or the server busy or starting: a moment later it may pass.
        retry = code is None or code[:2] == "08" or code in _RETRY_CONNECT_STATES
        return _Failure(failure, retry=retry, broken=False)

    async def _release(self, conn: Any, *, broken: bool) -> None:
        if broken:  # never hand back a connection that may still be busy or dead
            with contextlib.suppress(Exception):  # closed already: back in the pool
                conn.terminate()
        with contextlib.suppress(Exception):
            await self.pool.release(conn, timeout=self.timeout)
