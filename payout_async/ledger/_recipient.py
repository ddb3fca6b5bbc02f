"""What a ledger keeps of a payout's recipient, and its parameters' fingerprint.

The recipient -- IntellectMoney's ``pan`` or ``account``, Enot's ``wallet_to``: a card
number, a phone, a wallet -- is kept apart from the other parameters. A row's
``params`` column holds the parameters with the recipient masked (first six and last
four characters of a card), always; its ``recipient`` column holds the full value,
as JSON in clear (a ledger without a key) or sealed with AES-256-GCM (a ledger with
an ``encryption_key``), until the row is final: the final transition sets it to NULL
and the row's ``params_hash`` to ``masked``, in the same write. A final row thus keeps
nothing the full number can be recovered from -- not even a plain hash of it, which
a brute force over the six hidden digits would invert in a second.

The fingerprint (``params_hash``) of a ledger with a key is an HMAC-SHA256 keyed by it
(``hmac-sha256:<key id>:<hex>``); without one, a plain SHA-256 (``<hex>``, as before
keys existed, so rows written then still compare). A final row is compared by its
masked parameters. The key is 32 random bytes, URL-safe base64 (``new_encryption_key``;
the format of ``cryptography``'s Fernet keys): HKDF-SHA256 derives from it one key per
purpose -- the encryption key, the fingerprint's HMAC key, the row signature's HMAC key
-- and a key id (4 bytes, hex) that every sealed or signed value carries, so that a
wrong or missing key is named as such instead of passing for a conflict.

A ledger with a key also signs each row (``sign_row``, ``sign_operation``,
``sign_account``; DESIGN rule 14): an HMAC over everything that decides where money
goes and how much -- provider, key, order_id, the full parameters (recipient and amount
included) -- one over the operation id once it is known, and one over the provider
account the row was sent through (where its order_id is looked up: an account edited to
the one driving the row would find nothing there and create the payout again).
``authenticate`` checks them on every load of a live row; a row that fails, or is clear
or unsigned in a keyed ledger, is never sent. Without a key, the plain fingerprint is
checked the same way: it catches accidents, not someone who can write to the database.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

import attrs
import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .._errors import ConfigurationError
from .._redact import mask_wallet
from ._errors import LedgerKeyError

__all__ = [
    "ALTERED",
    "MASKED_HASH",
    "RECIPIENT_FIELDS",
    "EncryptionKey",
    "Recipients",
    "Stored",
    "canonical_json",
    "is_clear",
    "mask_params",
    "new_encryption_key",
    "plain_hash",
]

#: The request fields that name where the money goes.
RECIPIENT_FIELDS = ("pan", "account", "wallet_to")
#: ``params_hash`` of a final row: it is compared by its masked parameters.
MASKED_HASH = "masked"
_HMAC = "hmac-sha256:"
_SEALED = "enc:v1:"
_SIGNED = "v1:"
#: The reason a row that fails its checks is set aside with (``authenticate``).
ALTERED = "the row was altered outside payout-async"
_NONCE = 12
_KEY_HINT = (
    "an encryption key is 32 random bytes, URL-safe base64: make one with "
    "payout_async.ledger.new_encryption_key() or `payout-async ledger-key`"
)
#: Fewer distinct byte values than this in 32 bytes is not a random key (32 random
#: bytes have fewer than 16 distinct values with a probability below 1e-9).
_MIN_DISTINCT = 16
_SEPARATORS = re.compile(r"[\s,]+")

#: A ledger's ``encryption_key``: one key, or a key ring -- a list, or a string of keys
#: separated by commas -- whose first key seals and signs, the others still read.
EncryptionKey: TypeAlias = str | bytes | Sequence[str | bytes]


def new_encryption_key() -> str:
    """A new ledger encryption key: 32 random bytes, URL-safe base64 (44 characters).
    Keep it like a password: without it, encrypted rows cannot be read."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode("ascii")


def canonical_json(value: Any) -> bytes:
    """The JSON every fingerprint and signature is taken over (``dump_params`` writes
    the same): ``json.dumps`` with sorted keys, no spaces and ASCII escapes. Text,
    integers, flags and None, in lists and string-keyed objects, go through msgspec's
    C encoder when what it writes is printable ASCII, where the two write the same
    bytes; anything else through ``json`` itself."""
    if type(value) is not dict and isinstance(value, Mapping):
        value = dict(value)
    if _plain(value):
        try:
            fast = msgspec.json.encode(value, order="sorted")
        except (TypeError, OverflowError, UnicodeEncodeError):
            fast = b"\x80"  # not plain after all: json decides
        if fast.isascii() and b"\x7f" not in fast:
            return fast
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()


#: Value types msgspec writes exactly as ``json.dumps`` does (text as ASCII aside).
_PLAIN = frozenset({str, int, bool, type(None)})
_TEXT = frozenset({str})


def _plain(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` holds only ``_PLAIN`` values, in lists and objects with text
    keys (a payout's parameters, a signature's facts)."""
    kind = type(value)
    if kind in _PLAIN:
        return True
    if depth > 2:
        return False
    if kind is dict:
        if _TEXT.issuperset(map(type, value)) and _PLAIN.issuperset(map(type, value.values())):
            return True  # plain values under text keys, checked in C (the common case)
        for name, item in value.items():  # (a loop: no generator per call)
            if type(name) is not str or (type(item) not in _PLAIN and not _plain(item, depth + 1)):
                return False
        return True
    if kind is list:
        return all(type(item) in _PLAIN or _plain(item, depth + 1) for item in value)
    return False


def plain_hash(params: Mapping[str, Any]) -> str:
    """A stable SHA-256 of a payout's parameters (JSON, sorted keys), in hex."""
    return hashlib.sha256(canonical_json(params)).hexdigest()


def mask_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` with every recipient field masked (a masked value stays as it is)."""
    masked = dict(params)
    for name in RECIPIENT_FIELDS:
        value = masked.get(name)
        if isinstance(value, str):
            masked[name] = mask_wallet(value)
    return masked


def _masked_match(stored: Mapping[str, Any], params: Mapping[str, Any]) -> bool:
    """Whether a final row's masked ``stored`` parameters are ``params``: masked alike,
    or -- a mask written by an older rule, which kept more digits in clear -- the same
    fields with each recipient a mask of ``params``' (same length, same digits where
    the mask shows any)."""
    masked = mask_params(params)
    if canonical_json(masked) == canonical_json(stored):
        return True
    if set(stored) != set(masked):
        return False
    for name, value in masked.items():
        if name in RECIPIENT_FIELDS and isinstance(value, str):
            if not _mask_of(stored[name], params[name]):
                return False
        elif canonical_json({name: value}) != canonical_json({name: stored[name]}):
            return False
    return True


def _mask_of(mask: Any, full: str) -> bool:
    """Whether ``mask`` shows ``full`` with some middle characters as ``*``."""
    if not isinstance(mask, str) or "*" not in mask or len(mask) != len(full):
        return False
    head, tail = mask[: mask.index("*")], mask[mask.rindex("*") + 1 :]
    middle = mask[len(head) : len(mask) - len(tail)]
    return set(middle) == {"*"} and full.startswith(head) and full.endswith(tail)


def is_clear(recipient: str | None) -> bool:
    """True when a stored recipient is readable as it stands (not sealed)."""
    return recipient is not None and not recipient.startswith(_SEALED)


def _derive(secret: bytes, purpose: str, length: int = 32) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=purpose.encode())
    return hkdf.derive(secret)


def _decode_key(key: str | bytes) -> bytes:
    if isinstance(key, bytes) and len(key) == 32:
        return _random(key)
    if not isinstance(key, str | bytes):
        raise ConfigurationError(f"encryption_key must be a string or bytes; {_KEY_HINT}")
    text = key.strip() if isinstance(key, str) else key.strip().decode("ascii", "replace")
    try:
        raw = base64.b64decode(text.encode("ascii", "replace"), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise ConfigurationError(f"encryption_key is not a valid key; {_KEY_HINT}")
    return _random(raw)


def _random(raw: bytes) -> bytes:
    """``raw``, unless it is plainly not random (all zeros, one byte, a pattern)."""
    distinct = len(set(raw))
    if distinct < _MIN_DISTINCT:
        raise ConfigurationError(
            f"encryption_key is not random ({distinct} distinct byte values in 32: all "
            f"zeros, one repeated byte or a pattern); {_KEY_HINT}"
        )
    return raw


def _key_ring(given: EncryptionKey | None) -> list[_Key]:
    """The keys of ``encryption_key``, the current one first (duplicates dropped)."""
    if given is None:
        return []
    parts: list[str | bytes]
    if isinstance(given, str):
        parts = [part for part in _SEPARATORS.split(given.strip()) if part] or [given]
    elif isinstance(given, bytes):
        parts = [given]
    else:
        parts = list(given)
        if not parts:
            raise ConfigurationError(f"encryption_key is an empty list; {_KEY_HINT}")
    ring: dict[str, _Key] = {}
    for part in parts:
        key = _Key(part)
        ring.setdefault(key.id, key)
    return list(ring.values())


class _Key:
    """The keys derived from one ledger key; never shown (its repr is its id)."""

    def __init__(self, key: str | bytes) -> None:
        secret = _decode_key(key)
        self.id = _derive(secret, "payout-async ledger key id", 4).hex()
        self._aead = AESGCM(_derive(secret, "payout-async ledger recipient v1"))
        self._mac = _derive(secret, "payout-async ledger params hash v1")
        self._sign = _derive(secret, "payout-async ledger row signature v1")

    def __repr__(self) -> str:
        return f"<ledger key {self.id}>"

    def digest(self, params: Mapping[str, Any]) -> str:
        mac = hmac.new(self._mac, canonical_json(params), hashlib.sha256).hexdigest()
        return f"{_HMAC}{self.id}:{mac}"

    def sign(self, facts: list[Any]) -> str:
        """``v1:<key id>:<hex>``: an HMAC of ``facts`` (as canonical JSON)."""
        mac = hmac.new(self._sign, canonical_json(facts), hashlib.sha256).hexdigest()
        return f"{_SIGNED}{self.id}:{mac}"

    def seal(self, text: str, context: bytes) -> str:
        nonce = os.urandom(_NONCE)
        sealed = nonce + self._aead.encrypt(nonce, text.encode(), context)
        return f"{_SEALED}{self.id}:{base64.urlsafe_b64encode(sealed).decode('ascii')}"

    def unseal(self, payload: str, context: bytes) -> str:
        """``payload`` is what follows the key id; ``InvalidTag`` or ``ValueError`` when
        it does not open with this key and ``context``."""
        sealed = base64.urlsafe_b64decode(payload.encode("ascii"))
        return self._aead.decrypt(sealed[:_NONCE], sealed[_NONCE:], context).decode()


@attrs.frozen(slots=False)
class Stored:
    """A payout's parameters as a row keeps them: ``params`` with the recipient
    masked, and ``recipient`` (None when the parameters name none)."""

    params: dict[str, Any]
    recipient: str | None = attrs.field(repr=False)
    #: The row's signature (``Recipients.sign_row``); None without a key.
    signature: str | None = attrs.field(default=None, repr=False)
    #: Its provider account's (``Recipients.sign_account``); None without a key.
    account_signature: str | None = attrs.field(default=None, repr=False)


def _context(provider: str, key: str) -> bytes:
    """What a sealed recipient is bound to: its row (a copy in another row won't open)."""
    return b"payout-async recipient\x00" + provider.encode() + b"\x00" + key.encode()


def _row(provider: str, key: str) -> str:
    return f"{provider}/{key}"


def _row_facts(
    provider: str, key: str, order_id: str | None, params: Mapping[str, Any]
) -> list[Any]:
    """What a row's signature covers: everything that decides where money goes."""
    return ["row", provider, key, order_id, dict(params)]


def _operation_facts(provider: str, key: str, operation_id: str) -> list[Any]:
    return ["operation", provider, key, operation_id]


def _account_facts(provider: str, key: str, account: str | None) -> list[Any]:
    return ["account", provider, key, account]


@attrs.frozen
class RowFacts:
    """What a live row says about its payout, as read back (its recipient put back)."""

    provider: str
    key: str
    order_id: str | None
    params_hash: str
    params: Mapping[str, Any] = attrs.field(repr=False)
    recipient: str | None = attrs.field(repr=False)
    signature: str | None
    operation_id: str | None
    operation_signature: str | None
    provider_account: str | None
    account_signature: str | None


@attrs.frozen
class Resealed:
    """A live row's values under the ledger's current key (``Recipients.reseal``)."""

    params_hash: str
    recipient: str | None = attrs.field(repr=False)
    signature: str | None
    operation_signature: str | None
    account_signature: str | None

    def values(self) -> tuple[str | None, ...]:
        """The values in the order of the columns they go to: ``params_hash``,
        ``recipient``, ``signature``, ``operation_signature``, ``account_signature``."""
        return (
            self.params_hash,
            self.recipient,
            self.signature,
            self.operation_signature,
            self.account_signature,
        )


class Recipients:
    """One ledger's rules for recipients and fingerprints, with its key or without."""

    def __init__(self, encryption_key: EncryptionKey | None = None) -> None:
        ring = _key_ring(encryption_key)
        #: The key that seals and signs (the ring's first), and every key that reads.
        self._key = ring[0] if ring else None
        self._ring = {key.id: key for key in ring}

    def __repr__(self) -> str:
        return f"Recipients({'key ' + self._key.id if self._key else 'no key'})"

    @property
    def key_id(self) -> str | None:
        """The current key's id (4 bytes, hex), or None without a key."""
        return None if self._key is None else self._key.id

    @property
    def key_ids(self) -> list[str]:
        """The ids of every key of the ring, the current one first."""
        return list(self._ring)

    # -- fingerprints ---------------------------------------------------------------

    def params_hash(self, params: Mapping[str, Any]) -> str:
        """The fingerprint ``begin`` records: keyed when there is a key."""
        return plain_hash(params) if self._key is None else self._key.digest(params)

    def accepted_hashes(self, digest: str, params: Mapping[str, Any]) -> list[str]:
        """The fingerprints a live row begun with ``params`` may hold: ``digest``, one
        keyed by any key of the ring (not yet rotated), and a plain one written before
        this ledger had its key."""
        found = [digest, *(key.digest(params) for key in self._ring.values())]
        found.append(plain_hash(params))
        return list(dict.fromkeys(found))

    def check_digest(self, digest: str) -> None:
        """A keyed ledger records keyed fingerprints only (a plain one could be brute-
        forced back to the card number)."""
        if self._key is not None and not digest.startswith(_HMAC):
            raise ValueError(
                "this ledger has an encryption key: pass ledger.params_hash(params) to begin"
            )

    def matches(
        self,
        stored_hash: str,
        stored_params: Mapping[str, Any],
        params: Mapping[str, Any],
        *,
        row: str,
        digest: str | None = None,
    ) -> bool:
        """Whether a row holding ``stored_hash`` (and, read back, ``stored_params``) was
        begun with ``params``. ``LedgerKeyError`` when only another key can tell."""
        if digest is not None and stored_hash == digest:
            return True
        if stored_hash == MASKED_HASH:
            return _masked_match(stored_params, params)
        if stored_hash.startswith(_HMAC):
            key_id = stored_hash[len(_HMAC) :].split(":", 1)[0]
            key = self._own_key(key_id, row, "fingerprint")
            return hmac.compare_digest(stored_hash, key.digest(params))
        return hmac.compare_digest(stored_hash, plain_hash(params))

    # -- the recipient ------------------------------------------------------------------

    def store(
        self,
        provider: str,
        key: str,
        params: Mapping[str, Any],
        *,
        order_id: str | None,
        account: str | None = None,
    ) -> Stored:
        """How a new row keeps ``params``: masked, the recipient apart (sealed when
        there is a key), and (with a key) the row's signature and that of its provider
        ``account``."""
        signature = self.sign_row(provider, key, order_id, params)
        account_signature = self.sign_account(provider, key, account)
        values = {}
        for name in RECIPIENT_FIELDS:  # (a loop: no function made per call)
            if isinstance(value := params.get(name), str):
                values[name] = value
        if not values:
            return Stored(dict(params), None, signature, account_signature)
        text = canonical_json(values).decode()
        if self._key is not None:
            text = self._key.seal(text, _context(provider, key))
        return Stored(mask_params(params), text, signature, account_signature)

    # -- row signatures (DESIGN rule 14) -------------------------------------------------

    def sign_row(
        self, provider: str, key: str, order_id: str | None, params: Mapping[str, Any]
    ) -> str | None:
        """The signature of a row begun with ``params`` (full, recipient included), or
        None without a key."""
        if self._key is None:
            return None
        return self._key.sign(_row_facts(provider, key, order_id, params))

    def sign_operation(self, provider: str, key: str, operation_id: str | None) -> str | None:
        """The signature of a row's operation id (None without a key or an id)."""
        if self._key is None or operation_id is None:
            return None
        return self._key.sign(_operation_facts(provider, key, operation_id))

    def sign_account(self, provider: str, key: str, account: str | None) -> str | None:
        """The signature of the provider account a row was sent through (None too:
        "no account" is a fact a row may not lose), or None without a key."""
        if self._key is None:
            return None
        return self._key.sign(_account_facts(provider, key, account))

    def authenticate(self, row: RowFacts) -> str | None:
        """Why the live ``row`` must not move money -- altered outside payout-async, or
        signed with a key this ledger lacks -- or None when it may."""
        if self._key is None:
            return self._check_plain(
                _row(row.provider, row.key), row.params_hash, row.signature, row.params
            )
        if is_clear(row.recipient):
            return f"{ALTERED}: its recipient is in clear in a ledger with a key"
        if row.signature is None:
            return (
                f"{ALTERED}: it carries no signature (rows written before the ledger had "
                "its key are signed by `payout-async ledger-key rotate`)"
            )
        facts = _row_facts(row.provider, row.key, row.order_id, row.params)
        problem = self._check_signature(row.signature, facts)
        if problem is None and row.operation_id is not None:
            if row.operation_signature is None:
                return f"{ALTERED}: its operation id is not signed"
            operation = _operation_facts(row.provider, row.key, row.operation_id)
            problem = self._check_signature(row.operation_signature, operation)
        if problem is None:
            if row.account_signature is None:
                return (
                    f"{ALTERED}: its provider account is not signed (rows written before "
                    "accounts were signed are signed by `payout-async ledger-key rotate`)"
                )
            account = _account_facts(row.provider, row.key, row.provider_account)
            problem = self._check_signature(row.account_signature, account)
        return problem or self._fingerprint_problem(row.params_hash, row.params)

    def reseal(self, row: RowFacts) -> Resealed | str:
        """``row``'s values under the current key -- recipient sealed, fingerprint keyed,
        signatures made -- or why not. A signed row must pass ``authenticate`` (its
        provider account, if never signed -- a row from before accounts were -- is
        signed as found); an unsigned one (clear, or written before rows were signed)
        its fingerprint."""
        assert self._key is not None, "resealing needs a key"
        if row.signature is not None:
            if row.account_signature is None:
                signed = self.sign_account(row.provider, row.key, row.provider_account)
                row = attrs.evolve(row, account_signature=signed)
            problem = self.authenticate(row)
            if problem is not None:
                return problem
        elif (problem := self._fingerprint_problem(row.params_hash, row.params)) is not None:
            return problem
        stored = self.store(
            row.provider, row.key, row.params, order_id=row.order_id, account=row.provider_account
        )
        return Resealed(
            params_hash=self.params_hash(row.params),
            recipient=stored.recipient,
            signature=stored.signature,
            operation_signature=self.sign_operation(row.provider, row.key, row.operation_id),
            account_signature=stored.account_signature,
        )

    def check_begun(
        self,
        provider: str,
        key: str,
        params_hash: str,
        signature: str | None,
        params: Mapping[str, Any],
    ) -> str | None:
        """``authenticate`` of a live row this ledger has just written from ``params``
        (``store`` sealed its recipient and made its ``signature`` from them), where
        only the fingerprint ``params_hash``, given by the caller, is left to check."""
        if self._key is None:
            return self._check_plain(_row(provider, key), params_hash, signature, params)
        return self._fingerprint_problem(params_hash, params)

    def _check_plain(
        self, row: str, params_hash: str, signature: str | None, params: Mapping[str, Any]
    ) -> str | None:
        if params_hash.startswith(_HMAC) or signature is not None:
            return (
                f"{row} was written with an encryption key, and this ledger has none: "
                "give it that key"
            )
        return self._fingerprint_problem(params_hash, params)

    def _check_signature(self, signature: str, facts: list[Any]) -> str | None:
        key_id = signature[len(_SIGNED) :].split(":", 1)[0]
        if not signature.startswith(_SIGNED):
            return f"{ALTERED}: its signature is malformed"
        key = self._ring.get(key_id)
        if key is None:
            return (
                f"the row is signed with encryption key {key_id}, which this ledger does not "
                "have: give it that key"
            )
        if not hmac.compare_digest(signature, key.sign(facts)):
            return f"{ALTERED}: its signature does not match"
        return None

    def _fingerprint_problem(self, stored: str, params: Mapping[str, Any]) -> str | None:
        """Why ``stored`` is not the fingerprint of the full ``params`` (keyed by a key
        of the ring, or plain), or None when it is."""
        if stored.startswith(_HMAC):
            key = self._ring.get(stored[len(_HMAC) :].split(":", 1)[0])
            matches = key is not None and hmac.compare_digest(stored, key.digest(params))
        else:
            matches = hmac.compare_digest(stored, plain_hash(params))
        return None if matches else f"{ALTERED}: its fingerprint does not match its parameters"

    def load(
        self, provider: str, key: str, params: Mapping[str, Any], recipient: str | None
    ) -> dict[str, Any]:
        """The parameters a row was begun with: ``params`` with the recipient put back
        (a final row's stays masked). ``LedgerKeyError`` when it is sealed and this
        ledger has no key, another key, or the seal is broken."""
        restored = dict(params)
        if recipient is None:
            return restored
        text = recipient
        if recipient.startswith(_SEALED):
            text = self._unseal(provider, key, recipient[len(_SEALED) :])
        try:
            values = json.loads(text)
        except ValueError:
            values = None
        if not isinstance(values, dict):
            raise LedgerKeyError(f"the recipient of {_row(provider, key)} is unreadable")
        restored.update(values)
        return restored

    def _unseal(self, provider: str, key: str, sealed: str) -> str:
        key_id, _, payload = sealed.partition(":")
        own = self._own_key(key_id, _row(provider, key), "recipient")
        try:
            return own.unseal(payload, _context(provider, key))
        except (InvalidTag, ValueError, binascii.Error):
            raise LedgerKeyError(
                f"the recipient of {_row(provider, key)} does not decrypt with key {own.id}: "
                "the row was altered, or copied from another row"
            ) from None

    def _own_key(self, key_id: str, row: str, what: str) -> _Key:
        if key_id in self._ring:
            return self._ring[key_id]
        if self._key is None:
            raise LedgerKeyError(
                f"the {what} of {row} was written with an encryption key (key id {key_id}), "
                "and this ledger has none: give it that key (encryption_key=, the ledger "
                "URL's key_env, or PAYOUT_ASYNC_LEDGER_KEY)"
            )
        raise LedgerKeyError(
            f"the {what} of {row} was written with encryption key {key_id}, not with "
            f"this ledger's key {self._key.id}: give the ledger the key it was written with"
        )
