"""Training-curve PNGs drawn with Pillow alone (no plotting library in the dependencies).

`training_curves` draws a fold's history.csv: loss and val_loss in the left panel (with the learning rate on
its own right-hand axis when logged), auc and val_auc in the right one. NaN values break a line instead of
ending the plot, missing columns are simply left out, and a single epoch shows as points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from melanoma.files import atomic_path

WHITE, BLACK, GREY, LIGHT = (255, 255, 255), (0, 0, 0), (110, 110, 110), (225, 225, 225)


@dataclass(frozen=True)
class Series:
    column: str
    label: str
    colour: tuple[int, int, int]
    dashed: bool = False


PANELS = (
    ("loss", (Series("loss", "loss", (31, 119, 180)), Series("val_loss", "val_loss", (255, 127, 14)))),
    ("AUC", (Series("auc", "auc", (44, 160, 44)), Series("val_auc", "val_auc", (214, 39, 40)))),
)


LR_COLUMNS = ("learning_rate", "lr")
LR_COLOUR = (148, 103, 189)


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


def _fmt(v: float, step: float) -> str:
    """A tick label with just the decimals the tick step needs (2.5 steps need one more)."""
    if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
        return f"{v:.1e}"
    if step <= 0:
        return f"{v:.2f}"
    exp = math.floor(math.log10(step))
    decimals = max(0, -exp + (1 if round(step / 10 ** exp, 6) == 2.5 else 0))
    return f"{v:.{decimals}f}"


def _range(values: list[np.ndarray]) -> tuple[float, float] | None:
    finite = np.concatenate([v[np.isfinite(v)] for v in values]) if values else np.array([])
    if finite.size == 0:
        return None
    lo, hi = float(finite.min()), float(finite.max())
    pad = (hi - lo) * 0.05 if hi > lo else max(abs(hi) * 0.05, 0.01)
    return lo - pad, hi + pad


def _column(history: pd.DataFrame, name: str) -> np.ndarray | None:
    if name not in history.columns:
        return None
    return pd.to_numeric(history[name], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


class _Panel:
    """Maps data to pixels inside a plot box and draws axes, lines and tick labels."""

    def __init__(self, draw: ImageDraw.ImageDraw, font, box: tuple[int, int, int, int], x_range, y_range):
        self.draw, self.font, self.box = draw, font, box
        self.x0, self.x1 = x_range
        self.y0, self.y1 = y_range
        self.points: list[tuple[float, float]] = []  # where data was drawn, to keep the legend off it

    def px(self, x: float, y: float, y_range=None) -> tuple[float, float]:
        left, top, right, bottom = self.box
        y0, y1 = y_range or (self.y0, self.y1)
        fx = 0.5 if self.x1 == self.x0 else (x - self.x0) / (self.x1 - self.x0)
        inset = 12  # the first and last epochs sit off the frame, not on it
        return left + inset + fx * (right - left - 2 * inset), bottom - (y - y0) / (y1 - y0) * (bottom - top)

    def axes(self, x_ticks: list[float], title: str) -> None:
        left, top, right, bottom = self.box
        y_ticks = nice_ticks(self.y0, self.y1)
        step = y_ticks[1] - y_ticks[0] if len(y_ticks) > 1 else abs(self.y1 - self.y0) or 1.0
        for v in y_ticks:
            _, y = self.px(self.x0, v)
            self.draw.line([(left, y), (right, y)], fill=LIGHT)
            text = _fmt(v, step)
            w = self.draw.textlength(text, font=self.font)
            self.draw.text((left - 6 - w, y - 6), text, fill=GREY, font=self.font)
        for v in x_ticks:
            x, _ = self.px(v, self.y0)
            self.draw.line([(x, bottom), (x, bottom + 4)], fill=GREY)
            text = f"{v:g}"
            w = self.draw.textlength(text, font=self.font)
            self.draw.text((x - w / 2, bottom + 6), text, fill=GREY, font=self.font)
        self.draw.rectangle(self.box, outline=GREY)
        w = self.draw.textlength(title, font=self.font)
        self.draw.text(((left + right) / 2 - w / 2, top - 16), title, fill=BLACK, font=self.font)

    def right_axis(self, y_range: tuple[float, float], colour) -> None:
        _, _, right, _ = self.box
        ticks = nice_ticks(*y_range)
        step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
        for v in ticks:
            _, y = self.px(self.x0, v, y_range)
            self.draw.line([(right, y), (right + 4, y)], fill=colour)
            self.draw.text((right + 6, y - 6), _fmt(v, step), fill=colour, font=self.font)

    def line(self, x: np.ndarray, y: np.ndarray, colour, dashed: bool = False, y_range=None) -> None:
        """Segments between consecutive finite points (a NaN breaks the line); a dot on each point."""
        pts = [self.px(a, b, y_range) if math.isfinite(b) else None for a, b in zip(x, y)]
        self.points += [p for p in pts if p is not None]
        for p, q in zip(pts, pts[1:]):
            if p is not None and q is not None:
                self.points += [(p[0] + (q[0] - p[0]) * t / 8, p[1] + (q[1] - p[1]) * t / 8) for t in range(1, 8)]
                if dashed:
                    self._dashed(p, q, colour)
                else:
                    self.draw.line([p, q], fill=colour, width=2)
        if len(x) <= 30:  # dots while they stay readable: a single epoch (or a point between NaNs) still shows
            for p in pts:
                if p is not None:
                    self.draw.ellipse([p[0] - 3, p[1] - 3, p[0] + 3, p[1] + 3], fill=colour)

    def _dashed(self, p, q, colour, dash: float = 6.0) -> None:
        length = math.dist(p, q)
        n = max(1, int(length // dash))
        for i in range(0, n, 2):
            a, b = i / n, min(i + 1, n) / n
            self.draw.line([(p[0] + (q[0] - p[0]) * a, p[1] + (q[1] - p[1]) * a),
                            (p[0] + (q[0] - p[0]) * b, p[1] + (q[1] - p[1]) * b)], fill=colour, width=2)

    def legend(self, entries: list[Series]) -> None:
        if not entries:
            return
        box_w = max(self.draw.textlength(s.label, font=self.font) for s in entries) + 34
        box_h = 4 + 14 * len(entries)
        left, top = self._legend_corner(box_w, box_h)
        self.draw.rectangle([left, top, left + box_w, top + box_h], fill=WHITE, outline=LIGHT)
        for i, s in enumerate(entries):
            y = top + 9 + 14 * i
            if s.dashed:
                self._dashed((left + 6, y), (left + 26, y), s.colour, dash=4.0)
            else:
                self.draw.line([(left + 6, y), (left + 26, y)], fill=s.colour, width=2)
            self.draw.text((left + 30, y - 6), s.label, fill=BLACK, font=self.font)

    def _legend_corner(self, w: float, h: float) -> tuple[float, float]:
        """The inner corner (top-right first) whose legend box would cover the fewest drawn points."""
        left, top, right, bottom = self.box
        corners = [(right - 6 - w, top + 6), (right - 6 - w, bottom - 6 - h), (left + 6, top + 6),
                   (left + 6, bottom - 6 - h)]

        def covered(corner):
            x, y = corner
            return sum(x - 4 <= px <= x + w + 4 and y - 4 <= py <= y + h + 4 for px, py in self.points)

        return min(corners, key=covered)

    def message(self, text: str) -> None:
        left, top, right, bottom = self.box
        w = self.draw.textlength(text, font=self.font)
        self.draw.text(((left + right) / 2 - w / 2, (top + bottom) / 2 - 6), text, fill=GREY, font=self.font)


def training_curves(history: pd.DataFrame, out_png: str | Path, title: str,
                    size: tuple[int, int] = (960, 400)) -> Path:
    """Write a two-panel training-curve PNG of a Keras history (one row per epoch) and return its path."""
    width, height = size
    n = len(history)
    epochs = _column(history, "epoch")
    if epochs is None or not np.isfinite(epochs).all():
        epochs = np.arange(n, dtype=np.float64)
    x_range = (float(epochs.min()), float(epochs.max())) if n else (0.0, 1.0)
    x_ticks = nice_ticks(*x_range) if x_range[1] > x_range[0] else [x_range[0]]
    x_ticks = [t for t in x_ticks if t == int(t)] or x_ticks  # whole epochs only

    img = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    tw = draw.textlength(title, font=font)
    draw.text((width / 2 - tw / 2, 6), title, fill=BLACK, font=font)

    lr_name = next((c for c in LR_COLUMNS if c in history.columns), None)
    lr = _column(history, lr_name) if lr_name else None
    lr_range = _range([lr]) if lr is not None else None
    margin_l, margin_r, gap, top, bottom = 60, 60, 110, 44, height - 34
    panel_w = (width - margin_l - margin_r - gap) // 2
    for i, (name, series) in enumerate(PANELS):
        left = margin_l + i * (panel_w + gap)
        box = (left, top, left + panel_w, bottom)
        present = [(s, v) for s in series if (v := _column(history, s.column)) is not None]
        y_range = _range([v for _, v in present])
        if y_range is None:
            draw.rectangle(box, outline=GREY)
            draw.text(((box[0] + box[2]) / 2 - 20, top - 16), name, fill=BLACK, font=font)
            panel = _Panel(draw, font, box, x_range, (0.0, 1.0))
            panel.message(f"no {name} logged")
            continue
        panel = _Panel(draw, font, box, x_range, y_range)
        panel.axes(x_ticks, f"{name} by epoch")
        entries = []
        for s, v in present:
            panel.line(epochs, v, s.colour)
            entries.append(s)
        if i == 0 and lr_range is not None:
            panel.right_axis(lr_range, LR_COLOUR)
            panel.line(epochs, lr, LR_COLOUR, dashed=True, y_range=lr_range)
            entries.append(Series(lr_name, "learning rate (right axis)", LR_COLOUR, dashed=True))
        panel.legend(entries)
        label = "epoch"
        lw = draw.textlength(label, font=font)
        draw.text(((box[0] + box[2]) / 2 - lw / 2, bottom + 18), label, fill=GREY, font=font)

    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        img.save(tmp, format="PNG")
    return out_png
