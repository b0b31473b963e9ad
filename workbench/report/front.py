"""Pareto fronts and hypervolume as numbers (no plotting): what figures, tables and the study browser share."""
from __future__ import annotations

import numpy as np
import pandas as pd

from workbench.metrics import METRICS
from workbench.study.optuna_compat import compute_hypervolume


def pareto_mask(losses: np.ndarray) -> np.ndarray:
    """Non-dominated rows of a loss matrix (all objectives minimised)."""
    n = len(losses)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        dominated = np.all(losses <= losses[i], axis=1) & np.any(losses < losses[i], axis=1)
        keep[i] = not dominated.any()
    return keep


def losses(frame: pd.DataFrame, objectives: list[str]) -> np.ndarray:
    """Objective values turned into losses (maximised metrics negated)."""
    sign = np.array([1.0 if METRICS[m].better == "minimize" else -1.0 for m in objectives])
    return frame[objectives].to_numpy(dtype=float) * sign


def hypervolume_history(frame: pd.DataFrame, objectives: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Hypervolume of the Pareto set after each trial, objectives normalised to [0, 1] over all trials.

    Reference point: 1.1 in every normalised dimension (10 % beyond the worst value seen).
    """
    loss = losses(frame, objectives)
    lo, hi = loss.min(0), loss.max(0)
    norm = (loss - lo) / np.where(hi > lo, hi - lo, 1.0)
    ref = np.full(len(objectives), 1.1)
    hv = [compute_hypervolume(norm[: i + 1][pareto_mask(norm[: i + 1])], ref) for i in range(len(norm))]
    return frame["trial"].to_numpy(), np.array(hv)
