"""Summary statistics over seeds and the paired significance test between two models.

Runs of two models with the same seed share the data split (RecBole draws a random split from the seed; a
fixed split such as TikTok's is shared anyway), so per-seed results are paired and the test is the paired
two-sided t-test over seeds (``scipy.stats.ttest_rel``). It assumes roughly normal per-seed differences;
with fewer than 5 seeds it has little power, and with 1 seed there is no test at all.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Mapping, Sequence

from scipy import stats as scipy_stats

TEST_NAME = "paired two-sided t-test over seeds (scipy.stats.ttest_rel)"
MIN_SEEDS_FOR_TEST = 2
RECOMMENDED_SEEDS = 5
ALPHA = 0.05


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation (ddof 1; None for one value) and count of some values."""

    mean: float | None
    std: float | None
    n: int

    def text(self, digits: int = 4) -> str:
        """``"0.1234 ± 0.0012"``, ``"0.1234"`` for one value, ``"-"`` for none."""
        if self.mean is None:
            return "-"
        if self.std is None:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


def summarize(values: Sequence[float | None]) -> Summary:
    """:class:`Summary` of the non-missing, finite values."""
    kept = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not kept:
        return Summary(None, None, 0)
    return Summary(statistics.mean(kept), statistics.stdev(kept) if len(kept) > 1 else None, len(kept))


@dataclass(frozen=True)
class PairedTest:
    """The paired test of ``reference`` against ``other`` on one metric.

    Attributes
    ----------
    n : int
        Seeds where both models have a result.
    mean_diff : float or None
        Mean of ``reference - other`` over those seeds.
    ci_low, ci_high : float or None
        95% confidence interval of the mean difference (t distribution); None for n < 2.
    t, p : float or None
        t statistic and two-sided p-value; None when the test cannot be computed (see ``note``).
    note : str
        Why there is no test, or a caution about few seeds; empty otherwise.
    """

    metric: str
    reference: str
    other: str
    n: int
    mean_diff: float | None
    ci_low: float | None
    ci_high: float | None
    t: float | None
    p: float | None
    note: str

    @property
    def significant(self) -> bool:
        """p < :data:`ALPHA`."""
        return self.p is not None and self.p < ALPHA


def paired_test(
    metric: str, reference: str, other: str, ref_by_seed: Mapping[int, float], other_by_seed: Mapping[int, float]
) -> PairedTest:
    """Paired two-sided t-test of ``reference`` against ``other`` over the seeds both have.

    Parameters
    ----------
    metric, reference, other : str
        Names, carried into the result.
    ref_by_seed, other_by_seed : Mapping[int, float]
        Metric value per seed; seeds present in only one are ignored.
    """
    seeds = sorted(set(ref_by_seed) & set(other_by_seed))
    diffs = [float(ref_by_seed[s]) - float(other_by_seed[s]) for s in seeds]
    n = len(diffs)
    if n == 0:
        return PairedTest(metric, reference, other, 0, None, None, None, None, None, "no seed with results of both")
    mean_diff = statistics.mean(diffs)
    if n < MIN_SEEDS_FOR_TEST:
        note = f"n = {n} paired seed: too few for a test (need at least {MIN_SEEDS_FOR_TEST}, {RECOMMENDED_SEEDS}+ advised)"
        return PairedTest(metric, reference, other, n, mean_diff, None, None, None, None, note)
    sd = statistics.stdev(diffs)
    if sd == 0.0:
        note = "the difference is the same on every seed (zero variance): the t-test is undefined"
        return PairedTest(metric, reference, other, n, mean_diff, mean_diff, mean_diff, None, None, note)
    half = scipy_stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    result = scipy_stats.ttest_rel([ref_by_seed[s] for s in seeds], [other_by_seed[s] for s in seeds])
    note = f"only {n} seeds: little power, a non-significant p says little" if n < RECOMMENDED_SEEDS else ""
    return PairedTest(
        metric, reference, other, n, mean_diff, mean_diff - half, mean_diff + half,
        float(result.statistic), float(result.pvalue), note,
    )
