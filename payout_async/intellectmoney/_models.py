"""IntellectMoney results and the cattrs converter that reads them off the wire."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, override

from .._decode import UnreadableError, check_about
from .._numbers import clip

__all__ = [
    "MassPaymentOperationState",
    "PayoutMethod",
    "PayoutOperation",
    "converter",
    "inner_state",
    "operation_code",
    "parse_operation",
]


class MassPaymentOperationState(enum.StrEnum):
    """The documented states of a payout operation, plus ``UNKNOWN`` for any other."""

    CREATED = "Created"
    SENT_TO_BANK = "SentToBank"
    IN_PROCESS = "InProcess"
    COMPLETED = "Completed"
    FAILED = "Failed"
    NOT_ENOUGH_MONEY = "NotEnoughMoney"
    DELETED = "Deleted"
    UNKNOWN = "Unknown"

    @classmethod
    def parse(cls, value: object) -> MassPaymentOperationState:
        """The state named by ``value``; ``UNKNOWN`` for anything undocumented."""
        if isinstance(value, str):
            state = _STATES.get(value)
            if state is not None:
                return state
        return cls.UNKNOWN

    @property
    def is_final(self) -> bool:
        """True for Completed, Failed, NotEnoughMoney and Deleted."""
        return self in _FINAL


_STATES = {state.value: state for state in MassPaymentOperationState}
del _STATES["Unknown"]
_FINAL = frozenset(
    {
        MassPaymentOperationState.COMPLETED,
        MassPaymentOperationState.FAILED,
        MassPaymentOperationState.NOT_ENOUGH_MONEY,
        MassPaymentOperationState.DELETED,
    }
)


class PayoutMethod(enum.Enum):
    """Where the money goes; the legacy API sends ``legacy_index`` as ProviderType."""

    BANK_CARD = "OutBankCard"
    SBP = "OutSbp"
    QIWI = "QiwiWallet"

    @property
    def legacy_index(self) -> int:
        """The legacy ``ProviderType`` enum index (0 BankCardRussia, 1 QiwiWallet, 2 Sbp)."""
        return _LEGACY_INDEX[self]


_LEGACY_INDEX = {PayoutMethod.BANK_CARD: 0, PayoutMethod.QIWI: 1, PayoutMethod.SBP: 2}


@attrs.frozen(slots=False)
class PayoutOperation:
    """A payout operation as IntellectMoney last described it.

    ``state`` is ``UNKNOWN`` when the provider sent an undocumented value; the value
    itself is kept in ``raw_state``. ``accepted`` is True when the provider answered
    ``OperationState.Code`` 1 ("accepted, still processing"): ask the state again.
    ``warning`` is the provider's ``Result.State.Desc`` when the result's own code was 1
    (WithWarn: done, with a warning), else None. ``raw`` is the whole decoded answer.
    """

    operation_id: str | None
    raw_state: str | None = None
    error_message: str | None = None
    api_operation_id: str | None = None
    accepted: bool = False
    warning: str | None = None
    raw: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)

    @property
    def state(self) -> MassPaymentOperationState:
        """The operation's state; ``UNKNOWN`` when absent or undocumented."""
        return MassPaymentOperationState.parse(self.raw_state)

    @property
    def is_final(self) -> bool:
        """True when the state is final: nothing will change it any more."""
        return self.state.is_final

    def __repr__(self) -> str:
        return (
            f"PayoutOperation(operation_id={self.operation_id!r}, state={self.state.value}, "
            f"raw_state={self.raw_state!r}, error_message={self.error_message!r})"
        )


def _passthrough(value: Any, _: Any) -> Any:
    return value


converter = cattrs.Converter()
converter.register_structure_hook(PayoutOperation, make_dict_structure_fn(
    PayoutOperation,
    converter,
    operation_id=override(rename="PayoutOperationId"),
    raw_state=override(rename="PayoutOperationState"),
    error_message=override(rename="ErrorMessage"),
    api_operation_id=override(rename="OperationId"),
    raw=override(struct_hook=_passthrough),
))  # fmt: skip


def parse_operation(envelope: Mapping[str, Any], *, asked_id: str | None = None) -> PayoutOperation:
    """Build a ``PayoutOperation`` from a successful envelope (Code 0 or 1) -- of a call
    about operation ``asked_id``, if given: an answer naming another operation is
    unreadable (``check_about``), one naming none is taken as that operation's.

    Every field is a string, None or a bool once read here, so the model is built
    directly (what ``converter`` would do with them, without its per-call cost)."""
    result = envelope.get("Result")
    fields = result if isinstance(result, dict) else {}
    named = _str_or_none(fields.get("PayoutOperationId"))
    if asked_id is not None:
        check_about("PayoutOperationId", asked_id, named, any_case=True)
    return PayoutOperation(
        operation_id=named or asked_id,
        raw_state=_str_or_none(fields.get("PayoutOperationState")),
        error_message=_str_or_none(fields.get("ErrorMessage")),
        api_operation_id=_str_or_none(envelope.get("OperationId")),
        accepted=operation_code(envelope) == 1,
        warning=_warning(envelope),
        raw=envelope,
    )


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)


def operation_code(envelope: Mapping[str, Any]) -> int | None:
    """``OperationState.Code`` of an envelope, or None when it is missing."""
    state = envelope.get("OperationState")
    code = state.get("Code") if isinstance(state, dict) else None
    return code if isinstance(code, int) and not isinstance(code, bool) else None


def inner_state(envelope: Mapping[str, Any]) -> tuple[int | None, str | None]:
    """``Result.State``'s ``(Code, Desc)``: ``(None, None)`` when the result carries no
    state. Raises ``UnreadableError`` when a state is there but its code is not an
    integer (0 Success, 1 WithWarn, 2 NoAuth; other values pass through)."""
    result = envelope.get("Result")
    state = result.get("State") if isinstance(result, dict) else None
    if not isinstance(state, dict):
        return None, None
    code = state.get("Code")
    desc = state.get("Desc")
    text = None if desc is None else clip(str(desc), 500)
    if code is None:
        return None, text
    if isinstance(code, str) and code.strip().isascii() and code.strip().isdigit():
        code = int(code.strip()[:9])
    if not isinstance(code, int) or isinstance(code, bool):
        raise UnreadableError("Result.State.Code is not an integer")
    return code, text


def _warning(envelope: Mapping[str, Any]) -> str | None:
    code, desc = inner_state(envelope)
    if code != 1:
        return None
    return desc or "Result.State.Code 1 (WithWarn) without a Desc"
