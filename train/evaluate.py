"""Score a generator on a prepared dataset's held-out split.

``python -m train evaluate --model <folder|hub spec|checkpoint.pt> --data DIR [--split test]
[--seed 0] [--out DIR]`` writes ``metrics_<split>.json`` and ``grid_<split>.png`` (input | output |
target) and prints the metrics.

Mode: the reference's test mode, on purpose (it is what the app renders): every image normalised
with its own statistics, dropout on, image i's dropout masks drawn from its own generator seeded
with ``p2p_demo.masks.sample_seed(seed, i)``. Results do not depend on the batch size and are
identical for a given seed. Outputs are quantised to uint8 (the PNG a user gets) before scoring.

Metrics, per image then averaged over the split:
* ``l1``: mean |output - target| with both in [-1, 1] (the training L1);
* ``psnr``: skimage.metrics.peak_signal_noise_ratio on [0, 1] (10 log10(1 / MSE)), capped at 100 dB
  for identical images;
* ``ssim``: skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=1) on [0, 1], i.e. Wang et al.'s 11x11 Gaussian window,
  channels averaged;
* ``edge_f1`` (with ``edge_precision``, ``edge_recall``): how well the output keeps the drawing.
  The output is run through the project's edge pipeline, ``p2p_demo.edges.photo_to_edges(output,
  method="canny", style=<the model's line style>)`` (Canny for speed; HED would be slower and is
  not needed to tell whether lines survived), mapped back from its frame onto the input's pixels,
  and compared with the input's ink (A < 128): precision = predicted ink within 2 px of input ink,
  recall = input ink within 2 px of predicted ink. Only for datasets with a line style.
  ``edge_f1_target`` is the same score for the ground-truth targets: the ceiling of this measure on
  the data (Canny on the target never reproduces the input drawing exactly).
* ``flat_std``: how clean the fills are. The 5x5 local standard deviation (0-255, channels
  averaged) of the output, averaged over the pixels where the target's own is below
  ``FLAT_THRESHOLD`` (flat paper and flat fills). A mottled or speckled fill scores high; the
  targets score ~0.
* ``variety``: how different the dropout samples are. Each input is also rendered with seeds
  ``seed + 1 .. seed + k - 1`` (``--variety-seeds k``, default 4) and the mean pairwise |a - b|
  (in [-1, 1], the units of ``l1``) between the k samples is averaged over the split. 0 for a
  deterministic model.
* ``l1_mean``: the ``l1`` of the average of those k samples: the model's central drawing. ``l1`` minus
  it is what drawing one sample instead of the average costs; a sample of another plausible colour
  scores worse than the average, so variety and seed-0 L1 pull against each other through it, and
  what remains of ``l1`` is how well the model draws what it is sure of. Equal to ``l1`` for a
  deterministic model.
* ``paper_l1``: what the samples draw on the paper around the object (colour clouds, specks): the
  mean |output - white| (units of ``l1``) over the target's paper pixels (white in every channel,
  ``train.losses.PAPER_LEVEL``), averaged over the ``variety`` samples. 0 for clean paper.
* ``sharpness``: how much of the targets' edge contrast the output reproduces. At the target's
  edge pixels (Sobel gradient of at least ``EDGE_GRADIENT`` levels per pixel, any channel), the
  output's gradient projected on the target's: sum(grad out . grad target) / sum(|grad target|^2),
  channels together. 1 is an edge as crisp as the target's in the same place; a blurred edge scores
  lower (a plain-L1 model's averaged colours do), a missing one 0. Noise and texture add gradients
  in every direction, which average out in the projection, so a speckled output does not score as
  sharp.
* ``chroma``: how colourful the output is where the target draws the object, against the target:
  over the target's object pixels (not paper), the sum of the output's chroma (max - min of R, G,
  B) divided by the target's. 1 is as colourful as the target; a rendering that turns coloured
  objects beige or grey scores well below 1 (an average of several plausible colours is paler than
  each of them), one that over-saturates above 1. Only for colour targets whose objects have colour
  (mean chroma of at least ``CHROMA_MIN`` levels).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from p2p_demo.image import array_to_rgb as to_rgb, grid, resize, save_image, to_images
from p2p_demo.masks import sample_seeds, seeded_forward
from train.dataset import NotPrepared, PairedData, load_manifest
from train.losses import PAPER_LEVEL, flat_mask, local_std
from train.distributed import resolve_device
from train.resume import checkpoint_generator, read_train_checkpoint

log = logging.getLogger(__name__)

EDGE_TOLERANCE_PX = 2
EDGE_GRADIENT = 16.0  # 0-255 levels per pixel: a target pixel this steep is an edge, for the sharpness score
VARIETY_SEEDS = 4
PSNR_CAP = 100.0
CHROMA_MIN = 8.0  # 0-255 levels: a target object less colourful than this is grey, and has no colour to keep
MODE = "reference test mode: per-image statistics, dropout on, per-image seeded masks"


@torch.no_grad()
def render_test_mode(G: nn.Module, a: torch.Tensor, seed: int, first_index: int = 0) -> torch.Tensor:
    """G(a) in the reference's test mode; item k uses dropout seed sample_seed(seed, first_index + k).

    Leaves G in inference mode: call ``G.set_training_mode()`` before training again.
    """
    return seeded_forward(G, a, sample_seeds(seed, range(first_index, first_index + a.shape[0])))


def line_style_of(manifest_or_info: Any):
    """The LineStyle a dataset / model was made with, or None when its inputs are not edge maps."""
    from p2p_demo.edges import LineStyle

    style = manifest_or_info.get("line_style") if isinstance(manifest_or_info, dict) else getattr(manifest_or_info, "line_style", None)
    if not style:
        return None
    return style if isinstance(style, LineStyle) else LineStyle.from_dict(style)


def output_edges(output: np.ndarray, style) -> np.ndarray:
    """bool (S, S) edge mask of a generated image, in the image's own pixels (see module doc)."""
    from p2p_demo.edges import NothingDrawn, photo_to_edges

    s = output.shape[0]
    try:
        em = photo_to_edges(output, method="canny", style=style)
    except NothingDrawn:
        return np.zeros((s, s), bool)
    x0, y0, x1, y1 = em.box
    lines = resize(em.image, (x1 - x0, y1 - y0)) < 128  # back to the source's scale
    mask = np.zeros((s, s), bool)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, s), min(y1, s)
    if sx1 > sx0 and sy1 > sy0:
        mask[sy0:sy1, sx0:sx1] = lines[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0]
    return mask


def edge_scores(pred: np.ndarray, true: np.ndarray, tolerance: int = EDGE_TOLERANCE_PX) -> tuple[float, float, float]:
    """(precision, recall, F1) of two bool edge masks, each pixel matched within ``tolerance`` px."""
    import cv2

    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * tolerance + 1, 2 * tolerance + 1))
    near_true = cv2.dilate(true.astype(np.uint8), k) > 0
    near_pred = cv2.dilate(pred.astype(np.uint8), k) > 0
    n_pred, n_true = int(pred.sum()), int(true.sum())
    if n_pred == 0 and n_true == 0:
        return 1.0, 1.0, 1.0
    p = float((pred & near_true).sum() / n_pred) if n_pred else 0.0
    r = float((true & near_pred).sum() / n_true) if n_true else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def flat_std(output: np.ndarray, target: np.ndarray) -> float | None:
    """Mean local std (0-255) of ``output`` over the target's flat pixels (None when the target has
    none): the measure ``train.losses.flat_fill_loss`` trains against, on uint8 pictures."""
    def tensor(image: np.ndarray) -> torch.Tensor:  # uint8 (H, W[, C]) -> (1, C, H, W), 0-255
        x = torch.from_numpy(np.asarray(image, np.float32))
        return (x[None] if x.ndim == 2 else x.permute(2, 0, 1))[None]

    flat = flat_mask(tensor(target) / 127.5 - 1)[0, 0]
    if not flat.any():
        return None
    out = output if target.ndim == 2 or target.shape[-1] == output.shape[-1] else output[..., : target.shape[-1]]
    return float(local_std(tensor(out))[0, 0][flat].double().mean())


def paper_pixels(target: np.ndarray) -> np.ndarray:
    """(H, W) bool: the uint8 target's paper, white in every channel (``train.losses.object_mask``'s
    complement, on 0-255 pictures)."""
    t = target if target.ndim == 3 else target[..., None]
    return (t >= (PAPER_LEVEL + 1) * 127.5).all(axis=2)


def paper_l1(samples: Sequence[np.ndarray], target: np.ndarray) -> float | None:
    """Mean |sample - white| over the target's paper pixels, in [-1, 1] units, averaged over the
    uint8 samples (None when the target has no paper)."""
    t = target if target.ndim == 3 else target[..., None]
    paper = paper_pixels(t)
    if not paper.any():
        return None
    c = t.shape[2]
    return float(np.mean([(255.0 - s[..., :c][paper].astype(np.float64)).mean() / 127.5 for s in samples]))


def gradients(image: np.ndarray) -> np.ndarray:
    """(H, W, C, 2) float: the x and y Sobel derivatives of an image, in levels per pixel."""
    import cv2

    x = image.astype(np.float64)
    if x.ndim == 2:
        x = x[..., None]
    d = [np.stack([cv2.Sobel(x[..., c], cv2.CV_64F, 1, 0, ksize=3, borderType=cv2.BORDER_REFLECT),
                   cv2.Sobel(x[..., c], cv2.CV_64F, 0, 1, ksize=3, borderType=cv2.BORDER_REFLECT)], axis=-1)
         for c in range(x.shape[2])]
    return np.stack(d, axis=2) / 8.0  # the 3x3 Sobel kernel weighs a unit step 8


def sharpness(output: np.ndarray, target: np.ndarray) -> float | None:
    """The share of the target's edge contrast the output reproduces at the target's edges (None
    when the target has no edge)."""
    tgt = gradients(target)
    edge = (np.linalg.norm(tgt, axis=-1) >= EDGE_GRADIENT).any(axis=2)
    if not edge.any():
        return None
    out = output if target.ndim == 2 or target.shape[-1] == output.shape[-1] else output[..., : target.shape[-1]]
    g, t = gradients(out)[edge], tgt[edge]
    return float((g * t).sum() / (t * t).sum())


def chroma(output: np.ndarray, target: np.ndarray) -> float | None:
    """The output's colour strength on the target's object relative to the target's (see module
    doc; None for grey targets and targets with no object)."""
    if target.ndim == 2 or target.shape[-1] < 3:
        return None
    obj = ~paper_pixels(target)
    if not obj.any():
        return None

    def strength(image: np.ndarray) -> float:
        x = image[..., :3][obj].astype(np.float64)
        return float((x.max(axis=1) - x.min(axis=1)).sum())

    truth = strength(target)
    return strength(output) / truth if truth >= CHROMA_MIN * obj.sum() else None


def pairwise_l1(samples: Sequence[np.ndarray]) -> float:
    """Mean |a - b| over all pairs of uint8 images, in [-1, 1] units."""
    xs = [s.astype(np.float64) / 127.5 for s in samples]
    d = [np.mean(np.abs(xs[i] - xs[j])) for i in range(len(xs)) for j in range(i + 1, len(xs))]
    return float(np.mean(d)) if d else 0.0


def mean_l1(samples: Sequence[np.ndarray], target: np.ndarray) -> float:
    """``l1`` (in [-1, 1] units) of the pixel-wise average of the uint8 samples against the target."""
    t = target if target.ndim == 3 else target[..., None]
    mean = np.mean([s[..., : t.shape[2]].astype(np.float64) for s in samples], axis=0)
    return float(np.mean(np.abs(mean - t))) / 127.5


def image_scores(output: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """l1 / psnr / ssim of one uint8 output (H, W, 3) against its uint8 target (H, W, C)."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    if target.ndim == 2:
        target = target[..., None]
    out = output[..., : target.shape[2]].astype(np.float64) / 255.0  # a 1-channel model's output is repeated
    tgt = target.astype(np.float64) / 255.0
    with np.errstate(divide="ignore"):  # identical images: inf dB, capped
        psnr = min(PSNR_CAP, float(peak_signal_noise_ratio(tgt, out, data_range=1.0)))
    if out.shape[2] == 1:
        out, tgt, axis = out[..., 0], tgt[..., 0], None
    else:
        axis = 2
    ssim = structural_similarity(out, tgt, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 data_range=1.0, channel_axis=axis)
    return {"l1": float(np.mean(np.abs(out - tgt))) * 2.0, "psnr": psnr, "ssim": float(ssim)}


def evaluate_generator(G: nn.Module, data: PairedData, *, seed: int = 0, line_style=None, batch_size: int = 8,
                       max_items: int = 0, variety_seeds: int = VARIETY_SEEDS) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Metrics of G on ``data`` (see module doc) and its uint8 outputs (seed ``seed``). Leaves G in
    inference mode."""
    device = next(G.parameters()).device
    in_ch = G.config.in_channels
    n = len(data) if not max_items else min(max_items, len(data))
    per: dict[str, list[float]] = {k: [] for k in ("l1", "psnr", "ssim", "edge_precision", "edge_recall", "edge_f1",
                                                   "edge_f1_target", "flat_std", "paper_l1", "sharpness", "chroma",
                                                   "variety", "l1_mean")}
    outputs: list[np.ndarray] = []
    sampled = variety_seeds > 1 and G.has_dropout
    for start in range(0, n, batch_size):
        idx = torch.arange(start, min(start + batch_size, n))
        a, _ = data.pairs(idx, in_ch)
        ys = to_images(render_test_mode(G, a.to(device), seed, first_index=start))
        others = [to_images(render_test_mode(G, a.to(device), seed + s, first_index=start))
                  for s in range(1, variety_seeds)] if sampled else []
        for j, (i, y) in enumerate(zip(idx.tolist(), ys)):
            target = data.B[i].permute(1, 2, 0).cpu().numpy()
            for k, v in image_scores(y, target).items():
                per[k].append(v)
            fs = flat_std(y, target)
            if fs is not None:
                per["flat_std"].append(fs)
            sh = sharpness(y, target)
            if sh is not None:
                per["sharpness"].append(sh)
            ch = chroma(y, target)
            if ch is not None:
                per["chroma"].append(ch)
            samples = [y] + [o[j] for o in others]
            per["variety"].append(pairwise_l1(samples) if sampled else 0.0)
            per["l1_mean"].append(mean_l1(samples, target))
            pl = paper_l1(samples, target)
            if pl is not None:
                per["paper_l1"].append(pl)
            if line_style is not None:
                ink = data.A[i].cpu().numpy() < 128
                p, r, f = edge_scores(output_edges(y, line_style), ink)
                per["edge_precision"].append(p)
                per["edge_recall"].append(r)
                per["edge_f1"].append(f)
                # the same score for the ground truth: the ceiling this pipeline allows
                per["edge_f1_target"].append(edge_scores(output_edges(to_rgb(target), line_style), ink)[2])
            outputs.append(y)
    metrics: dict[str, Any] = {"n": n, "seed": seed, "mode": MODE}
    metrics.update({k: (float(np.mean(v)) if v else None) for k, v in per.items()})
    metrics["variety_seeds"] = variety_seeds if sampled else 1
    metrics["ssim_impl"] = "skimage structural_similarity, gaussian sigma 1.5 (11x11), population covariance, data_range 1"
    metrics["edge_method"] = (f"photo_to_edges canny with the model's line style, F1 within {EDGE_TOLERANCE_PX} px"
                              if line_style is not None else None)
    return metrics, outputs


# --------------------------------------------------------------------------------------------
# Loading a model to evaluate


def load_model(spec: str, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """A generator and what is known about it, from a training checkpoint (.pt) or a model folder /
    hub spec (through p2p_demo.hub.load_generator)."""
    ckpt = read_train_checkpoint(spec)
    if ckpt is not None:
        G = checkpoint_generator(ckpt)
        info = {"line_style": ckpt.get("line_style"), "step": ckpt.get("step"), "source": "checkpoint",
                "weights": "ema" if ckpt.get("G_ema") else "raw"}
    else:
        from p2p_demo.hub import load_generator

        G, meta = load_generator(spec)
        info = {"line_style": getattr(meta, "line_style", None), "source": "model"}
    return G.to(device).float(), info


def default_out(spec: str) -> Path:
    path = Path(spec)
    if path.is_file() and path.parent.name == "checkpoints":  # runs/<name>/checkpoints/last.pt
        return path.parent.parent / "eval"
    return Path("runs") / "eval" / (path.name or "model")


def evaluate(model: str, data: str, *, split: str = "test", seed: int = 0, out: str | None = None,
             device: str = "auto", batch_size: int = 8, max_items: int = 0, grid_rows: int = 8,
             variety_seeds: int = VARIETY_SEEDS, freehand: bool = False) -> dict[str, Any]:
    G, info = load_model(model, resolve_device(device))
    ds = PairedData.load(data, split, "cpu")
    if len(ds) == 0:
        raise SystemExit(f"evaluate: {data} has no {split!r} pairs")
    if ds.channels != G.config.out_channels:
        raise SystemExit(f"evaluate: the model makes {G.config.out_channels}-channel images, {data} has {ds.channels}")
    style = line_style_of(info) or line_style_of(load_manifest(data))
    if freehand:  # the same drawings as if drawn by hand: how the model copes with the app's users
        if style is None:
            raise SystemExit(f"evaluate: --freehand redraws edge maps, and {data} has no line style")
        from train.freehand import perturb_all

        ds = PairedData(torch.from_numpy(perturb_all(ds.A.numpy(), seed, style)), ds.B, ds.names)
        split = f"{split}_freehand"
    metrics, outputs = evaluate_generator(G, ds, seed=seed, line_style=style, batch_size=batch_size, max_items=max_items,
                                          variety_seeds=variety_seeds)
    metrics = {"model": str(model), "data": str(data), "split": split, "freehand": freehand,
               **({"step": info["step"]} if info.get("step") is not None else {}), **metrics}
    out_dir = Path(out) if out else default_out(model)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"metrics_{split}.json").write_text(json.dumps(metrics, indent=2))
    rows = [[ds.A[i].numpy(), outputs[i], ds.B[i].permute(1, 2, 0).numpy()] for i in range(min(grid_rows, len(outputs)))]
    save_image(grid(rows), out_dir / f"grid_{split}.png")
    metrics["out"] = str(out_dir)
    return metrics


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(prog="python -m train evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="training checkpoint (.pt), model folder or hub spec")
    p.add_argument("--data", required=True, help="prepared dataset folder")
    p.add_argument("--split", default="test")
    p.add_argument("--seed", type=int, default=0, help="dropout seed (same seed -> same numbers)")
    p.add_argument("--out", default=None, help="output folder (default: <run>/eval or runs/eval/<model>)")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-items", type=int, default=0, help="score only the first N pairs (0 = all)")
    p.add_argument("--variety-seeds", type=int, default=VARIETY_SEEDS,
                   help="dropout samples per input for the variety score (1 = skip it)")
    p.add_argument("--freehand", action="store_true",
                   help="score on the split's drawings redrawn with hand-drawing faults (train.freehand, seeded "
                        "per drawing): writes metrics_<split>_freehand.json")
    args = p.parse_args(argv)
    from p2p_demo.registry import LoadError

    try:
        m = evaluate(args.model, args.data, split=args.split, seed=args.seed, out=args.out, device=args.device,
                     batch_size=args.batch_size, max_items=args.max_items, variety_seeds=args.variety_seeds,
                     freehand=args.freehand)
    except (LoadError, NotPrepared) as e:
        raise SystemExit(f"evaluate: {e}") from e
    print(json.dumps({k: m[k] for k in ("n", "l1", "psnr", "ssim", "edge_f1", "flat_std", "paper_l1", "sharpness",
                                        "chroma", "variety", "l1_mean", "out")}))
    return 0
