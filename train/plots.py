"""What a run draws: held-out sample grids and the loss curves (losses.png)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from p2p_demo.image import grid, to_images
from train.config import ConfigError
from train.dataset import PairedData
from train.evaluate import render_test_mode
from train.trainer import LOSS_NAMES, OPTIONAL_LOSSES


def sample_grid(G: nn.Module, data: PairedData, count: int, in_channels: int, seed: int = 0) -> np.ndarray:
    """Rows of input | output | target for the first ``count`` held-out pairs, in the reference's
    test mode with fixed dropout seeds, so grids from different steps are comparable."""
    idx = torch.arange(min(count, len(data)))
    a, _ = data.pairs(idx, in_channels)
    device = next(G.parameters()).device
    out = render_test_mode(G, a.to(device), seed)
    G.set_training_mode()
    rows = []
    for i, y in zip(idx.tolist(), to_images(out)):
        target = data.B[i].permute(1, 2, 0).cpu().numpy()
        rows.append([data.A[i].cpu().numpy(), y, target])
    return grid(rows)


def plot_losses(history: Sequence[dict[str, float]], path: str | os.PathLike) -> None:
    """Panels (two a row, 440 x 260 px each) of the losses against the step; the mode-seeking and
    flat-fill terms only when the run used them. Drawn with matplotlib's Agg canvas (no display, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = [n for n in LOSS_NAMES if n not in OPTIONAL_LOSSES or any(h.get(n) for h in history)]
    rows = (len(names) + 1) // 2
    fig = Figure(figsize=(8.8, 2.6 * rows), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 2, squeeze=False).ravel()
    steps = np.array([h["step"] for h in history], dtype=np.float64)
    for k, ax in enumerate(axes):
        if k >= len(names):
            ax.set_visible(False)
            continue
        name = names[k]
        vals = np.array([h.get(name, np.nan) for h in history], dtype=np.float64)
        ok = np.isfinite(vals)
        ax.plot(steps[ok], vals[ok], color=f"C{k}", linewidth=1.5, marker="o" if ok.sum() == 1 else None)
        ax.set_title(name + (" (mean |G(x) - y|)" if name == "G_L1" else ""), fontsize=9, loc="left")
        ax.tick_params(labelsize=8)
        ax.grid(color="0.9")
        if k >= len(names) - 2:
            ax.set_xlabel("step", fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def check_plotting() -> None:
    """matplotlib draws losses.png at the end: its absence is said before the run, not after it."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as e:
        raise ConfigError("fit draws its loss curves with matplotlib: pip install -r requirements-train.txt") from e
