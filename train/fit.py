"""Train a pix2pix generator: ``python -m train fit --data DIR --name NAME [options]``.

The objective and the lr schedule are train.trainer's. ``--max-steps`` / ``--max-seconds`` cut a
run short without changing the schedule, so equal-budget comparisons see the same lr at each step.
``--lr-schedule budget`` (with ``--max-seconds``) lays the same constant-then-decay shape over the
wall-clock budget instead, so a run that must stop at a time reaches lr 0 when it does.

The same script runs on one process or under torchrun (train.distributed). Each rank trains on its
own shard of every epoch; only rank 0 writes files.

Run folder: ``<out_dir>/<name>/`` = checkpoints/last.pt, samples/step_XXXXXX.png, log.jsonl,
losses.png, metrics.json. ``last.pt`` (train.checkpoint) holds everything needed to continue
(``--resume``); a resumed run takes exactly the steps an uninterrupted one would have taken.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from p2p_demo.image import grid, save_image, to_images
from train.checkpoint import (CHECKPOINT_VERSION, CheckpointError, load_checkpoint, rng_state, save_checkpoint,
                              seed_everything, set_rng_state)
from train.config import AMP_MODES, GAN_MODES, LOSSES, LR_SCHEDULES, RESUMABLE, ConfigError, TrainConfig
from train.dataset import Jitter, NotPrepared, PairedData, batch_indices, load_manifest, split_size, steps_per_epoch
from train.distributed import init_distributed, resolve_device
from train.evaluate import evaluate_generator, line_style_of, render_test_mode
from train.freehand import Freehand
from train.lineage import Lineage, load_init_source, stint_record
from train.trainer import LOSS_NAMES, Trainer, check_patchgan_fits

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# Pictures: held-out sample grids and the loss curves


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
    """Panels (two a row, 440 x 260 px each) of the losses against the step; the mode-seeking term
    only when the run used it. Drawn with matplotlib's Agg canvas (no display, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = [n for n in LOSS_NAMES if n != "G_MS" or any(h.get(n) for h in history)]
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


# --------------------------------------------------------------------------------------------
# The run


def run_dir(cfg: TrainConfig) -> Path:
    return Path(cfg.out_dir) / cfg.name


def _check_resumable(cfg: TrainConfig, saved: dict[str, Any]) -> None:
    diff = {k: (saved[k], v) for k, v in cfg.to_dict().items()
            if k not in RESUMABLE and k in saved and saved[k] != v}
    if diff:
        lines = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in diff.items())
        raise ConfigError(f"--resume with a different experiment ({lines}); start a new --name instead")


def _check_plotting() -> None:
    """matplotlib draws losses.png at the end: its absence is said before the run, not after it."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as e:
        raise ConfigError("fit draws its loss curves with matplotlib: pip install -r requirements-train.txt") from e


def _data_info(folder: str) -> dict[str, Any]:
    """What a model card needs to know about the data: the manifest without per-file lists."""
    manifest = load_manifest(folder)
    info = {k: v for k, v in manifest.items() if k not in ("skipped", "excluded")}
    info["skipped_count"] = len(manifest.get("skipped") or [])
    info["excluded_count"] = sum(int(v.get("count", 0)) for v in (manifest.get("excluded") or {}).values())
    info["path"] = str(folder)
    return info


@dataclass
class Phase:
    """What a step trains on at one resolution: the pairs, their jitter and their freehand faults."""

    data: PairedData
    jitter: Jitter
    freehand: Freehand
    style: dict[str, Any] | None


def _phase(cfg: TrainConfig, folder: str, manifest: dict[str, Any], data: PairedData, load_size: int) -> Phase:
    style = line_style_of(manifest)
    if cfg.freehand and style is None:
        raise ConfigError(f"--freehand redraws edge-map inputs in their line style, and {folder} has none "
                          "(its inputs are not edge maps): leave --freehand at 0")
    return Phase(data, Jitter(data.size, jitter=cfg.jitter, load_size=load_size, flip=cfg.flip),
                 Freehand(style, cfg.freehand), style)


def _low_res_phase(cfg: TrainConfig, train: PairedData, device: torch.device) -> Phase:
    """The curriculum's first phase: ``--low-res-data``, which must hold the same training pairs, in
    the same order, at a smaller size (``train prepare --size``), so a step's batch is the same pairs
    at either resolution."""
    manifest = load_manifest(cfg.low_res_data)
    low = PairedData.load(cfg.low_res_data, "train", device)
    hint = f"prepare it from the same source with `python -m train prepare ... --size {train.size // 2}`"
    if low.names != train.names:
        raise ConfigError(f"--low-res-data {cfg.low_res_data} does not hold the same training pairs as --data "
                          f"{cfg.data} ({len(low)} against {len(train)}, or in another order); {hint}")
    if low.size >= train.size or low.channels != train.channels:
        raise ConfigError(f"--low-res-data {cfg.low_res_data} is {low.size} px with {low.channels} channels; the "
                          f"curriculum needs a smaller size than --data's {train.size} px, same channels; {hint}")
    load_size = round(cfg.load_size * low.size / train.size) if cfg.load_size else 0
    return _phase(cfg, cfg.low_res_data, manifest, low, load_size)


def fit(cfg: TrainConfig) -> dict[str, Any]:
    """Train as configured; returns the metrics written to metrics.json (rank 0; {} elsewhere)."""
    rank, world, local_rank = init_distributed(cfg.device)
    try:
        return _fit(cfg, rank, world, local_rank)
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _fit(cfg: TrainConfig, rank: int, world: int, local_rank: int) -> dict[str, Any]:
    t_start = time.perf_counter()
    device = resolve_device(cfg.device, local_rank, world)
    if cfg.workers:
        torch.set_num_threads(cfg.workers)
    main = rank == 0
    if main:
        _check_plotting()
    out = run_dir(cfg)
    ckpt_path = out / "checkpoints" / "last.pt"

    ckpt: dict[str, Any] | None = None
    if cfg.resume:
        ckpt = load_checkpoint(ckpt_path)
        _check_resumable(cfg, ckpt["config"])
    elif ckpt_path.exists():
        raise FileExistsError(f"{ckpt_path} exists: continue it with --resume, or pick another --name")

    manifest = load_manifest(cfg.data)
    train = PairedData.load(cfg.data, "train", device)
    held_out = PairedData.load(cfg.data, "test", device) if split_size(manifest, "test") else None
    if held_out is None and main:
        log.warning("no test split in %s: sample grids use training pairs and no final evaluation runs", cfg.data)
    in_ch, out_ch = cfg.in_channels or train.channels, train.channels
    full = _phase(cfg, cfg.data, manifest, train, cfg.load_size)
    low = _low_res_phase(cfg, train, device) if cfg.low_res_data else None
    sizes = [train.size] + ([low.data.size] if low else [])
    for s in sizes:
        check_patchgan_fits(cfg.n_layers, s)
    depth = cfg.num_downs or int(math.log2(min(sizes)))
    if low is not None and any(s % 2**depth for s in sizes):
        raise ConfigError(f"the curriculum trains one U-Net at {low.data.size} and {train.size} px: both must be "
                          f"multiples of 2**num_downs = {2**depth} (give --num-downs "
                          f"{int(math.log2(low.data.size))} or less; the 8-level unet_256 cannot see 128 px)")
    spe = steps_per_epoch(len(train), cfg.batch_size, world)
    # the smallest size decides the U-Net's default depth (a 1x1 bottleneck there) and must take it
    trainer = Trainer(cfg, size=min(sizes), in_channels=in_ch, out_channels=out_ch, device=device,
                      steps_per_epoch=spe, world=world)
    total = trainer.total_steps if not cfg.max_steps else min(trainer.total_steps, cfg.max_steps)

    def phase_at(step: int) -> Phase:
        """Which resolution this step trains at: the low one for the first low_res_share of the budget
        (of the wall clock with --max-seconds, else of the schedule's steps, which --max-steps does not
        change), so a resumed run is in the same phase."""
        if low is None:
            return full
        used = trainer.budget_used if cfg.max_seconds else step / max(trainer.total_steps, 1)
        return low if used < cfg.low_res_share else full
    jitter_rng = torch.Generator()
    seed_everything(cfg.seed + 1 + rank)  # dropout masks differ between ranks
    jitter_rng.manual_seed(cfg.seed * 1_000_003 + 7919 * (rank + 1))

    step, history, wall_before, images_before = 0, [], 0.0, 0
    lineage = Lineage()  # the stints the run started from (--init-from)
    if ckpt is not None:
        lineage = Lineage.from_dict(ckpt["lineage"]) if ckpt.get("lineage") else Lineage()
        trainer.load_state_dict(ckpt)
        step, history = int(ckpt["step"]), list(ckpt.get("history", []))
        wall_before, images_before = float(ckpt.get("wall_time", 0.0)), int(ckpt.get("images_seen", 0))
        if cfg.max_seconds:  # a budget schedule carries on from the time already spent, not from lr 1
            trainer.budget_used = wall_before / cfg.max_seconds
        if len(ckpt["rng"]) == world:
            set_rng_state(ckpt["rng"][rank], jitter_rng)
        elif main:
            log.warning("checkpoint was written by %d processes, now %d: RNG streams restart", len(ckpt["rng"]), world)
        del ckpt
    elif cfg.init_from:
        source = load_init_source(cfg.init_from)
        trainer.init_from(source)
        lineage = source.lineage
        if main:
            log.info("starting from %s: %d steps, %d images seen before this run", cfg.init_from,
                     lineage.steps, lineage.images_seen)

    if main:
        for sub in ("checkpoints", "samples"):
            (out / sub).mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        log_path = out / "log.jsonl"
        if step and log_path.is_file():  # drop lines the interrupted run wrote after the checkpoint
            kept = [ln for ln in log_path.read_text().splitlines() if ln and json.loads(ln).get("step", 0) <= step]
            log_path.write_text("".join(ln + "\n" for ln in kept))
        elif not step:
            log_path.write_text("")
    grid_data = held_out if held_out is not None else train

    def checkpoint() -> None:
        rngs = [None] * world
        if world > 1:
            dist.all_gather_object(rngs, rng_state(jitter_rng))
        else:
            rngs = [rng_state(jitter_rng)]
        if not main:
            return
        state = {
            "version": CHECKPOINT_VERSION, "step": step, "epoch": step / spe, "config": cfg.to_dict(),
            "generator_config": trainer.gen_config.to_dict(), "line_style": manifest.get("line_style"),
            "data": _data_info(cfg.data), "world_size": world, "rng": rngs, "history": history,
            "wall_time": wall_before + (time.perf_counter() - t_start), "images_seen": images_seen,
            "lineage": lineage.to_dict(), "discriminator_config": trainer.discriminator_config,
            "stint": stint_record(cfg.to_dict(), steps=step, images_seen=images_seen,
                                  wall_s=wall_before + (time.perf_counter() - t_start), threads=torch.get_num_threads(),
                                  world=world, device=device.type, init_from=cfg.init_from),
            **trainer.state_dict(),
        }
        save_checkpoint(state, ckpt_path)

    bar = None
    if main and cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=step, unit="step", dynamic_ncols=True, desc=cfg.name)
    images_seen = images_before
    overhead = 0.0  # seconds spent on checkpoints and samples, excluded from images/s
    t_loop = time.perf_counter()
    window_t, window_images = t_loop, 0
    start_step, running = step, {k: 0.0 for k in LOSS_NAMES}
    running_n = 0
    phase = phase_at(step)
    steps_at = {s: 0 for s in sizes}
    while step < total:
        now_phase = phase_at(step)
        if now_phase is not phase and main:
            log.info("step %d: the curriculum moves from %d px to %d px", step, phase.data.size, now_phase.data.size)
        phase = now_phase
        idx = batch_indices(len(train), step, cfg.batch_size, cfg.seed, rank, world)
        a, b = phase.data.pairs(idx, in_ch)
        a = phase.freehand(a, jitter_rng)
        a, b = phase.jitter(a, b, jitter_rng)
        losses = trainer.step(a, b)
        steps_at[phase.data.size] += 1
        step += 1
        images_seen += len(idx) * world
        window_images += len(idx) * world
        for k in LOSS_NAMES:
            running[k] = running[k] + losses[k]  # tensors: no device sync until we log
        running_n += 1

        stop = False
        if cfg.max_seconds and (world == 1 or step % cfg.log_every == 0):
            spent = wall_before + time.perf_counter() - t_start  # all sessions together
            if world > 1:  # every rank must stop at the same step, and use the same lr
                clock = torch.tensor([spent], device=device, dtype=torch.float64)
                dist.all_reduce(clock, op=dist.ReduceOp.MAX)
                spent = float(clock.item())
            stop = spent > cfg.max_seconds
            trainer.budget_used = spent / cfg.max_seconds

        if step % cfg.log_every == 0 or step == total or stop:
            vals = torch.stack([torch.as_tensor(running[k], device=device).float() for k in LOSS_NAMES]) / running_n
            if world > 1:
                dist.all_reduce(vals, op=dist.ReduceOp.AVG if device.type == "cuda" else dist.ReduceOp.SUM)
                if device.type != "cuda":
                    vals = vals / world
            now = time.perf_counter()
            ips = window_images / max(now - window_t, 1e-9)
            window_t, window_images = now, 0
            rec = {"step": step, "epoch": round(step / spe, 4), "lr": trainer.opt_G.param_groups[0]["lr"],
                   "size": phase.data.size,
                   **{k: float(v) for k, v in zip(LOSS_NAMES, vals.tolist())}, "images_per_s": ips,
                   "time": wall_before + now - t_start}
            history.append(rec)
            running, running_n = {k: 0.0 for k in LOSS_NAMES}, 0
            if main:
                with open(out / "log.jsonl", "a") as f:
                    f.write(json.dumps(rec) + "\n")
                if bar is not None:
                    bar.set_postfix({"img/s": f"{ips:.1f}", **{k: f"{rec[k]:.3f}" for k in LOSS_NAMES}}, refresh=False)
        if bar is not None:
            bar.update(1)

        t0 = time.perf_counter()
        if main and cfg.sample_every and step % cfg.sample_every == 0:
            save_image(sample_grid(trainer.G_out, grid_data, cfg.n_samples, in_ch), out / "samples" / f"step_{step:06d}.png")
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < total and not stop:
            checkpoint()
        overhead += time.perf_counter() - t0
        if stop:
            if main:
                log.info("stopping at step %d: --max-seconds %.0f reached", step, cfg.max_seconds)
            break
    loop_time = time.perf_counter() - t_loop
    if bar is not None:
        bar.close()

    checkpoint()
    if world > 1:
        dist.barrier()
    if not main:
        return {}

    if not (cfg.sample_every and step % cfg.sample_every == 0):
        save_image(sample_grid(trainer.G_out, grid_data, cfg.n_samples, in_ch), out / "samples" / f"step_{step:06d}.png")
    if history:
        plot_losses(history, out / "losses.png")
    final_eval = None
    if cfg.final_eval and held_out is not None:
        final_eval, _ = evaluate_generator(trainer.G_out, held_out, seed=0, line_style=full.style,
                                           max_items=cfg.eval_max)
        trainer.G_out.set_training_mode()
    trained = images_seen - images_before
    metrics = {
        "name": cfg.name, "steps": step, "epochs": step / spe, "steps_this_session": step - start_step,
        "images_seen": images_seen, "world_size": world, "device": str(device),
        "steps_this_session_at": {str(k): v for k, v in steps_at.items()},
        "images_per_s": trained / max(loop_time - overhead, 1e-9),
        "wall_time_s": wall_before + time.perf_counter() - t_start,
        "final_losses": {k: history[-1][k] for k in LOSS_NAMES} if history else {},
        "eval": final_eval, "config": cfg.to_dict(), "generator_config": trainer.gen_config.to_dict(),
        "data": _data_info(cfg.data), "history": history,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


# --------------------------------------------------------------------------------------------
# Command line

HELP = {
    "data": "prepared dataset folder (manifest.json + train.npz [+ test.npz])",
    "loss": "l1 | gan (D sees the output) | cgan (D sees input+output) | l1+gan | l1+cgan",
    "gan_mode": "vanilla (BCE with logits) | lsgan | hinge",
    "n_layers": "PatchGAN depth 0..5 (0 = 1x1 PixelGAN, 3 = 70x70)",
    "num_downs": "U-Net depth; 0 = log2(size) (8 = unet_256 at 256 px)",
    "in_channels": "generator input channels; 0 = as many as the targets",
    "n_epochs": "epochs at constant lr", "n_epochs_decay": "epochs of linear lr decay to 0",
    "lr_schedule": "epochs (the two above) | budget (their ratio stretched over --max-seconds)",
    "dropout_p": "generator dropout rate (the reference: 0.5)",
    "max_steps": "stop after this many steps (0 = no limit)",
    "max_seconds": "stop once the run's wall time (all sessions) passes this (0 = no limit)",
    "amp": "autocast precision: none | bf16 | fp16", "device": "auto | cpu | cuda | cuda:N",
    "workers": "CPU threads per process (0 = torch default)",
    "load_size": "jitter resize side (0 = S * 286 / 256)",
    "resume": "continue from <out-dir>/<name>/checkpoints/last.pt",
    "init_from": "start from a model (folder, registry id, Hub repo or checkpoint): its G, EMA and D; "
                 "its architecture options become the defaults; a larger --ngf widens its generator (train.widen)",
    "ema_restart": "with --init-from on another data set (a new style): start the EMA anew from its generator, "
                   "with the warm-up, instead of continuing its average of a model of other data",
    "ema_decay": "keep an EMA of G's weights with this decay (e.g. 0.999); it is what is shown and exported",
    "r1_gamma": "R1 penalty on D: gamma / 2 * |grad D(real)|^2 (Mescheder et al. 2018), lazily every 16th D step",
    "lambda_ms": "weight of the mode-seeking term between two dropout samples (Mao et al. 2019)",
    "lr_d": "discriminator lr (0 = --lr)",
    "freehand": "chance a training drawing is redrawn with hand-drawing faults (wobble, gaps, overshoot, "
                "doubled strokes, pen width; train.freehand) before the canonical line-style step",
    "low_res_data": "resolution curriculum: the same training pairs prepared at a smaller size (train prepare --size), "
                    "trained on first",
    "low_res_share": "share of the budget (--max-seconds, else the steps) spent on --low-res-data before --data",
    "upsample": "decoder x2 steps: transpose (the reference's 4x4 stride-2) | resize (nearest x2 + 3x3 conv: no checkerboard)",
}
CHOICES = {"loss": LOSSES, "gan_mode": GAN_MODES, "amp": AMP_MODES, "norm": ("batch", "instance"),
           "lr_schedule": LR_SCHEDULES, "upsample": ("transpose", "resize")}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train fit", description="Train a pix2pix generator.",
                                argument_default=argparse.SUPPRESS)
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = type(f.default)
        help_ = f"{HELP.get(f.name, '')} (default: {f.default})".strip()
        if kind is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, help=help_)
        else:
            p.add_argument(flag, type=kind, choices=CHOICES.get(f.name), help=help_)
    return p


def architecture_of(spec: str) -> dict[str, Any]:
    """The architecture options of an --init-from source, so continuing a model needs no copy of them."""
    src = load_init_source(spec)
    g = src.generator_config
    arch = {"ngf": g["ngf"], "num_downs": g["num_downs"], "norm": g["norm"], "dropout": g["dropout"],
            "dropout_p": g.get("dropout_p", 0.5), "in_channels": g["in_channels"], "upsample": g.get("upsample", "transpose")}
    if src.lineage.discriminator:
        arch.update(ndf=src.lineage.discriminator["ndf"], n_layers=src.lineage.discriminator["n_layers"])
    return arch


def config_from_args(argv: Sequence[str] | None) -> TrainConfig:
    given = vars(build_parser().parse_args(argv))
    if not given.get("resume"):
        if not given.get("data"):
            raise SystemExit("fit: --data DIR is required")
        if given.get("init_from"):
            given = {**architecture_of(given["init_from"]), **given}
        return TrainConfig(**given)
    base = TrainConfig(**{k: v for k, v in given.items() if k in ("out_dir", "name")})
    saved = load_checkpoint(run_dir(base) / "checkpoints" / "last.pt", mmap=True)["config"]
    cfg = TrainConfig.from_dict({**saved, **given})
    _check_resumable(cfg, saved)
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = config_from_args(argv)
    except (FileNotFoundError, ValueError) as e:  # no checkpoint to resume, a bad option value
        raise SystemExit(f"fit: {e}") from e
    try:
        metrics = fit(cfg)
    except (CheckpointError, ConfigError, FileExistsError, FileNotFoundError, NotPrepared) as e:
        raise SystemExit(f"fit: {e}") from e
    if metrics:
        ev = metrics.get("eval") or {}
        summary = {k: metrics[k] for k in ("steps", "images_per_s", "wall_time_s")}
        summary.update({k: ev[k] for k in ("l1", "psnr", "ssim", "edge_f1") if k in ev})
        print(json.dumps(summary))
    return 0
