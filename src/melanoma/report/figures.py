"""The report's figures, drawn with matplotlib on the Agg canvas (melanoma.plots.figure) and saved as PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from melanoma.plots import LR_COLUMNS, column, epochs_of, figure, save

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def _fmt(v: dict[str, Any]) -> str:
    if v["value"] is None:
        return "n/a"
    ci = v.get("ci")
    return f"{v['value']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def _style(ax, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.tick_params(labelsize=8)
    ax.grid(True, color="#e6e6e6")


def roc_figure(items: list[tuple[str, dict]], path: Path, title: str) -> Path:
    """ROC curve of each run with its 95% patient-bootstrap band; the pAUC region (TPR >= 0.8) shaded."""
    fig = figure(640, 560)
    ax = fig.subplots()
    ax.axhspan(0.8, 1.0, color="#f2f2f2", zorder=0)
    ax.plot([0, 1], [0, 1], color="#9a9a9a", linestyle=":", linewidth=1)
    for i, (label, ev) in enumerate(items):
        _curve(ax, i, ev["roc"], ev["roc"]["fpr"], ev["roc"]["tpr"],
                f"{label}: AUC {_fmt(ev['auc'])}, pAUC {_fmt(ev['pauc'])}")
    ax.text(0.98, 0.81, "pAUC region: TPR >= 0.8", ha="right", fontsize=7, color="#6e6e6e")
    _style(ax, title, "false-positive rate (1 - specificity)", "true-positive rate (sensitivity)")
    return _finish_unit_square(fig, ax, path, "lower right")


def _curve(ax, i: int, curve: dict, x, y, label: str) -> str:
    """One run's curve with its bootstrap band (when computed), in the run's colour; returns the colour."""
    c = PALETTE[i % len(PALETTE)]
    band = curve["band"]
    if band is not None:
        ax.fill_between(band["x"], band["lo"], band["hi"], color=c, alpha=0.18, linewidth=0)
    ax.plot(x, y, color=c, linewidth=2, label=label)
    return c


def _finish_unit_square(fig, ax, path: Path, legend_loc: str) -> Path:
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(fontsize=7, loc=legend_loc)
    fig.tight_layout()
    return save(fig, path)


def pr_figure(items: list[tuple[str, dict]], path: Path, title: str) -> Path:
    fig = figure(640, 560)
    ax = fig.subplots()
    for i, (label, ev) in enumerate(items):
        c = _curve(ax, i, ev["pr"], ev["pr"]["recall"], ev["pr"]["precision"], f"{label}: AP {_fmt(ev['ap'])}")
        if ev["pr"]["prevalence"] is not None:
            ax.axhline(ev["pr"]["prevalence"], color=c, linestyle=":", linewidth=1)
    _style(ax, title, "recall (sensitivity)", "precision (PPV)")
    return _finish_unit_square(fig, ax, path, "upper right")


def calibration_figure(items: list[tuple[str, dict, dict | None]], path: Path, title: str) -> Path:
    """Reliability diagram: observed malignant rate against mean prediction per bin (marker area ~ count)."""
    fig = figure(640, 560)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="#9a9a9a", linestyle=":", linewidth=1, label="perfect calibration")
    for i, (label, raw, cal) in enumerate(items):
        c = PALETTE[i % len(PALETTE)]
        for rel, style, name in ((raw, "-", label), (cal, "--", f"{label}, calibrated")):
            if rel is None or not rel["count"]:
                continue
            n = np.asarray(rel["count"], dtype=float)
            ax.plot(rel["mean_pred"], rel["observed"], linestyle=style, color=c, linewidth=1.5, label=name)
            ax.scatter(rel["mean_pred"], rel["observed"], s=10 + 190 * n / n.max(), color=c, alpha=0.6)
    _style(ax, title, "mean predicted probability", "observed malignant rate")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return save(fig, path)


def subgroup_figure(label: str, subgroups: dict[str, list[dict]], path: Path) -> Path:
    """Forest plot: AUC and 95% interval per subgroup; groups too small to score are named with the reason."""
    rows = [(family, e) for family, entries in subgroups.items() for e in entries]
    fig = figure(760, 90 + 22 * max(1, len(rows)))
    ax = fig.subplots()
    for y, (family, e) in enumerate(rows):
        if e["auc"] is None:
            ax.text(0.5, y, f"n={e['n']}, {e['positives']} pos: {e['note']}", va="center", fontsize=7,
                    color="#8a8a8a")
            continue
        lo, hi = e["ci"] if e["ci"] else (e["auc"], e["auc"])
        ax.plot([lo, hi], [y, y], color="#1f77b4", linewidth=2)
        ax.plot([e["auc"]], [y], "o", color="#1f77b4", markersize=5)
        ax.text(1.005, y, f"{e['auc']:.3f}  n={e['n']}, {e['positives']} pos", va="center", fontsize=7)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"{family}: {e['group']}" for family, e in rows], fontsize=7)
    ax.invert_yaxis()
    ax.axvline(0.5, color="#9a9a9a", linestyle=":", linewidth=1)
    _style(ax, f"{label}: AUC by subgroup (95% patient-bootstrap interval)", "AUC", "")
    lows = [e["ci"][0] for _, e in rows if e["auc"] is not None and e["ci"]]
    ax.set_xlim(min([0.3, *lows]) - 0.02, 1.0)  # widen for an interval that reaches below 0.3
    fig.tight_layout()
    fig.subplots_adjust(right=0.78)
    return save(fig, path)


def training_figure(label: str, histories: dict[int, pd.DataFrame], path: Path) -> Path:
    """Loss, AUC and learning rate per epoch, one colour per fold (validation dashed)."""
    fig = figure(1200, 380)
    axes = fig.subplots(1, 3)
    for i, (fold, h) in enumerate(sorted(histories.items())):
        c = PALETTE[i % len(PALETTE)]
        x = epochs_of(h)
        for ax, (train, val) in zip(axes[:2], (("loss", "val_loss"), ("auc", "val_auc"))):
            for name, style in ((train, "-"), (val, "--")):
                v = column(h, name)
                if v is not None and np.isfinite(v).any():
                    ax.plot(x, v, linestyle=style, color=c, linewidth=1.5, label=f"fold {fold} {name}")
        lr = next((column(h, n) for n in LR_COLUMNS if n in h.columns), None)
        if lr is not None and np.isfinite(lr).any():
            axes[2].plot(x, lr, color=c, linewidth=1.5, label=f"fold {fold}")
    for ax, name in zip(axes, ("loss (dashed: validation)", "AUC (dashed: validation)", "learning rate")):
        _style(ax, name, "epoch", "")
        if ax.get_lines():
            ax.legend(fontsize=6, loc="best")
    axes[2].ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    fig.suptitle(f"{label}: training curves per fold", fontsize=10)
    fig.tight_layout()
    return save(fig, path)


def fold_figure(items: list[tuple[str, list[dict]]], path: Path) -> Path:
    """The spread of the per-fold OOF AUC of each run (points with 95% intervals)."""
    fig = figure(640, 120 + 40 * max(1, len(items)))
    ax = fig.subplots()
    for i, (label, folds) in enumerate(items):
        c = PALETTE[i % len(PALETTE)]
        scored = [e for e in folds if e["auc"] is not None]
        for j, e in enumerate(scored):
            y = i + (j - (len(scored) - 1) / 2) * 0.08
            if e["ci"]:
                ax.plot(e["ci"], [y, y], color=c, linewidth=1, alpha=0.6)
            ax.plot([e["auc"]], [y], "o", color=c, markersize=5)
            ax.annotate(f"{e['group']}", (e["auc"], y), fontsize=6, xytext=(0, 4), textcoords="offset points")
        if scored:
            ax.axvline(np.mean([e["auc"] for e in scored]), ymin=0, ymax=1, color=c, linestyle=":", linewidth=1)
    ax.set_yticks(range(len(items)))
    ax.set_yticklabels([label for label, _ in items], fontsize=8)
    _style(ax, "OOF AUC per fold (dotted: mean over folds)", "AUC", "")
    fig.tight_layout()
    return save(fig, path)


def gallery_card(image: np.ndarray, heat: np.ndarray | None, caption: str, path: Path) -> Path:
    """The thumbnail and, beside it, the Grad-CAM heat map over it (or a note why there is none)."""
    fig = figure(360, 200)
    axes = fig.subplots(1, 2)
    axes[0].imshow(image)
    axes[1].imshow(image)
    if heat is not None:
        axes[1].imshow(heat, cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0,
                       extent=(-0.5, image.shape[1] - 0.5, image.shape[0] - 0.5, -0.5))
    else:
        axes[1].text(0.5, 0.5, "no heat map", ha="center", va="center", transform=axes[1].transAxes, fontsize=8,
                     color="white", bbox={"facecolor": "black", "alpha": 0.5})
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(caption, fontsize=7)
    fig.tight_layout()
    return save(fig, path)
