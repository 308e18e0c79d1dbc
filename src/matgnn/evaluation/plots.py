"""Parity plot and signed-error histogram (PNG)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def parity_plot(y_true: np.ndarray, y_pred: np.ndarray, path: str | Path, title: str, unit: str = "",
                groups: list[str] | np.ndarray | None = None, n_colors: int = 8) -> Path:
    """Parity plot and signed-error histogram. ``groups`` (e.g. each atom's element) colours
    the ``n_colors`` groups with the largest summed error; the rest are grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    ax.set_xlabel(f"true {unit}".strip())
    ax.set_ylabel(f"predicted {unit}".strip())
    ax.set_title(f"{title}: MAE {mae:.4g} (n={len(t)})")
    ax2.hist(p - t, bins=50, color="tab:orange")
    ax2.set_xlabel(f"predicted − true {unit}".strip())
    ax2.set_ylabel("count")
    ax2.set_title("signed error")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def learning_curve(history: list[dict], path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs, [h["train_loss"] for h in history], label="train loss")
    ax.plot(epochs, [h["val_loss"] for h in history], label="validation loss")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (normalised units)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
