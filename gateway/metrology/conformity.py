"""Conformity decisions against specification limits (ILAC-G8, JJF 1094) — pure.

With ``m`` the margin of the value inside the limits (the smallest of ``y − lower``
and ``upper − y`` over the limits that are set; negative outside) and ``w`` the
guard band (the reading's expanded uncertainty ``U``, or a configured value):

=============  ===================================================================
rule           verdict
=============  ===================================================================
simple         ``pass`` if ``m ≥ 0``, else ``fail``
guarded        ``pass`` if ``m ≥ w``, else ``fail``
non_binary     ``pass`` if ``m ≥ w``; ``conditional_pass`` if ``0 ≤ m < w``;
               ``conditional_fail`` if ``−w ≤ m < 0``; ``fail`` if ``m < −w``
=============  ===================================================================

Limits are inclusive; comparisons allow a relative tolerance of 1e-9 so a value
exactly on a limit computed in floating point lands on the inclusive side.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from gateway.config.models.metrology import DecisionRule, SpecLimits

__all__ = ["Decider", "Decision", "Verdict", "decide"]


class Verdict(StrEnum):
    PASS = "pass"
    CONDITIONAL_PASS = "conditional_pass"
    CONDITIONAL_FAIL = "conditional_fail"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    margin: float
    """Distance inside the limits (negative outside)."""
    guard: float
    """Guard band actually used."""
    limit: float
    """The limit nearest to the value (the one that decided)."""
    uncertainty_unknown: bool = False


class Decider:
    """A compiled :class:`SpecLimits`; call :meth:`decide` per reading."""

    def __init__(self, spec: SpecLimits) -> None:
        self.lower = spec.lower
        self.upper = spec.upper
        self.rule = spec.rule
        self.guard_is_u = spec.guard == "U"
        self.guard = 0.0 if isinstance(spec.guard, str) else float(spec.guard)
        scale = max(1.0, *(abs(v) for v in (spec.lower, spec.upper) if v is not None))
        self.eps = 1e-9 * scale

    def decide(self, y: float, U: float | None) -> Decision:
        """The verdict for value ``y`` with expanded uncertainty ``U`` (None if unknown)."""
        margin = float("inf")
        limit = 0.0
        if self.lower is not None:
            margin, limit = y - self.lower, self.lower
        if self.upper is not None and self.upper - y < margin:
            margin, limit = self.upper - y, self.upper
        unknown = False
        if self.guard_is_u and self.rule is not DecisionRule.SIMPLE:
            if U is None:
                w, unknown = 0.0, True
            else:
                w = U
        else:
            w = self.guard
        eps = self.eps
        if self.rule is DecisionRule.SIMPLE:
            verdict = Verdict.PASS if margin >= -eps else Verdict.FAIL
        elif self.rule is DecisionRule.GUARDED:
            verdict = Verdict.PASS if margin >= w - eps else Verdict.FAIL
        elif margin >= w - eps:
            verdict = Verdict.PASS
        elif margin >= -eps:
            verdict = Verdict.CONDITIONAL_PASS
        elif margin >= -w - eps:
            verdict = Verdict.CONDITIONAL_FAIL
        else:
            verdict = Verdict.FAIL
        return Decision(verdict, margin, w, limit, unknown)


def decide(spec: SpecLimits, y: float, U: float | None) -> Verdict:
    """One-off decision (compiles ``spec`` each call; use :class:`Decider` on hot paths)."""
    return Decider(spec).decide(y, U).verdict
