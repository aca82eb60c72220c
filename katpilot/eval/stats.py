"""The numbers of a report: accuracy with its interval, tokens, latency, and auto against on and off.

Written by hand (a few formulas, no scipy): intervals are closed forms, so a report is the same on
every machine and a test can check it to the last digit.
- accuracy: Wilson score interval (sound at 0 and 100% and for small n, unlike the normal one);
- auto against on/off, per item paired (the same items under both):
  - accuracy difference: mean of per-item differences +- z * sd / sqrt(n);
  - token ratio (sum auto / sum other): delta method on the log of the ratio of means.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from katpilot.eval.records import Record

Z95 = 1.959963984540054  # the two-sided 95% normal quantile
# Below this many pairs the normal approximations of the paired intervals mislead (a collapsed or
# +-196-point interval), so none is given.
MIN_PAIRS = 10

SEGMENTS = ("judge", "think", "answer", "other")


@dataclass(frozen=True)
class Interval:
    low: float
    high: float


def wilson(successes: int, n: int, z: float = Z95) -> Interval | None:
    """The Wilson score interval of a proportion; None for no trials."""
    if n <= 0:
        return None
    p = successes / n
    denominator = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    low = 0.0 if successes == 0 else max(0.0, center - half)  # exact at the ends: no rounding error past p
    high = 1.0 if successes == n else min(1.0, center + half)
    return Interval(low, high)


def paired_difference(a: Sequence[float], b: Sequence[float], z: float = Z95) -> tuple[float, Interval | None]:
    """mean(a - b) over paired values and its normal interval (None below MIN_PAIRS pairs).

    The interval is clipped to the possible range of a difference of proportions, [-1, 1].
    """
    if len(a) != len(b) or not a:
        raise ValueError("paired_difference needs two equally long, non-empty sequences")
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    mean = statistics.fmean(diffs)
    if len(diffs) < MIN_PAIRS:
        return mean, None
    half = z * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return mean, Interval(max(-1.0, mean - half), min(1.0, mean + half))


def ratio_of_sums(a: Sequence[float], b: Sequence[float], z: float = Z95) -> tuple[float, Interval | None] | None:
    """sum(a) / sum(b) over paired values with a delta-method interval; None when sum(b) is 0.

    var(log(mean a / mean b)) ~ var(a)/(n ma^2) + var(b)/(n mb^2) - 2 cov(a, b)/(n ma mb). No interval
    below MIN_PAIRS pairs or when a sum is 0 (the log is undefined).
    """
    if len(a) != len(b) or not a:
        raise ValueError("ratio_of_sums needs two equally long, non-empty sequences")
    total_a, total_b = math.fsum(a), math.fsum(b)
    if total_b == 0:
        return None
    ratio = total_a / total_b
    n = len(a)
    if n < MIN_PAIRS or total_a == 0:
        return ratio, None
    ma, mb = total_a / n, total_b / n
    var_a, var_b = statistics.variance(a), statistics.variance(b)
    cov = statistics.covariance(a, b)
    var_log = var_a / (n * ma * ma) + var_b / (n * mb * mb) - 2 * cov / (n * ma * mb)
    half = z * math.sqrt(max(0.0, var_log))
    return ratio, Interval(ratio * math.exp(-half), ratio * math.exp(half))


@dataclass(frozen=True)
class ConditionSummary:
    """The aggregate of one condition (a mode, and for auto a threshold) over its items."""

    condition: str  # "on", "off" or "auto@0.50"
    think: str
    threshold: float | None
    n: int
    correct: int
    accuracy: float
    accuracy_ci: Interval | None
    think_on_rate: float
    decided_by_model_rate: float
    mean_tokens: float  # completion tokens per item (all segments)
    mean_segment_tokens: dict[str, float]  # judge, think, answer, other
    mean_latency_s: float
    median_latency_s: float


def summarise(condition: str, think: str, threshold: float | None, records: Sequence[Record]) -> ConditionSummary:
    """One condition's summary from its per-item records."""
    n = len(records)
    if n == 0:
        raise ValueError(f"no records for {condition}")
    correct = sum(1 for r in records if r.passed)
    latency = [r.latency_s for r in records]
    return ConditionSummary(
        condition=condition,
        think=think,
        threshold=threshold,
        n=n,
        correct=correct,
        accuracy=correct / n,
        accuracy_ci=wilson(correct, n),
        think_on_rate=sum(1 for r in records if r.mode == "on") / n,
        decided_by_model_rate=sum(1 for r in records if r.decided_by == "model") / n,
        mean_tokens=statistics.fmean(r.tokens["completion"] for r in records),
        mean_segment_tokens={s: statistics.fmean(r.tokens[s] for r in records) for s in SEGMENTS},
        mean_latency_s=statistics.fmean(latency),
        median_latency_s=statistics.median(latency),
    )


@dataclass(frozen=True)
class Comparison:
    """auto at one threshold against a forced mode, over the items both have."""

    auto: str
    against: str
    n: int
    token_ratio: float | None  # auto tokens / the other's tokens (None when the other used none)
    token_ratio_ci: Interval | None
    accuracy_difference: float  # auto accuracy - the other's, on the paired items
    accuracy_difference_ci: Interval | None


def compare(
    auto: str, against: str, auto_records: Sequence[Record], other_records: Sequence[Record]
) -> Comparison | None:
    """Paired comparison by item id; None when the two share no item."""
    others = {r.item: r for r in other_records}
    pairs = [(r, others[r.item]) for r in auto_records if r.item in others]
    if not pairs:
        return None
    ratio = ratio_of_sums(
        [float(a.tokens["completion"]) for a, _ in pairs], [float(b.tokens["completion"]) for _, b in pairs]
    )
    difference, difference_ci = paired_difference(
        [float(a.passed) for a, _ in pairs], [float(b.passed) for _, b in pairs]
    )
    return Comparison(
        auto=auto,
        against=against,
        n=len(pairs),
        token_ratio=ratio[0] if ratio else None,
        token_ratio_ci=ratio[1] if ratio else None,
        accuracy_difference=difference,
        accuracy_difference_ci=difference_ci,
    )
