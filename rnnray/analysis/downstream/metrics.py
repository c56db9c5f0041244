"""The downstream metrics: pure functions of numpy arrays."""

from __future__ import annotations

import math

import numpy as np

# Below this effective dimension a representation is, for practical purposes, one direction (a
# "how trained" arc, or two points: initialisation and trained); verdicts built on it say so.
COLLAPSED_BELOW = 2.0


def participation_ratio(x) -> float:
    """Effective dimension of representations ``x`` (N, d): ``(sum l)^2 / sum l^2`` over the
    eigenvalues ``l`` of their covariance. 1 when every row lies on one line (or two points), d when
    the variance is spread evenly over all d directions; NaN for fewer than 2 rows or no variance."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected an (N, d) array, got shape {x.shape}")
    if len(x) < 2:
        return math.nan
    lam = np.clip(np.linalg.eigvalsh(np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])), 0.0, None)
    total = float(lam.sum())
    if total <= 1e-12 * max(1.0, float(np.abs(x).max()) ** 2):
        return math.nan
    return total ** 2 / float((lam ** 2).sum())


def exact_task_accuracy(pred, true) -> float:
    """Fraction of rows whose every offset is right: (N, 3) class ids (or offsets) each."""
    pred, true = np.asarray(pred), np.asarray(true)
    if pred.shape != true.shape or pred.ndim != 2:
        raise ValueError(f"expected two (N, k) arrays of the same shape, got {pred.shape} and {true.shape}")
    return float((pred == true).all(axis=1).mean())


def accuracy(pred, true) -> float:
    """Fraction of equal entries (class ids)."""
    pred, true = np.asarray(pred), np.asarray(true)
    if pred.shape != true.shape:
        raise ValueError(f"shapes differ: {pred.shape} and {true.shape}")
    return float((pred == true).mean())


def r2(true, pred) -> float:
    """Coefficient of determination about the true values' own mean; NaN when they are constant."""
    true, pred = np.asarray(true, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    ss_tot = float(((true - true.mean()) ** 2).sum())
    if ss_tot == 0.0:
        return math.nan
    return 1.0 - float(((true - pred) ** 2).sum()) / ss_tot


def mae(true, pred) -> float:
    """Mean absolute error."""
    return float(np.abs(np.asarray(true, dtype=np.float64) - np.asarray(pred, dtype=np.float64)).mean())


def angle_difference_deg(a, b) -> np.ndarray:
    """Absolute angular distance in degrees, wrapped into [0, 180] (359 vs 1 -> 2)."""
    d = (np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64) + 180.0) % 360.0 - 180.0
    return np.abs(d)


def angle_error_deg(pred_deg, true_deg) -> float:
    """Mean absolute wrapped angle error in degrees."""
    return float(angle_difference_deg(pred_deg, true_deg).mean())


def cos_sin_to_deg(out) -> np.ndarray:
    """(N, 2) (cos, sin) outputs -> angles in [0, 360)."""
    out = np.asarray(out, dtype=np.float64)
    return np.degrees(np.arctan2(out[:, 1], out[:, 0])) % 360.0
