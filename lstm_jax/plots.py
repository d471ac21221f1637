"""Pictures written into a workdir (matplotlib, drawn off-screen)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # never open a window; workdirs are often on headless machines
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def learning_curves(history: Sequence[dict[str, Any]], path: str, metrics: Sequence[str] = ("loss",)) -> str:
    """One panel per metric, train and val against epoch. Returns ``path``."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.5), squeeze=False)
    epochs = [r["epoch"] for r in history]
    for ax, m in zip(axes[0], metrics):
        for split in ("train", "val"):
            key = f"{split}_{m}"
            if history and key in history[0]:
                ax.plot(epochs, [r[key] for r in history], marker="o", ms=3, label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(m)
        if m in ("loss", "mse") and history and all(r.get(f"train_{m}", 1) > 0 for r in history):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, path)


def confusion_matrix(cm_KxK: np.ndarray, path: str, labels: Sequence[str] | None = None, title: str = "") -> str:
    """A K x K confusion matrix (rows: true class, columns: predicted) with counts in the cells.

    Cells are shaded by the share of their row (each true class's recall pattern), so that a small
    class reads as clearly as a large one; ``labels`` default to 0..K-1.
    """
    plt = _pyplot()
    cm = np.asarray(cm_KxK)
    K = cm.shape[0]
    if cm.shape != (K, K):
        raise ValueError(f"a confusion matrix must be square, got shape {cm.shape}")
    labels = [str(k) for k in range(K)] if labels is None else [str(v) for v in labels]
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape, float), where=rows > 0)
    side = max(3.8, 1.2 + 0.55 * K)
    fig, ax = plt.subplots(figsize=(side, side * 0.9))
    ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    size = 10 if K <= 8 else max(5, 10 - (K - 8) // 2)
    for (r, c), v in np.ndenumerate(cm):
        ax.text(c, r, str(int(v)), ha="center", va="center", fontsize=size,
                color="white" if share[r, c] > 0.5 else "black")
    ax.set_xticks(range(K), labels, rotation=45 if max(map(len, labels)) > 3 else 0, ha="right" if max(map(len, labels)) > 3 else "center")
    ax.set_yticks(range(K), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return _save(fig, path)


def forecast(series_T: np.ndarray, start: int, forecast_H: np.ndarray, path: str, *,
             baselines: dict[str, np.ndarray] | None = None, title: str = "",
             band: tuple[np.ndarray, np.ndarray] | None = None, band_label: str = "interval") -> str:
    """The whole series, with the forecast (and optional baselines) over ``[start, start + H)``;
    ``band`` (lower_H, upper_H) is drawn as a shaded interval around the forecast."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 3.5))
    t = np.arange(len(series_T))
    ax.plot(t, series_T, color="0.3", lw=1, label="series")
    span = np.arange(start, start + len(forecast_H))
    if band is not None:
        ax.fill_between(span, band[0], band[1], color="C3", alpha=0.2, lw=0, label=band_label)
    for name, values in (baselines or {}).items():
        ax.plot(span, values, lw=1, ls="--", label=name)
    ax.plot(span, forecast_H, color="C3", lw=1.5, label="forecast")
    ax.axvline(start, color="0.6", lw=0.8)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)
