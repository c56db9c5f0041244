"""Uncertainty over seeds: Student-t intervals of a mean, and two means compared by the test the
design allows: paired over seeds where the two sides' seeds pair, Welch's t-test where nothing pairs.

The study reports every figure as a mean over independent seeds with its 95 % interval. A seed
fixes a run's initialisation and batch order, and the batches do not depend on the encoder: an
encoder's seed s and a label oracle's seed s (or another encoder's) see identical batches, so their
difference is paired and the paired t-test (n - 1 degrees of freedom over the differences) has the
power the design already bought. Where seeds do not pair (different seed lists, or values without
seeds), Welch's t-test (unequal variances; Welch-Satterthwaite degrees of freedom) compares them.
Two samples without spread (or paired differences without spread) have no test: the answer is
None, "not applicable", never p = 0. Few seeds are the rule (3 by default), so the t distribution, not the normal one, sets
the widths: with 3 seeds the 95 % interval is the mean +- 4.30 standard errors.

The t distribution's CDF is computed here rather than taken from SciPy, which the project does
not depend on: with ``t = sqrt(nu) tan(theta)`` the density in ``theta`` is proportional to
``cos(theta) ** (nu - 1)`` on (-pi/2, pi/2), a smooth integrand that Gauss-Legendre quadrature
integrates to ~1e-12 for any real ``nu >= 1``; quantiles follow by bisection. Tests check it
against published table values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

LEVEL = 0.95


@lru_cache(maxsize=1)
def _nodes(n: int = 256) -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.legendre.leggauss(n)


def _mass(nu: float, lo: float, hi: float) -> float:
    """Integral of cos(theta) ** (nu - 1) over [lo, hi] (a sub-interval of [-pi/2, pi/2])."""
    x, w = _nodes()
    theta = 0.5 * (hi - lo) * x + 0.5 * (hi + lo)
    return float(0.5 * (hi - lo) * np.sum(w * np.cos(theta) ** (nu - 1.0)))


def t_cdf(t: float, nu: float) -> float:
    """P(T <= t) for Student's t with ``nu`` >= 1 degrees of freedom."""
    if not nu >= 1.0:
        raise ValueError(f"degrees of freedom must be at least 1, got {nu}")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    theta = abs(math.atan(t / math.sqrt(nu)))
    # the integral over [0, pi/2] in closed form: sqrt(pi) Gamma(nu / 2) / (2 Gamma((nu + 1) / 2))
    half = math.exp(0.5 * math.log(math.pi) + math.lgamma(nu / 2) - math.lgamma((nu + 1) / 2)) / 2
    if theta <= math.pi / 4:
        upper = 0.5 - 0.5 * _mass(nu, 0.0, theta) / half  # P(T > |t|)
    else:  # far tails: integrate the tail itself, so a small p keeps its relative accuracy
        upper = 0.5 * _mass(nu, theta, math.pi / 2) / half
    return 1.0 - upper if t >= 0 else upper


def t_quantile(p: float, nu: float) -> float:
    """The ``p`` quantile of Student's t with ``nu`` degrees of freedom (bisection on :func:`t_cdf`)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must lie in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, nu)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, nu) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, nu) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class Interval:
    """A mean over ``n`` seeds with its Student-t interval (``low``, ``high``) at ``level``;
    without at least 2 finite values the interval is undefined (NaN)."""

    mean: float
    low: float
    high: float
    n: int
    std: float
    level: float = LEVEL

    def overlaps(self, other: "Interval") -> bool:
        return not (self.high < other.low or other.high < self.low)

    def text(self, digits: int = 4) -> str:
        return interval_text(self.to_dict(), digits)

    def to_dict(self) -> dict:
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n, "std": self.std, "level": self.level}


def interval_text(iv: Mapping | None, digits: int = 4, with_n: bool = False) -> str:
    """``mean (low, high)`` of an interval as stored (:meth:`Interval.to_dict`, NaN or None where
    undefined): ``mean (1 seed)`` without an interval, "—" without a value; ``with_n`` adds the seeds."""
    def number(v) -> float | None:
        return None if v is None or not math.isfinite(float(v)) else float(v)

    mean = number((iv or {}).get("mean"))
    if mean is None:
        return "—"
    low, high = number(iv.get("low")), number(iv.get("high"))
    if low is None or high is None:
        return f"{mean:.{digits}f} (1 seed)"
    return f"{mean:.{digits}f} ({low:.{digits}f}, {high:.{digits}f})" + (f", {iv.get('n')} seeds" if with_n else "")


def mean_interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    """Mean of the finite ``values`` and its two-sided Student-t interval: mean +- t_{(1+level)/2, n-1}
    * s / sqrt(n), ``s`` the sample standard deviation (ddof 1)."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(float(v))], dtype=np.float64)
    n = len(x)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, math.nan, level)
    mean = float(x.mean())
    if n < 2:
        return Interval(mean, math.nan, math.nan, 1, math.nan, level)
    s = float(x.std(ddof=1))
    half = t_quantile(0.5 + level / 2, n - 1) * s / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, s, level)


@dataclass(frozen=True)
class Welch:
    """Welch's t-test of mean(a) - mean(b): the statistic, its degrees of freedom and the two-sided p."""

    diff: float
    t: float
    df: float
    p: float


def welch(a: Sequence[float], b: Sequence[float]) -> Welch | None:
    """Welch's unequal-variance t-test; None when either side has fewer than 2 finite values, or
    when neither side has any spread (no test applies)."""
    x = np.asarray([v for v in a if v is not None and math.isfinite(float(v))], dtype=np.float64)
    y = np.asarray([v for v in b if v is not None and math.isfinite(float(v))], dtype=np.float64)
    if len(x) < 2 or len(y) < 2:
        return None
    diff = float(x.mean() - y.mean())
    vx, vy = float(x.var(ddof=1)) / len(x), float(y.var(ddof=1)) / len(y)
    se2 = vx + vy
    if se2 == 0.0:
        return None
    t = diff / math.sqrt(se2)
    df = se2 ** 2 / ((vx ** 2 / (len(x) - 1) if vx else 0.0) + (vy ** 2 / (len(y) - 1) if vy else 0.0))
    df = max(df, 1.0)
    p = 2.0 * t_cdf(-abs(t), df)
    return Welch(diff, t, df, max(0.0, min(1.0, p)))


@dataclass(frozen=True)
class Comparison:
    """mean(a) - mean(b) tested: ``test`` is ``paired`` (over the seeds both sides share) or
    ``welch``; ``n`` the pairs, or the smaller side."""

    test: str
    diff: float
    t: float
    df: float
    p: float
    n: int

    def significant(self, alpha: float = 1 - LEVEL) -> bool:
        return self.p < alpha

    def to_dict(self) -> dict:
        return {"test": self.test, "diff": self.diff, "t": self.t, "df": self.df, "p": self.p, "n": self.n}


def _finite(v) -> bool:
    return v is not None and math.isfinite(float(v))


def paired(a: Mapping, b: Mapping) -> Comparison | None:
    """The paired t-test of ``a`` and ``b`` (seed -> value) over the seeds both have with finite
    values; None with fewer than 2 such seeds or when the differences have no spread."""
    seeds = [s for s in a if s in b and _finite(a[s]) and _finite(b[s])]
    if len(seeds) < 2:
        return None
    d = np.asarray([float(a[s]) - float(b[s]) for s in seeds], dtype=np.float64)
    sd = float(d.std(ddof=1))
    if sd == 0.0:
        return None
    n = len(d)
    t = float(d.mean()) / (sd / math.sqrt(n))
    p = 2.0 * t_cdf(-abs(t), n - 1)
    return Comparison("paired", float(d.mean()), t, n - 1, max(0.0, min(1.0, p)), n)


def compare(a: Mapping | Sequence[float], b: Mapping | Sequence[float]) -> Comparison | None:
    """``a`` against ``b``: paired when both are seed -> value mappings sharing at least 2 seeds,
    Welch's test on all their values otherwise; None where no test applies."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        shared = [s for s in a if s in b and _finite(a[s]) and _finite(b[s])]
        if len(shared) >= 2:
            return paired(a, b)
    va = list(a.values()) if isinstance(a, Mapping) else list(a)
    vb = list(b.values()) if isinstance(b, Mapping) else list(b)
    w = welch(va, vb)
    if w is None:
        return None
    n = min(sum(_finite(v) for v in va), sum(_finite(v) for v in vb))
    return Comparison("welch", w.diff, w.t, w.df, w.p, n)


def by_seed(values: Sequence[float], seeds: Sequence | None) -> Mapping | Sequence[float]:
    """Values keyed by their seeds when the seeds are known (one per value), else the bare values."""
    if seeds is not None and len(seeds) == len(values) and all(s is not None for s in seeds):
        return dict(zip(seeds, values))
    return list(values)
