"""Baselines scored on the same graphs, splits and metrics as the GNNs: per-element mean,
ridge regression and XGBoost on hand-built per-atom descriptors, CHGNet zero-shot."""

from matgnn.baselines.run import BASELINES, run_baseline

__all__ = ["BASELINES", "run_baseline"]
