"""Parity plot and signed-error histogram (PNG)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend (files only, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """Lay out, write and close ``fig``."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return Path(path)


def parity_plot(y_true: np.ndarray, y_pred: np.ndarray, path: str | Path, title: str, unit: str = "",
                groups: list[str] | np.ndarray | None = None, n_colors: int = 8) -> Path:
    """Parity plot and signed-error histogram. ``groups`` (e.g. each atom's element) colours
    the ``n_colors`` groups with the largest summed error; the rest are grey."""
    plt = pyplot()

    mask = ~np.isnan(np.asarray(y_true, float))
    t, p = np.asarray(y_true)[mask], np.asarray(y_pred)[mask]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9, 4.2))
    lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
    ax.plot([lo, hi], [lo, hi], color="0.5", lw=1)
    if groups is None:
        ax.scatter(t, p, s=6, alpha=0.5)
    else:
        g = np.asarray(groups)[mask]
        names = np.unique(g)
        err = {n: float(np.abs(p[g == n] - t[g == n]).sum()) for n in names}
        top = sorted(names, key=lambda n: -err[n])[:n_colors]
        rest = ~np.isin(g, top)
        ax.scatter(t[rest], p[rest], s=5, alpha=0.3, color="0.7", label="other")
        for n in top:
            sel = g == n
            ax.scatter(t[sel], p[sel], s=6, alpha=0.6, label=str(n))
        ax.legend(fontsize=7, markerscale=2, loc="upper left")
    mae = float(np.abs(p - t).mean())
    in_unit = f" ({unit})" if unit else ""
    ax.set_xlabel(f"true{in_unit}")
    ax.set_ylabel(f"predicted{in_unit}")
    ax.set_title(f"{title}: MAE {mae:.4g}{' ' + unit if unit else ''} (n={len(t)})")
    ax2.hist(p - t, bins=50, color="tab:orange")
    ax2.set_xlabel(f"predicted − true{in_unit}")
    ax2.set_ylabel("count")
    ax2.set_title("signed error")
    return save_figure(fig, path)


def learning_curve(history: list[dict], path: str | Path) -> Path:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(5.5, 4))
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs, [h["train_loss"] for h in history], label="train loss")
    ax.plot(epochs, [h["val_loss"] for h in history], label="validation loss")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (normalised units)")
    ax.legend()
    return save_figure(fig, path)


def _pt_position(z: int) -> tuple[int, int]:
    """(row, column) of element ``z`` in the 18-column periodic table; lanthanides and
    actinides on rows 8 and 9 (0-based rows 0..9)."""
    if z == 1:
        return 0, 0
    if z == 2:
        return 0, 17
    starts = [(3, 1), (11, 2), (19, 3), (37, 4), (55, 5), (87, 6)]
    for first, row in reversed(starts):
        if z >= first:
            k = z - first
            if row in (1, 2):
                return row, k if k < 2 else k + 10
            if row in (5, 6):
                if k < 2:
                    return row, k
                if k < 16:  # La..Yb / Ac..No, f block below
                    return row + 3, k + 1
                return row, k - 14
            return row, k
    raise ValueError(z)


def periodic_table_heatmap(values: dict[int, float], path: str | Path, title: str, label: str,
                           counts: dict[int, int] | None = None) -> Path:
    """Value per element (e.g. MAE) coloured on the periodic table; elements without a
    value are blank."""
    plt = pyplot()
    from ase.data import chemical_symbols
    from matplotlib.colors import Normalize

    fig, ax = plt.subplots(figsize=(11, 6))
    vals = [v for v in values.values() if np.isfinite(v)]
    norm = Normalize(vmin=min(vals, default=0.0), vmax=max(vals, default=1.0))
    cmap = plt.get_cmap("viridis")
    for z in range(1, 104):
        r, c = _pt_position(z)
        y = r - 0.6 if r >= 7 else r
        v = values.get(z)
        face = cmap(norm(v)) if v is not None and np.isfinite(v) else (0.95, 0.95, 0.95, 1)
        ax.add_patch(plt.Rectangle((c, -y), 0.95, 0.95, facecolor=face, edgecolor="0.6", lw=0.5))
        dark = v is not None and np.isfinite(v) and norm(v) < 0.6
        ax.text(c + 0.47, -y + 0.6, chemical_symbols[z], ha="center", va="center", fontsize=8,
                color="white" if dark else "black")
        if v is not None and np.isfinite(v):
            ax.text(c + 0.47, -y + 0.25, f"{v:.2g}", ha="center", va="center", fontsize=5.5,
                    color="white" if dark else "black")
    ax.set_xlim(-0.2, 18.2)
    ax.set_ylim(-8.6, 1.1)
    ax.set_aspect("equal")
    ax.axis("off")
    sm = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(sm, ax=ax, fraction=0.025, pad=0.01, label=label)
    ax.set_title(title)
    return save_figure(fig, path)


def metric_curves(history: list[dict], keys: list[str], path: str | Path, ylabel: str) -> Path:
    """Columns ``keys`` of a run's history against the epoch (e.g. each head's validation MAE)."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(5.5, 4))
    epochs = [int(h["epoch"]) for h in history]
    for k in keys:
        ax.plot(epochs, [float(h[k]) for h in history], label=k)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def calibration_plot(errors: np.ndarray, sigma: np.ndarray, path: str | Path, title: str) -> tuple[Path, float]:
    """Observed vs expected fraction of |error| within the central Gaussian interval of each
    predicted σ; returns the plot and the miscalibration area (0 = calibrated)."""
    plt = pyplot()

    from matgnn.evaluation.uncertainty import calibration_curve, miscalibration_area

    expected, observed = calibration_curve(errors, sigma)
    area = miscalibration_area(errors, sigma)
    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    ax.plot([0, 1], [0, 1], color="0.5", lw=1)
    ax.plot(expected, observed, label=f"miscalibration area {area:.3f}")
    ax.fill_between(expected, expected, observed, alpha=0.2)
    ax.set_xlabel("expected fraction within interval")
    ax.set_ylabel("observed fraction")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return save_figure(fig, path), area
