"""Comparing two shares: the two-proportion z-test (A/B variants, a broadcast against its holdout)."""
from __future__ import annotations

import math

Z_95 = 1.96  # |z| at or above this: the difference is significant at 95 %


def z_score(hits: int, total: int, other_hits: int, other_total: int) -> float:
    """How many standard errors ``hits/total`` is above ``other_hits/other_total`` (pooled); 0 when undefined."""
    if not total or not other_total:
        return 0.0
    pooled = (hits + other_hits) / (total + other_total)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / total + 1 / other_total))
    return (hits / total - other_hits / other_total) / spread if spread else 0.0
