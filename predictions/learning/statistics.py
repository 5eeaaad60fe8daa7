"""The A/B decision's statistics: a Bayesian Beta-Binomial comparison of two live top-1
rates (docs/model/learning.md). Pure arithmetic, no Django."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Arm:
    """One side of the test: ``reviewed`` reviews of its predictions, ``right`` of them confirmed."""

    reviewed: int
    right: int

    @property
    def top1(self) -> float | None:
        return self.right / self.reviewed if self.reviewed else None


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def probability_better(candidate: Arm, active: Arm) -> float:
    """P(candidate's top-1 > active's) with a uniform Beta(1, 1) prior on each rate, so each
    posterior is Beta(1 + right, 1 + wrong). Exact (Evan Miller's closed form: a sum over
    the candidate's integer alpha), no sampling, the same answer every time."""
    alpha_c, beta_c = 1 + candidate.right, 1 + candidate.reviewed - candidate.right
    alpha_a, beta_a = 1 + active.right, 1 + active.reviewed - active.right
    total = 0.0
    for i in range(alpha_c):
        total += math.exp(
            _log_beta(alpha_a + i, beta_a + beta_c)
            - math.log(beta_c + i)
            - _log_beta(1 + i, beta_c)
            - _log_beta(alpha_a, beta_a)
        )
    return min(max(total, 0.0), 1.0)
