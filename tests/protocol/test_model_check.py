"""The model check of the payout protocol: the new rules break no invariant in any
reachable state, and each old rule substituted alone breaks the one it guarded.

Every count and counterexample is in the assertion messages, and each check prints
its summary (shown with ``-rA``)."""

from __future__ import annotations

import pytest

from tests.protocol.model import MUTATIONS, Config, Result, check, main

#: The new rules' full search explores about 2 x 10^5 states; fewer means the model
#: lost behaviours (a test that passes for nothing).
FLOOR = 100_000

#: The invariant each mutation must break, and why (with the environment it needs).
EXPECTED = {
    "old-fence": ("S1", "a clock step expires the lease; the old holder's create still leaves"),
    "old-evidence": ("S1", "a late 'not found' counts, read before the payoff showed"),
    "old-webhook": ("S2", "a foreign webhook settles the row: succeeded, nothing paid"),
    "old-liveness": ("S1", "a live holder taken for dead; the taker does not wait"),
    "old-takeover": ("S1", "a clock step zeroes the lease remainder the taker waits"),
    "old-refusal": ("S1", "a processed 408/422 ends refused; the next create looks nothing up"),
    "error-dated": ("S1", "an early disconnect: the request lands after the window began"),
    # Only L: the search stops at a safety violation and checks L only without one, so
    # this also shows that a wrong liveness verdict alone cannot pay twice.
    "wrong-oracle": ("L", "drives take each other's row forever (safety still holds)"),
}


def report(result: Result) -> str:
    return "\n".join([result.summary(), *(v.render() for v in result.violations)])


def test_the_new_rules_break_no_invariant_in_any_reachable_state() -> None:
    result = check(Config())
    print(report(result))
    assert result.liveness_checked, report(result)
    assert result.violations == [], report(result)
    assert result.states > FLOOR, report(result)


def test_every_mutation_has_an_expected_violation() -> None:
    assert set(EXPECTED) == set(MUTATIONS)


@pytest.mark.parametrize("rule", sorted(MUTATIONS))
def test_each_old_rule_alone_is_caught(rule: str) -> None:
    # No crash and no cancellation: each old rule breaks without them (faster, and
    # a stronger finding); ``old-fence`` and ``old-takeover`` need the clock step.
    result = check(Config(rules=frozenset({rule}), crashes=0, cancels=0))
    print(report(result))
    invariant, why = EXPECTED[rule]
    assert [v.invariant for v in result.violations] == [invariant], f"{why}\n{report(result)}"
    violation = result.violations[0]
    assert violation.steps or violation.loop, report(result)
    if invariant == "L":
        assert result.liveness_checked and violation.loop, report(result)


@pytest.mark.parametrize(
    ("assumption", "pause", "lag"),
    [("A2: a pause after the fence of margin + 1", 2, None), ("A3: hidden for grace + 1", None, 3)],
)
def test_the_new_rules_pay_twice_one_tick_past_an_assumption(
    assumption: str, pause: int | None, lag: int | None
) -> None:
    # The bounds are tight: safe at the bound (above), paid twice one tick past it.
    result = check(Config(crashes=0, cancels=0, pause=pause, lag=lag))
    print(assumption, report(result), sep="\n")
    assert [v.invariant for v in result.violations] == ["S1"], f"{assumption}\n{report(result)}"


def test_a_bounded_run_says_liveness_was_not_checked() -> None:
    result = check(Config(bound=6))
    assert not result.liveness_checked and result.violations == [], report(result)
    assert 0 < result.states < FLOOR, report(result)


def test_the_command_line_prints_the_counterexample_as_numbered_steps(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--rules", "old-webhook"]) == 1
    out = capsys.readouterr().out
    assert "S2 violated" in out and "  1. a FOREIGN webhook" in out, out
    assert main(["--rules", "new", "--bound", "4"]) == 0
    assert "rules=new:" in capsys.readouterr().out
