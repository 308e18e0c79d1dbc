"""Calibration of predicted uncertainties σ (ensembles): how well |error| follows σ.

- miscalibration area: area between the observed and expected fraction of errors inside the
  central Gaussian interval of each σ, over all interval widths (0 = calibrated, 0.5 = worst);
- mean squared z-score ``mean((error/σ)²)`` (1 when σ is right on average; > 1 overconfident);
- Spearman rank correlation of σ with |error| (does a larger σ flag a larger error?);
- recalibration: ``σ'² = (s σ)² + σ₀²`` — a scale for the ensemble's spread and a floor for the
  error it cannot see (label noise, shared bias) — fitted on the validation set (by the coverage of
  every central interval, or by Gaussian likelihood) and applied unchanged to the test set;
- :class:`Recalibration`: that pair fitted separately in bins of the *predicted value* (quantiles
  of the validation predictions, at least ``min_count`` points per bin). Errors of one model are
  not one Gaussian family: a per-atom moment predicted near 0 μB is almost always right, one
  predicted at 1.5 μB sits between two spin states; a band gap predicted at 0 is a metal call. One
  scale and floor for all of them over-covers the first and under-covers the second.
"""

from __future__ import annotations

import numpy as np

from matgnn.models.calibration import Recalibration, recalibrate


def _clean(err: np.ndarray, sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    err, sigma = np.asarray(err, float), np.asarray(sigma, float)
    ok = np.isfinite(err) & np.isfinite(sigma)
    return err[ok], np.maximum(sigma[ok], 1e-12)


def calibration_curve(err: np.ndarray, sigma: np.ndarray, n: int = 101) -> tuple[np.ndarray, np.ndarray]:
    """Expected fractions ``p`` (0..1) and the observed fraction of errors with
    ``|error| ≤ σ Φ⁻¹(½ + p/2)`` (inside the central ``p`` interval)."""
    from scipy.stats import norm

    err, sigma = _clean(err, sigma)
    expected = np.linspace(0, 1, n)
    z = np.abs(err) / sigma
    observed = np.array([(z <= norm.ppf(0.5 + p / 2)).mean() if len(z) else np.nan for p in expected])
    return expected, observed


def miscalibration_area(err: np.ndarray, sigma: np.ndarray, n: int = 101) -> float:
    expected, observed = calibration_curve(err, sigma, n)
    trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 has only trapz
    return float(trapezoid(np.abs(observed - expected), expected))


def calibration_metrics(err: np.ndarray, sigma: np.ndarray) -> dict[str, float]:
    from scipy.stats import spearmanr

    err, sigma = _clean(err, sigma)
    if len(err) < 3:
        return {"miscalibration_area": float("nan"), "mean_squared_z": float("nan"), "spearman_sigma_abs_error": float("nan")}
    rho = spearmanr(sigma, np.abs(err)).statistic if np.ptp(sigma) > 0 else float("nan")
    return {"miscalibration_area": miscalibration_area(err, sigma),
            "mean_squared_z": float(np.mean((err / sigma) ** 2)),
            "spearman_sigma_abs_error": float(rho)}


def recalibration_factor(err_val: np.ndarray, sigma_val: np.ndarray) -> float:
    """The ``s`` maximising the Gaussian likelihood of the validation errors under ``s σ``."""
    err, sigma = _clean(err_val, sigma_val)
    return float(np.sqrt(np.mean((err / sigma) ** 2))) if len(err) else 1.0


def fit_recalibration(err_val: np.ndarray, sigma_val: np.ndarray, method: str = "coverage") -> tuple[float, float]:
    """``(s, σ₀)`` for ``σ'² = (s σ)² + σ₀²`` fitted on validation errors.

    ``coverage`` (default): the pair that minimises the validation miscalibration area (the
    coverage of every central interval, what the calibration plot shows; robust when errors are
    heavier-tailed than a Gaussian); ``likelihood``: maximum Gaussian likelihood."""
    from scipy.optimize import minimize

    err, sigma = _clean(err_val, sigma_val)
    if len(err) < 3:
        return 1.0, 0.0
    s0 = recalibration_factor(err, sigma)
    scale = float(np.std(err)) or 1.0

    def unpack(p: np.ndarray) -> tuple[float, float]:
        return float(np.exp(p[0])), float(np.exp(p[1])) * scale

    def loss(p: np.ndarray) -> float:
        sv = recalibrate(sigma, unpack(p))
        if method == "likelihood":
            return float(np.mean(np.log(sv**2) + (err / sv) ** 2))
        return miscalibration_area(err, sv, n=51)

    # start from pure scalings and from scaled spreads with a floor; keep the best local optimum
    starts = [np.array([np.log(s0 * f), np.log(1e-6)]) for f in (0.25, 0.5, 1.0, 2.0)]
    starts += [np.array([np.log(s0 * 0.5), np.log(fl)]) for fl in (0.05, 0.2, 0.5)]
    best = min((minimize(loss, x0, method="Nelder-Mead", options={"xatol": 1e-3, "fatol": 1e-6, "maxiter": 400})
                for x0 in starts), key=lambda r: r.fun)
    return unpack(best.x)


def fit_binned_recalibration(err_val: np.ndarray, sigma_val: np.ndarray, pred_val: np.ndarray, bins: int = 4,
                             min_count: int = 30, method: str = "coverage") -> Recalibration:
    """:func:`fit_recalibration` in up to ``bins`` quantile bins of the validation predictions, each
    with at least ``min_count`` points (fewer bins when the validation set is small; ``bins=1``: one
    pair for all)."""
    err, sigma, pred = (np.asarray(a, float) for a in (err_val, sigma_val, pred_val))
    ok = np.isfinite(err) & np.isfinite(sigma) & np.isfinite(pred)
    err, sigma, pred = err[ok], sigma[ok], pred[ok]
    n = max(1, min(bins, len(err) // max(min_count, 1)))
    edges = [float(e) for e in np.unique(np.quantile(pred, np.linspace(0, 1, n + 1)[1:-1]))] if n > 1 else []
    which = np.digitize(pred, edges)
    # ties in the predictions (many identical values) can leave a bin short: merge it into its neighbour
    while edges:
        counts = np.bincount(which, minlength=len(edges) + 1)
        short = int(np.argmin(counts))
        if counts[short] >= min_count:
            break
        edges.pop(min(short, len(edges) - 1))
        which = np.digitize(pred, edges)
    return Recalibration(edges, [fit_recalibration(err[which == b], sigma[which == b], method)
                                 for b in range(len(edges) + 1)])
