"""A local emulator of the IntellectMoney and Enot payout APIs, with fault injection.

``Sandbox`` serves both providers at their real paths on 127.0.0.1 (``build_app`` for
embedding the application elsewhere), checks signatures and tokens, moves emulated
money, lets states progress with time, delivers Enot webhooks, misbehaves on demand
(``FaultKind``, by seeded probability or by script; ``Sandbox.script_inner_code``
for IntellectMoney's inner ``Result.State.Code``; ``Sandbox.script_error`` for an
error answer carrying a given message) and reports what it did
(``Sandbox.stats()``, ``Sandbox.duplicates()``, ``Sandbox.paid_per_payout()``,
``GET /_sandbox/stats``), records when each request arrived (``Sandbox.request_times``,
``peak_rate``), can enforce a rate limit per provider (answering 429) and be topped up
(``Sandbox.top_up``). ``SandboxConfig`` can also model what the providers'
documents leave open: IntellectMoney's state lag after an accepted execute and its
answer to a second execute, Enot's ``payoff/info`` lag, and answers that leave long
after the state they carry was read (``answer_delay``). ``Sandbox.foreign_payoff``
books a payoff another system made on the same Enot account, with its signed webhook.
"""

from ._app import build_app
from ._config import SandboxConfig, SandboxCredentials
from ._faults import DEFAULT_KINDS, MISLEADING, ROUTES, FaultKind, Faults
from ._server import Sandbox
from ._state import SandboxState, WebhookDelivery
from ._stats import Counts, Duplicate, EnotStats, IntellectMoneyStats, SandboxStats
from ._traffic import peak_rate

__all__ = [
    "DEFAULT_KINDS",
    "MISLEADING",
    "ROUTES",
    "Counts",
    "Duplicate",
    "EnotStats",
    "FaultKind",
    "Faults",
    "IntellectMoneyStats",
    "Sandbox",
    "SandboxConfig",
    "SandboxCredentials",
    "SandboxState",
    "SandboxStats",
    "WebhookDelivery",
    "build_app",
    "peak_rate",
]
