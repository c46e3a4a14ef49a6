"""Training-curve PNGs and the shared matplotlib helpers of every figure the package draws.

Figures are built as `matplotlib.figure.Figure` objects on the Agg canvas, never through pyplot, so no display
is needed and nothing depends on the global backend a notebook may have chosen. Files are written atomically.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from melanoma.files import atomic_path

DPI = 100
# matplotlib's tab10 colours: train/validation pairs per panel, the learning rate in purple.
COLOURS = {"loss": "#1f77b4", "val_loss": "#ff7f0e", "auc": "#2ca02c", "val_auc": "#d62728", "lr": "#9467bd"}
PANELS = (("loss", ("loss", "val_loss")), ("AUC", ("auc", "val_auc")))
LR_COLUMNS = ("learning_rate", "lr")
PREVIEW_TITLE = "melanoma augment-preview"  # the PNG Title of `augment-preview` grids


def figure(width_px: int, height_px: int):
    """A Figure of that size in pixels (at DPI) on the Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def save(fig, path: str | Path, title: str | None = None) -> Path:
    """Write the figure as PNG, atomically, at exactly its pixel size; `title` goes into the PNG's Title text
    (how a command recognises its own file before replacing it: melanoma.outputs)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, metadata={"Title": title} if title else None)
    return path


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About n round tick values covering [lo, hi] (1, 2, 2.5 or 5 times a power of ten apart)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9)
    last = math.floor(hi / step + 1e-9)
    # Multiples of the step, rounded so 0.1 * 6 prints as 0.6 rather than 0.6000000000000001.
    return [round(k * step, 12) for k in range(first, last + 1)]


def column(history: pd.DataFrame, name: str) -> np.ndarray | None:
    """A history column as floats (NaN where missing or not a number), or None when absent."""
    if name not in history.columns:
        return None
    return pd.to_numeric(history[name], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def epochs_of(history: pd.DataFrame) -> np.ndarray:
    epochs = column(history, "epoch")
    if epochs is None or not np.isfinite(epochs).all():
        epochs = np.arange(len(history), dtype=np.float64)
    return epochs


def _line(ax, x: np.ndarray, y: np.ndarray, **kw) -> bool:
    """Draw y against x (NaN breaks the line; markers while few points); False when nothing is finite."""
    if not np.isfinite(y).any():
        return False
    ax.plot(x, y, marker="o" if len(x) <= 30 else None, markersize=4, linewidth=2, **kw)
    return True


def training_curves(history: pd.DataFrame, out_png: str | Path, title: str,
                    size: tuple[int, int] = (960, 400)) -> Path:
    """Write a two-panel training-curve PNG of a Keras history (one row per epoch) and return its path:
    loss and validation loss (with the learning rate on a right axis), AUC and validation AUC."""
    fig = figure(*size)
    fig.suptitle(title, fontsize=10)
    axes = fig.subplots(1, 2)
    epochs = epochs_of(history)
    lr_name = next((c for c in LR_COLUMNS if c in history.columns), None)
    for ax, (name, series) in zip(axes, PANELS):
        drawn = [_line(ax, epochs, v, color=COLOURS[c], label=c) for c in series
                 if (v := column(history, c)) is not None]
        ax.set_title(f"{name} by epoch", fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.grid(True, color="#e1e1e1")
        ax.tick_params(labelsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)
        if not any(drawn):
            ax.text(0.5, 0.5, f"no {name} logged", ha="center", va="center", color="#6e6e6e", transform=ax.transAxes)
        handles, labels = ax.get_legend_handles_labels()
        if name == "loss" and lr_name is not None and np.isfinite(lr := column(history, lr_name)).any():
            right = ax.twinx()
            right.plot(epochs, lr, color=COLOURS["lr"], linestyle="--", linewidth=2,
                       marker="o" if len(epochs) <= 30 else None, markersize=3)
            right.tick_params(labelsize=7, colors=COLOURS["lr"])
            right.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
            handles += right.get_lines()[-1:]
            labels.append("learning rate (right axis)")
        if handles:
            ax.legend(handles, labels, fontsize=7, loc="best")
    fig.tight_layout()
    return save(fig, out_png)
