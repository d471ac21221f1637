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


def box_by_group(values: dict[str, Sequence[float]], path: str, ylabel: str, title: str = "") -> str:
    """One box per group, in the dict's order, with the values drawn over it as points.

    ``values`` maps a group name to its values (any length; an empty group keeps its place on the
    axis without a box, so that pictures of several datasets line up). Returns ``path``.
    """
    plt = _pyplot()
    names = list(values)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.0 + 0.9 * len(names)), 3.8))
    filled = [(k, np.asarray(values[n], float)) for k, n in enumerate(names, start=1) if len(values[n])]
    if filled:
        ax.boxplot([v for _, v in filled], positions=[k for k, _ in filled], widths=0.55, showfliers=False,
                   medianprops={"color": "C3"})
    rng = np.random.default_rng(0)  # the same jitter on every run, so reruns give the same picture
    for k, v in filled:
        ax.scatter(k + rng.uniform(-0.12, 0.12, len(v)), v, s=14, color="0.25", alpha=0.7, zorder=3)
    ax.set_xticks(range(1, len(names) + 1), [n if len(values[n]) else f"{n}\n(none)" for n in names],
                  rotation=30 if max(map(len, names), default=0) > 8 else 0)
    ax.set_xlim(0.4, len(names) + 0.6)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def marginal(points: dict[str, tuple[Sequence[Any], Sequence[float]]], path: str, xlabel: str, ylabel: str,
             log_x: bool = False, title: str = "", *,
             lines: dict[str, tuple[Sequence[float], Sequence[float]]] | None = None,
             categories: Sequence[Any] | None = None) -> str:
    """A metric against one hyperparameter, one colour per group: ``points[group] = (x_N, y_N)``.

    ``lines[group] = (x_B, y_B)`` are drawn through the group's points (a binned median, say).
    With ``categories`` the x values are category labels: each category gets a slot, each group a
    strip of points in it with its median as a short bar, and ``log_x`` and ``lines`` are unused.
    Returns ``path``.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    groups = list(points)
    if categories is not None:
        slot = {repr(c): k for k, c in enumerate(categories)}
        width = 0.8 / max(1, len(groups))
        rng = np.random.default_rng(0)
        for g, name in enumerate(groups):
            xs, ys = points[name]
            pos = np.array([slot[repr(x)] for x in xs], float) - 0.4 + width * (g + 0.5)
            ys = np.asarray(ys, float)
            ax.scatter(pos + rng.uniform(-0.25, 0.25, len(pos)) * width, ys, s=14, alpha=0.7, color=f"C{g}",
                       label=name)
            for p in np.unique(pos):
                ax.hlines(np.median(ys[pos == p]), p - 0.4 * width, p + 0.4 * width, color=f"C{g}", lw=2)
        ax.set_xticks(range(len(categories)), [str(c) for c in categories])
    else:
        for g, name in enumerate(groups):
            xs, ys = points[name]
            ax.scatter(np.asarray(xs, float), np.asarray(ys, float), s=14, alpha=0.6, color=f"C{g}", label=name)
            if lines and name in lines:
                ax.plot(*(np.asarray(a, float) for a in lines[name]), color=f"C{g}", lw=1.8, marker="o", ms=3)
        if log_x:
            ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if groups:
        ax.legend(fontsize=8)
    return _save(fig, path)
