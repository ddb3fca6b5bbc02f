"""``ledger_from_url``: a ledger named by one string (for the CLI and configuration)."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import attrs

from .._errors import ConfigurationError
from ._memory import MemoryLedger
from ._postgres import DEFAULT_COMMAND_TIMEOUT, PostgresLedger
from ._recipient import EncryptionKey
from ._sqlite import DEFAULT_BUSY_TIMEOUT, DEFAULT_CHECKPOINT_INTERVAL, SQLiteLedger

__all__ = ["BuiltInLedger", "LedgerURL", "ledger_from_url", "parse_ledger_url"]

#: The ledgers a URL names: each an async context manager (``async with`` opens and
#: closes it) besides a ``Ledger``.
BuiltInLedger = MemoryLedger | SQLiteLedger | PostgresLedger

Scheme = Literal["memory", "sqlite", "postgresql"]

#: Every scheme's: the environment variable holding the ledger's encryption key.
KEY_ENV = "key_env"
_SQLITE_OPTIONS = frozenset({"synchronous", "busy_timeout", "checkpoint_interval", KEY_ENV})
_POSTGRES_OPTIONS = frozenset(
    {
        KEY_ENV,
        "schema",
        "table_prefix",
        "max_connections",
        "command_timeout",
        "statement_timeout",
        "lock_timeout",
    }
)
#: ``name:`` at the start of a string: a URL scheme (a single letter is a drive).
_SCHEME_PREFIX = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]+):")
_HINT = "use sqlite:///relative/path.db, sqlite:////absolute/path.db or postgresql://..."
#: asyncpg connection parameters that must not be shown.
_SECRET_PARAMS = frozenset({"password", "passfile", "sslpassword"})
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: A scheme and the slashes after it, however many (a malformed URL may have none).
_PREFIX = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:/*")
_SECRET_QUERY = re.compile(r"(?i)\b(password|passfile|sslpassword)=[^&#]*")


def redacted(url: str) -> str:
    """``url`` fit for an error message, however malformed: whatever stands between a
    user name and the last ``@`` (a password) and the values of ``password``-like
    query parameters are replaced by ``***``."""
    prefix = _PREFIX.match(url)
    start = prefix.end() if prefix else 0
    at = url.rfind("@", start)
    if at != -1:
        user, colon, _ = url[start:at].partition(":")
        url = url[:start] + user + (":***" if colon else "") + url[at:]
    return _SECRET_QUERY.sub(r"\1=***", url)


@attrs.frozen
class LedgerURL:
    """A parsed ledger URL: which backend, where, and with which options.

    ``path`` is the SQLite file as written in the URL and ``location`` the absolute
    path it names from the current directory (for PostgreSQL: the server, database
    and schema, without any password), fit to be printed; ``dsn`` is what PostgreSQL is
    given (the ledger's own options removed). ``key_env`` is the environment variable
    that holds the encryption key, if the URL names one (never part of ``location``:
    giving a ledger a key does not make it another ledger).
    """

    scheme: Scheme
    path: str | None = None
    dsn: str | None = attrs.field(default=None, repr=False)
    options: Mapping[str, str] = attrs.field(factory=dict)
    location: str = ""

    @property
    def key_env(self) -> str | None:
        """The environment variable the URL takes the encryption key from, if any."""
        return self.options.get(KEY_ENV)

    def encryption_key(self, given: EncryptionKey | None = None) -> EncryptionKey | None:
        """The key: ``given``, or the one in the URL's ``key_env`` variable
        (``ConfigurationError`` when that is unset, or differs from ``given``)."""
        name = self.key_env
        if name is None:
            return given
        value = os.environ.get(name, "").strip()
        if not value:
            raise ConfigurationError(
                f"the ledger URL takes its encryption key from ${name}, which is not set"
            )
        if given is not None and _text(given) != value:
            raise ConfigurationError(
                f"two different encryption keys for one ledger: ${name} (the URL's key_env) "
                "and another one: give it once"
            )
        return value

    def ledger(
        self, *, encryption_key: EncryptionKey | None = None, read_only: bool = False
    ) -> BuiltInLedger:
        """A new, unopened ledger for this URL, with ``encryption_key`` or the one its
        ``key_env`` names; ``read_only``: see ``ledger_from_url``."""
        key = self.encryption_key(encryption_key)
        if self.scheme == "memory":
            if read_only:
                raise ConfigurationError("memory:// cannot be read-only: it starts empty")
            return MemoryLedger(encryption_key=key)
        if self.scheme == "sqlite":
            assert self.path is not None
            return _sqlite_ledger(self.path, self.options, key, read_only)
        return _postgres_ledger(self.dsn or "", self.options, key, read_only)


def _text(key: EncryptionKey) -> str:
    if isinstance(key, str):
        return key.strip()
    if isinstance(key, bytes):
        return key.decode("ascii", "replace").strip()
    return ",".join(_text(one) for one in key)


def ledger_from_url(
    url: str, *, encryption_key: EncryptionKey | None = None, read_only: bool = False
) -> BuiltInLedger:
    """The ledger ``url`` names.

    - ``memory://`` -- a ``MemoryLedger`` (nothing survives the process);
    - ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` (as SQLAlchemy
      spells them) or a bare file path -- a ``SQLiteLedger``; options
      ``?synchronous=NORMAL``, ``?busy_timeout=SECONDS`` and
      ``?checkpoint_interval=SECONDS``;
    - ``postgresql://...`` or ``postgres://...`` -- a ``PostgresLedger``; options
      ``?schema=...``, ``?table_prefix=...``, ``?max_connections=N`` and (in seconds)
      ``?command_timeout=``, ``?statement_timeout=``, ``?lock_timeout=`` are the
      ledger's, any other query parameter goes to asyncpg.

    Every scheme takes ``?key_env=NAME``: the ledger's encryption key (see
    ``new_encryption_key``) is read from the environment variable ``NAME`` when the
    ledger is made -- e.g. ``sqlite:///payouts.db?key_env=PAYOUT_ASYNC_LEDGER_KEY``.
    With a key, each row's recipient (card, phone, wallet) is stored encrypted; without
    one, in clear until the payout is final. ``encryption_key`` gives the key directly
    (it must agree with ``key_env``'s, if both are given).

    ``read_only`` (SQLite, PostgreSQL) opens a ledger to look at, never to change: reads
    work, writes raise ``LedgerNotWrittenError``, and a ledger that is missing or was
    written by an older version is neither created nor upgraded
    (``LedgerOutdatedError``).

    Anything else raises ``ConfigurationError``: an unknown scheme, a scheme without
    ``//`` (``sqlite:payouts.db`` is not a file name), an empty path, unknown options,
    a ``key_env`` that is not a variable name or is not set.
    """
    return parse_ledger_url(url).ledger(encryption_key=encryption_key, read_only=read_only)


def parse_ledger_url(url: str) -> LedgerURL:
    """Check ``url`` and say what it names (see ``ledger_from_url``) without opening
    anything."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError("ledger URL must be a non-empty string")
    if url != url.strip() or not url.isprintable():
        raise ConfigurationError(f"ledger URL {redacted(url)!r} holds spaces or control characters")
    if "://" not in url:
        prefix = _SCHEME_PREFIX.match(url)
        if prefix:
            raise ConfigurationError(
                f"bad ledger URL {redacted(url)!r}: {prefix[1]}: must be followed by // ({_HINT})"
            )
        return LedgerURL("sqlite", path=url, location=os.path.abspath(url))
    scheme = url.split("://", 1)[0].lower()
    parse = _PARSERS.get(scheme)
    if parse is None:
        raise ConfigurationError(f"unsupported ledger URL scheme {scheme!r}: {_HINT}")
    try:
        return parse(url)
    except ValueError as error:  # urllib: unbalanced [ ] around an IPv6 address...
        # urllib's own words may quote a piece of the password: never shown.
        what = "an IPv6 address needs both [ and ]" if "IPv6" in str(error) else "unreadable"
        raise ConfigurationError(f"bad ledger URL {redacted(url)!r}: {what}") from None


def _split_options(url: str, allowed: frozenset[str]) -> tuple[str, dict[str, str]]:
    """Split the ledger's own query parameters from the rest of ``url``."""
    parts = urlsplit(url)
    ours: dict[str, str] = {}
    theirs: list[tuple[str, str]] = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in allowed:
            ours[name] = value
        else:
            theirs.append((name, value))
    return urlunsplit(parts._replace(query=urlencode(theirs))), ours


def _parse_memory(url: str) -> LedgerURL:
    parts = urlsplit(url)
    if parts.netloc or parts.path or parts.fragment:
        raise ConfigurationError(
            f"bad ledger URL {redacted(url)!r}: memory:// takes nothing after // but ?key_env="
        )
    _, options = _split_options(url, frozenset({KEY_ENV}))
    unknown = {name for name, _ in parse_qsl(parts.query, keep_blank_values=True)} - {KEY_ENV}
    if unknown:
        raise ConfigurationError(f"unknown memory ledger options {sorted(unknown)}")
    _check_key_env(options)
    return LedgerURL("memory", options=options, location="memory:// (kept in this process only)")


def _check_key_env(options: Mapping[str, str]) -> None:
    name = options.get(KEY_ENV)
    if name is not None and not _ENV_NAME.fullmatch(name):
        raise ConfigurationError(f"key_env must name an environment variable, not {name!r}")


def _parse_sqlite(url: str) -> LedgerURL:
    parts = urlsplit(url)
    path = unquote(parts.path)
    if parts.netloc or len(path) < 2 or parts.fragment:
        raise ConfigurationError(
            f"bad SQLite ledger URL {redacted(url)!r}: use sqlite:///relative.db or "
            "sqlite:////abs.db"
        )
    _, options = _split_options(url, _SQLITE_OPTIONS)
    unknown = {name for name, _ in parse_qsl(parts.query, keep_blank_values=True)}
    unknown -= _SQLITE_OPTIONS
    if unknown:
        raise ConfigurationError(f"unknown SQLite ledger options {sorted(unknown)}")
    _sqlite_settings(options)  # refuse bad values now, not when the ledger is built
    _check_key_env(options)
    return LedgerURL("sqlite", path=path[1:], options=options, location=os.path.abspath(path[1:]))


def _sqlite_settings(
    options: Mapping[str, str],
) -> tuple[Literal["FULL", "NORMAL"], float, float]:
    synchronous = options.get("synchronous", "FULL").upper()
    if synchronous not in ("FULL", "NORMAL"):
        raise ConfigurationError("synchronous must be FULL or NORMAL")
    busy_timeout = _seconds(options, "busy_timeout", DEFAULT_BUSY_TIMEOUT)
    interval = _seconds(options, "checkpoint_interval", DEFAULT_CHECKPOINT_INTERVAL)
    return ("FULL" if synchronous == "FULL" else "NORMAL"), busy_timeout, interval


def _seconds(options: Mapping[str, str], name: str, default: float) -> float:
    try:
        value = float(options.get(name, default))
    except ValueError:
        raise ConfigurationError(f"{name} must be a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigurationError(f"{name} must be a finite, non-negative number of seconds")
    return value


def _sqlite_ledger(
    path: str, options: Mapping[str, str], key: EncryptionKey | None, read_only: bool
) -> SQLiteLedger:
    synchronous, busy_timeout, interval = _sqlite_settings(options)
    return SQLiteLedger(
        path,
        synchronous=synchronous,
        busy_timeout=busy_timeout,
        checkpoint_interval=interval,
        encryption_key=key,
        read_only=read_only,
    )


def _parse_postgres(url: str) -> LedgerURL:
    dsn, options = _split_options(url, _POSTGRES_OPTIONS)
    _check_key_env(options)
    _postgres_max_connections(options)
    _postgres_timeouts(options)  # refuse bad values now, not when the ledger is built
    parts = urlsplit(dsn)
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:
        raise ConfigurationError(
            f"bad PostgreSQL ledger URL: port out of range in {host}"
        ) from None
    user = f"{unquote(parts.username)}@" if parts.username else ""
    where = f"{host}:{port}" if port else host
    query = [
        (name, value)
        for name, value in parse_qsl(parts.query, keep_blank_values=True)
        if name not in _SECRET_PARAMS
    ]
    query += [(name, options[name]) for name in ("schema", "table_prefix") if options.get(name)]
    location = f"postgresql://{user}{where}{parts.path}"
    if query:
        location += "?" + urlencode(query)
    return LedgerURL("postgresql", dsn=dsn, options=options, location=location)


_PARSERS: dict[str, Callable[[str], LedgerURL]] = {
    "memory": _parse_memory,
    "sqlite": _parse_sqlite,
    "postgresql": _parse_postgres,
    "postgres": _parse_postgres,
}


def _postgres_max_connections(options: Mapping[str, str]) -> int:
    try:
        return int(options.get("max_connections", "10"))
    except ValueError:
        raise ConfigurationError("max_connections must be a whole number") from None


def _postgres_timeouts(options: Mapping[str, str]) -> dict[str, float]:
    timeouts = {"command_timeout": _seconds(options, "command_timeout", DEFAULT_COMMAND_TIMEOUT)}
    for name in ("statement_timeout", "lock_timeout"):
        if name in options:
            timeouts[name] = _seconds(options, name, 0.0)
    if not timeouts["command_timeout"] > 0:
        raise ConfigurationError("command_timeout must be a positive number of seconds")
    return timeouts


def _postgres_ledger(
    dsn: str, options: Mapping[str, str], key: EncryptionKey | None, read_only: bool
) -> PostgresLedger:
    timeouts = _postgres_timeouts(options)
    return PostgresLedger(
        dsn,
        schema=options.get("schema") or None,
        table_prefix=options.get("table_prefix", ""),
        max_connections=_postgres_max_connections(options),
        command_timeout=timeouts["command_timeout"],
        statement_timeout=timeouts.get("statement_timeout"),
        lock_timeout=timeouts.get("lock_timeout"),
        encryption_key=key,
        read_only=read_only,
    )
