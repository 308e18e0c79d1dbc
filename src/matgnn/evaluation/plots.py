"""Parity plot and signed-error histogram (PNG)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def parity_plot(y_true: np.ndarray, y_pred: np.ndarray, path: str | Path, title: str, unit: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mask = ~np.isnan(y_true)
    t, p = np.asarray(y_true)[mask], np.asarray(y_pred)[mask]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9, 4.2))
    lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
    ax.plot([lo, hi], [lo, hi], color="0.5", lw=1)
    ax.scatter(t, p, s=6, alpha=0.5)
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
