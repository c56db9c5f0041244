"""Intervals and Welch's test on hand-made numbers, against published t-table values and a hand
computation."""

from __future__ import annotations

import math

import pytest

from rnnray.analysis.statistics import mean_interval, t_cdf, t_quantile, welch


@pytest.mark.parametrize("nu,q975", [(1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764), (9, 2.2622), (29, 2.0452),
                                     (1000, 1.9623)])
def test_t_quantiles_match_the_table(nu, q975):
    assert t_quantile(0.975, nu) == pytest.approx(q975, abs=1e-4)
    assert t_quantile(0.025, nu) == pytest.approx(-q975, abs=1e-4)


def test_t_cdf_closed_forms():
    # nu = 1 is the Cauchy distribution, nu = 2 has F(t) = 1/2 + t / (2 sqrt(2 + t^2))
    for t in (-30.0, -2.0, -0.3, 0.0, 0.7, 5.0, 80.0):
        assert t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-10)
        assert t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-10)
    assert t_cdf(1.5, 2.5) < t_cdf(1.5, 7.3)  # fractional (Welch) degrees of freedom work, heavier tails below


def test_mean_interval_by_hand():
    iv = mean_interval([0.040, 0.046, 0.043])  # mean 0.043, s = 0.003, n = 3
    assert iv.mean == pytest.approx(0.043) and iv.std == pytest.approx(0.003) and iv.n == 3
    half = 4.302653 * 0.003 / math.sqrt(3)
    assert (iv.low, iv.high) == (pytest.approx(0.043 - half, abs=1e-9), pytest.approx(0.043 + half, abs=1e-9))
    assert iv.text() == "0.0430 (0.0355, 0.0505)"
    one = mean_interval([0.05, float("nan")])  # non-finite values (a diverged seed) are left out
    assert one.n == 1 and math.isnan(one.low) and one.text() == "0.0500 (1 seed)"
    assert mean_interval([]).n == 0 and mean_interval([]).text() == "—"


def test_welch_by_hand():
    a, b = [1.0, 2.0, 3.0], [4.0, 6.0, 8.0, 10.0]
    # means 2 and 7; variances of the means 1/3 and 20/12; t = -5 / sqrt(2); df by Welch-Satterthwaite
    w = welch(a, b)
    se2 = 1 / 3 + 20 / 12
    assert w.diff == pytest.approx(-5.0) and w.t == pytest.approx(-5.0 / math.sqrt(se2))
    assert w.df == pytest.approx(se2 ** 2 / ((1 / 3) ** 2 / 2 + (20 / 12) ** 2 / 3))
    assert w.p == pytest.approx(2 * t_cdf(-abs(w.t), w.df)) and 0.01 < w.p < 0.05
    assert welch([1.0], b) is None  # one seed: no test
    assert welch([1.0, 1.0], [2.0, 2.0]) is None and welch([1.0, 1.0], [1.0, 1.0]) is None  # no spread: not applicable


def test_paired_by_hand_and_when_it_applies():
    from rnnray.analysis.statistics import compare, paired

    a = {1: 0.050, 2: 0.052, 3: 0.049}
    b = {1: 0.060, 2: 0.061, 3: 0.060}
    d = [-0.010, -0.009, -0.011]  # differences per seed: mean -0.010, sd 0.001
    c = paired(a, b)
    t = -0.010 / (0.001 / math.sqrt(3))
    assert c.test == "paired" and c.n == 3 and c.df == 2
    assert c.diff == pytest.approx(sum(d) / 3) and c.t == pytest.approx(t) and c.p == pytest.approx(2 * t_cdf(t, 2))
    # the same numbers unpaired: Welch's test is weaker here, because the seeds' shared part is not removed
    assert compare(a, b).test == "paired" and compare(list(a.values()), list(b.values())).test == "welch"
    assert compare(list(a.values()), list(b.values())).p > c.p
    assert compare({1: 0.05, 2: 0.06}, {3: 0.05, 4: 0.07}).test == "welch"  # no shared seeds: nothing pairs
    assert paired({1: 1.0, 2: 2.0}, {1: 0.0, 2: 1.0}) is None  # constant differences: not applicable, never p = 0
    assert compare({1: 1.0}, {1: 2.0}) is None
