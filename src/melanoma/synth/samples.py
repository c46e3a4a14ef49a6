"""Sample grids of the CycleGAN while it trains: each row a fixed benign training image, its translation into a
synthetic melanoma and the translation carried back (the cycle), so drift and collapse show by eye."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from melanoma.plots import figure, save

COLUMNS = ("real (benign)", "translated (synthetic melanoma)", "cycled back")


def sample_grid(real: np.ndarray, g_ab, g_ba, path: Path, title: str) -> Path:
    """real: images in [-1, 1], (n, size, size, 3). Written atomically with matplotlib (Agg)."""
    from melanoma.synth.loop import inference
    from melanoma.synth.writer import to_uint8

    fake = inference(g_ab)(real)
    cycled = inference(g_ba)(fake)
    panels = [to_uint8(x) for x in (real, fake, cycled)]
    n = len(real)
    fig = figure(3 * 160, n * 160 + 40)
    axes = fig.subplots(n, 3, squeeze=False)
    for r in range(n):
        for c in range(3):
            ax = axes[r][c]
            ax.imshow(panels[c][r])
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(COLUMNS[c], fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save(fig, path)
