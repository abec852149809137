"""Train a pix2pix generator: ``python -m train fit --data DIR --name NAME [options]``.

The objective is the reference's (REFERENCE.md): per step one D update on
0.5 * (loss(D(x, y), real) + loss(D(x, G(x)), fake)), then one G update on the non-saturating
GAN loss + lambda * L1. Adam 2e-4 (0.5, 0.999); the lr is constant for ``n_epochs`` then decays
linearly to 0 over ``n_epochs_decay`` (per step). ``--max-steps`` / ``--max-seconds`` cut a run
short without changing the schedule, so equal-budget comparisons see the same lr at each step.
``--lr-schedule budget`` (with ``--max-seconds``) lays the same constant-then-decay shape over the
wall-clock budget instead, so a run that must stop at a time reaches lr 0 when it does.

The same script runs on one process or under torchrun (DistributedDataParallel; NCCL on GPUs,
gloo on CPU). Each rank trains on its own shard of every epoch; only rank 0 writes files. Under
DDP, BatchNorm statistics are per process (as with the reference's per-GPU batches).

Run folder: ``<out_dir>/<name>/`` = checkpoints/last.pt, samples/step_XXXXXX.png, log.jsonl,
losses.png, metrics.json. ``last.pt`` holds everything needed to continue (``--resume``): G, D,
optimisers, schedulers, grad scalers, step, config, loss history and every rank's RNG states; a
resumed run takes exactly the steps an uninterrupted one would have taken.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import random
import time
from contextlib import nullcontext
from dataclasses import fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from p2p_demo.image import grid, save_image, to_images
from p2p_demo.files import atomic_write
from p2p_demo.nets import GeneratorConfig, PatchDiscriminator, build_generator, init_weights, pick_device
from train.config import AMP_MODES, GAN_MODES, LOSSES, LR_SCHEDULES, RESUMABLE, TrainConfig
from train.dataset import Jitter, PairedData, batch_indices, read_manifest, split_size, steps_per_epoch
from train.lineage import Lineage, read_lineage, stint_record
from train.losses import d_in_channels, d_input, d_loss, g_loss, mode_seeking_loss

log = logging.getLogger(__name__)

LOSS_NAMES = ("D_real", "D_fake", "G_GAN", "G_L1", "G_MS")  # G_L1 is the raw mean |G(x) - y| in [-1, 1]
CHECKPOINT_VERSION = 1


# --------------------------------------------------------------------------------------------
# Checkpoints: atomic writes, weights_only reads


class CheckpointError(OSError):
    """A checkpoint could not be written; the previous one is untouched."""


class ConfigError(ValueError):
    """The options cannot train on this data (said before any work is done)."""


def check_patchgan_fits(n_layers: int, size: int) -> None:
    """A PatchGAN with n_layers stride-2 convolutions then a stride-1 one and the 4x4 output conv
    (each -1 px) needs size / 2**n_layers >= 3, or its last normalised map is 1x1 (InstanceNorm
    and training-mode BatchNorm at batch 1 cannot normalise one value) and its output empty."""
    if n_layers > 0 and size >> n_layers < 3:
        fits = max(k for k in range(6) if k == 0 or size >> k >= 3)
        raise ConfigError(f"--n-layers {n_layers} needs images of at least {3 << n_layers} px; these are {size} px "
                          f"(use --n-layers {fits} or less, or prepare the data at a larger --size)")


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Write ``state`` to ``path`` atomically: temp file in the same folder, fsync, os.replace.

    A crash or kill at any moment leaves either the old or the new file at ``path``, never a
    partial one. A failed write (disk full, quota, I/O error) raises CheckpointError and leaves the
    old file as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.tmp-*"):  # left behind by a killed writer
        stale.unlink(missing_ok=True)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            torch.save(state, f)

    try:
        atomic_write(path, write, durable=True)
    except OSError as e:
        why = os.strerror(e.errno) if e.errno else str(e)
        err = CheckpointError(f"could not write checkpoint {path} ({why}); the previous checkpoint there is untouched")
        err.errno = e.errno
        raise err from e


def load_checkpoint(path: str | os.PathLike, *, mmap: bool = False) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)


def checkpoint_generator(ckpt: dict[str, Any]) -> nn.Module:
    """The generator a checkpoint stands for: the EMA of the weights when the run kept one (what
    export writes and evaluate judges), else the raw weights. Loaded strictly."""
    G = build_generator(GeneratorConfig.from_dict(ckpt["generator_config"]))
    G.load_state_dict(ckpt.get("G_ema") or ckpt["G"])
    return G


# --------------------------------------------------------------------------------------------
# RNG states as plain tensors / lists (what torch.load(weights_only=True) accepts)


def rng_state(jitter: torch.Generator) -> dict[str, Any]:
    version, mt, gauss = random.getstate()
    key, np_mt, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": {"version": version, "state": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {"key": key, "state": torch.from_numpy(np_mt.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
        "jitter": jitter.get_state(),
    }
    return state


def set_rng_state(state: dict[str, Any], jitter: torch.Generator) -> None:
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"].tolist()), p["gauss"]))
    n = state["numpy"]
    np.random.set_state((n["key"], n["state"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    jitter.set_state(state["jitter"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------------------------
# Devices and processes


def init_distributed(device: str) -> tuple[int, int, int]:
    """(rank, world size, local rank); starts the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return dist.get_rank(), dist.get_world_size(), local


def resolve_device(device: str, local_rank: int = 0, world: int = 1) -> torch.device:
    dev = pick_device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank if world > 1 else torch.cuda.current_device())
    return dev


def autocast(device: torch.device, amp: str):
    if amp == "none":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


# --------------------------------------------------------------------------------------------
# The training step


class _PairD(nn.Module):
    """D on the fake and the real batch in one forward call.

    DistributedDataParallel expects one forward per backward; the reference runs D twice (fake
    then real, each with its own BatchNorm statistics), so both calls live in one forward.
    """

    def __init__(self, d: nn.Module) -> None:
        super().__init__()
        self.d = d

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.d(fake), self.d(real)


class Trainer:
    """G, D, their optimisers, lr schedules and grad scalers, and one training step."""

    def __init__(self, cfg: TrainConfig, *, size: int, in_channels: int, out_channels: int,
                 device: torch.device, steps_per_epoch: int, world: int = 1) -> None:
        self.cfg, self.device, self.world = cfg, device, world
        num_downs = cfg.num_downs or int(math.log2(size))
        if size % 2**num_downs:
            raise ValueError(f"image size {size} is not a multiple of 2**num_downs = {2**num_downs}")
        self.gen_config = GeneratorConfig(in_channels=in_channels, out_channels=out_channels, ngf=cfg.ngf,
                                          num_downs=num_downs, norm=cfg.norm, dropout=cfg.dropout,
                                          dropout_p=cfg.dropout_p, upsample=cfg.upsample)
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank
        self.G = build_generator(self.gen_config)
        init_weights(self.G, cfg.init_std)
        self.D: PatchDiscriminator | None = None
        if cfg.uses_gan:
            self.D = PatchDiscriminator(d_in_channels(in_channels, out_channels, cfg.conditional),
                                        ndf=cfg.ndf, n_layers=cfg.n_layers, norm=cfg.norm)
            init_weights(self.D, cfg.init_std)
        # The EMA of G's weights (Karras et al.'s generator averaging): what sample grids, the final
        # evaluation and export use when the run keeps one. ``ema_steps`` drives its warm-up.
        self.G_ema: nn.Module | None = None
        self.ema_steps = 0
        if cfg.ema_decay:
            self.G_ema = copy.deepcopy(self.G).requires_grad_(False)

        memory_format = torch.channels_last if cfg.channels_last else torch.preserve_format
        for m in self.modules:
            m.to(device=device, memory_format=memory_format).train()
        self.G.set_training_mode()

        betas = (cfg.beta1, cfg.beta2)
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=cfg.lr, betas=betas)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=cfg.lr_d or cfg.lr, betas=betas) if self.D else None
        self.const_steps = cfg.n_epochs * steps_per_epoch
        self.decay_steps = cfg.n_epochs_decay * steps_per_epoch
        self.total_steps = math.ceil(self.const_steps + self.decay_steps)
        self.budget_used = 0.0  # lr_schedule "budget": the share of max_seconds spent, set by the loop
        self.sched_G = torch.optim.lr_scheduler.LambdaLR(self.opt_G, self.lr_factor)
        self.sched_D = torch.optim.lr_scheduler.LambdaLR(self.opt_D, self.lr_factor) if self.D else None
        fp16 = cfg.amp == "fp16"
        self.scaler_G = torch.amp.GradScaler(device.type, enabled=fp16)
        self.scaler_D = torch.amp.GradScaler(device.type, enabled=fp16)

        # What the step calls: DDP-wrapped for gradient averaging, compiled when asked. The G step
        # scores fakes with the bare D (frozen): its gradients must not go through D's DDP reducer.
        self.G_step: nn.Module = self.G
        self.D_step: nn.Module | None = _PairD(self.D) if self.D else None
        self.D_frozen: nn.Module | None = self.D
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [device.index] if device.type == "cuda" else None
            self.G_step = DDP(self.G, device_ids=ids)
            if self.D_step is not None:
                self.D_step = DDP(self.D_step, device_ids=ids)
        if cfg.compile:
            self.G_step = torch.compile(self.G_step)
            if self.D is not None:
                self.D_step = torch.compile(self.D_step)
                self.D_frozen = torch.compile(self.D)

    @property
    def modules(self) -> list[nn.Module]:
        return [m for m in (self.G, self.D, self.G_ema) if m is not None]

    @property
    def discriminator_config(self) -> dict[str, Any] | None:
        if self.D is None:
            return None
        cfg = self.cfg
        return {"in_channels": d_in_channels(self.gen_config.in_channels, self.gen_config.out_channels, cfg.conditional),
                "ndf": cfg.ndf, "n_layers": cfg.n_layers, "norm": cfg.norm}

    @property
    def G_out(self) -> nn.Module:
        """The generator a run shows and exports: the EMA when kept, else G itself."""
        return self.G_ema if self.G_ema is not None else self.G

    @torch.no_grad()
    def update_ema(self) -> None:
        """ema <- d * ema + (1 - d) * G, with d warmed up as min(decay, (1 + t) / (10 + t)) so a fresh
        run's average is not dominated by its random initial weights. Buffers (BatchNorm statistics)
        are copied."""
        if self.G_ema is None:
            return
        self.ema_steps += 1
        t = self.ema_steps
        d = min(self.cfg.ema_decay, (1 + t) / (10 + t))
        ema_p = [p for p in self.G_ema.parameters()]
        torch._foreach_lerp_(ema_p, [p.detach() for p in self.G.parameters()], 1.0 - d)
        for e, b in zip(self.G_ema.buffers(), self.G.buffers()):
            e.copy_(b)

    def init_from(self, source: "InitSource") -> None:
        """Start from another model's weights (``--init-from``): G strictly, the EMA from the model's
        exported weights, D when the source carries one (else D starts fresh, said in the log)."""
        def load(module: nn.Module, sd: dict[str, torch.Tensor], what: str) -> None:
            try:
                module.load_state_dict(sd)
            except RuntimeError as e:
                raise ConfigError(f"--init-from {source.spec}: its {what} does not fit this run's options "
                                  f"({str(e).splitlines()[0]}); give the same architecture options "
                                  f"(--ngf/--norm/--num-downs/--in-channels/--ndf/--n-layers) as it was trained with") from e

        load(self.G, source.generator, "generator")
        if self.G_ema is not None:
            load(self.G_ema, source.ema, "generator (EMA)")
            self.ema_steps = max(source.lineage.steps, 10_000)  # an average already: no warm-up
        if self.D is not None:
            if source.discriminator is not None:
                load(self.D, source.discriminator, "discriminator")
            else:
                log.warning("--init-from %s carries no discriminator: D starts from scratch", source.spec)

    def lr_factor(self, step: int) -> float:
        """1 for the first n_epochs, then linearly down to 0 at the end of n_epochs_decay.

        With ``lr_schedule="budget"`` the same shape is laid over the wall-clock budget instead:
        constant for the first n_epochs / (n_epochs + n_epochs_decay) of ``max_seconds``, then
        linearly down to 0 when the budget runs out, however many steps that turns out to be.
        """
        cfg = self.cfg
        if cfg.lr_schedule == "budget":  # where we are, in shares of the budget
            at, const = self.budget_used, cfg.n_epochs / (cfg.n_epochs + cfg.n_epochs_decay)
            decay = max(1.0 - const, 1e-9)
        else:  # in steps
            at, const, decay = step, self.const_steps, max(self.decay_steps, 1)
        if at < const:
            return 1.0
        return max(0.0, 1.0 - (at - const) / decay)

    def step(self, a: torch.Tensor, b: torch.Tensor) -> dict[str, torch.Tensor]:
        """One D update then one G update on a batch (a: inputs, b: targets, in [-1, 1])."""
        cfg, amp = self.cfg, autocast(self.device, self.cfg.amp)
        if self.cfg.channels_last:
            a = a.contiguous(memory_format=torch.channels_last)
            b = b.contiguous(memory_format=torch.channels_last)
        zero = torch.zeros((), device=self.device)
        with amp:
            fake = self.G_step(a)  # (B, C, H, W) in [-1, 1]
            # Mode seeking: a second forward draws other dropout masks for the same input.
            fake2 = self.G_step(a) if cfg.lambda_ms else None

        loss_D_real = loss_D_fake = loss_G_GAN = zero
        if self.D is not None:
            self.D.requires_grad_(True)
            self.opt_D.zero_grad(set_to_none=True)
            with amp:
                pred_fake, pred_real = self.D_step(d_input(a, fake.detach(), cfg.conditional),
                                                   d_input(a, b, cfg.conditional))
            loss_D_fake = d_loss(pred_fake, False, cfg.gan_mode)
            loss_D_real = d_loss(pred_real, True, cfg.gan_mode)
            loss_D = 0.5 * (loss_D_fake + loss_D_real)  # halved, as in the paper
            self.scaler_D.scale(loss_D).backward()
            self.scaler_D.step(self.opt_D)
            self.scaler_D.update()
            self.D.requires_grad_(False)  # no D gradients from the G step

        self.opt_G.zero_grad(set_to_none=True)
        fakes = [fake] if fake2 is None else [fake, fake2]
        if self.D is not None:
            with amp:
                loss_G_GAN = sum(g_loss(self.D_frozen(d_input(a, f, cfg.conditional)), cfg.gan_mode)
                                 for f in fakes) / len(fakes)
        loss_G_L1 = sum(F.l1_loss(f.float(), b.float()) for f in fakes) / len(fakes)
        loss_G_MS = zero
        loss_G = zero
        if cfg.uses_gan:
            loss_G = loss_G + loss_G_GAN
        if cfg.uses_l1:
            loss_G = loss_G + cfg.lambda_l1 * loss_G_L1
        if fake2 is not None:
            loss_G_MS = mode_seeking_loss(fake.float(), fake2.float(), cfg.dropout_p)
            loss_G = loss_G + cfg.lambda_ms * loss_G_MS
        self.scaler_G.scale(loss_G).backward()
        self.scaler_G.step(self.opt_G)
        self.scaler_G.update()
        self.update_ema()

        self.sched_G.step()
        if self.sched_D is not None:
            self.sched_D.step()
        return {"D_real": loss_D_real.detach(), "D_fake": loss_D_fake.detach(),
                "G_GAN": loss_G_GAN.detach(), "G_L1": loss_G_L1.detach(), "G_MS": loss_G_MS.detach()}

    def state_dict(self) -> dict[str, Any]:
        def sd(x: Any) -> Any:
            return None if x is None else x.state_dict()

        return {"G": sd(self.G), "D": sd(self.D), "G_ema": sd(self.G_ema), "ema_steps": self.ema_steps,
                "opt_G": sd(self.opt_G), "opt_D": sd(self.opt_D),
                "sched_G": sd(self.sched_G), "sched_D": sd(self.sched_D),
                "scaler_G": sd(self.scaler_G), "scaler_D": sd(self.scaler_D)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ema_steps = int(state.get("ema_steps", 0))
        for key in ("G", "D", "G_ema", "opt_G", "opt_D", "sched_G", "sched_D", "scaler_G", "scaler_D"):
            obj = getattr(self, key)
            if (obj is None) != (state.get(key) is None):
                raise ValueError(f"checkpoint has {'no ' if state.get(key) is None else ''}{key} but this run "
                                 f"{'needs' if obj is not None else 'has none'}")
            if obj is not None:
                obj.load_state_dict(state[key])


# --------------------------------------------------------------------------------------------
# Pictures: held-out sample grids and the loss curves


def sample_grid(G: nn.Module, data: PairedData, count: int, in_channels: int, seed: int = 0) -> np.ndarray:
    """Rows of input | output | target for the first ``count`` held-out pairs, in the reference's
    test mode with fixed dropout seeds, so grids from different steps are comparable."""
    from train.evaluate import render_test_mode

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
    """Panels (two a row) of the losses against the step, drawn with PIL (no matplotlib needed);
    the mode-seeking term only when the run used it."""
    from PIL import Image, ImageDraw

    names = [n for n in LOSS_NAMES if n != "G_MS" or any(h.get(n) for h in history)]
    W, H, left, right, top, bottom = 440, 260, 58, 14, 26, 30
    rows = (len(names) + 1) // 2
    img = Image.new("RGB", (2 * W, rows * H), "white")
    draw = ImageDraw.Draw(img)
    steps = np.array([h["step"] for h in history], dtype=np.float64)
    colours = {"D_real": (31, 119, 180), "D_fake": (255, 127, 14), "G_GAN": (44, 160, 44), "G_L1": (214, 39, 40),
               "G_MS": (148, 103, 189)}
    for k, name in enumerate(names):
        ox, oy = (k % 2) * W, (k // 2) * H
        x0, x1, y0, y1 = ox + left, ox + W - right, oy + top, oy + H - bottom
        draw.rectangle([x0, y0, x1, y1], outline="black")
        draw.text((ox + left, oy + 6), f"{name}" + (" (mean |G(x) - y|)" if name == "G_L1" else ""), fill="black")
        vals = np.array([h.get(name, np.nan) for h in history], dtype=np.float64)
        ok = np.isfinite(vals)
        if ok.sum() == 0:
            continue
        s, v = steps[ok], vals[ok]
        smin, smax = float(s.min()), float(s.max())
        vmin, vmax = float(v.min()), float(v.max())
        if vmax - vmin < 1e-12:
            vmin, vmax = vmin - 0.5, vmax + 0.5
        pad = 0.05 * (vmax - vmin)
        vmin, vmax = vmin - pad, vmax + pad
        span = max(smax - smin, 1.0)

        def xy(si: float, vi: float) -> tuple[float, float]:
            return x0 + (si - smin) / span * (x1 - x0), y1 - (vi - vmin) / (vmax - vmin) * (y1 - y0)

        for t in range(5):  # y ticks and grid
            val = vmin + (vmax - vmin) * t / 4
            _, yy = xy(smin, val)
            draw.line([x0, yy, x1, yy], fill=(225, 225, 225))
            draw.line([x0 - 4, yy, x0, yy], fill="black")
            draw.text((ox + 4, yy - 6), f"{val:.3g}", fill="black")
        for t in range(5):  # x ticks
            st = smin + span * t / 4
            xx, _ = xy(st, vmin)
            draw.line([xx, y1, xx, y1 + 4], fill="black")
            draw.text((xx - 12, y1 + 8), f"{int(round(st))}", fill="black")
        pts = [xy(si, vi) for si, vi in zip(s, v)]
        if len(pts) == 1:
            draw.ellipse([pts[0][0] - 2, pts[0][1] - 2, pts[0][0] + 2, pts[0][1] + 2], fill=colours[name])
        else:
            draw.line(pts, fill=colours[name], width=2)
    draw.text((W - 20, rows * H - 14), "step", fill="black")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


# --------------------------------------------------------------------------------------------
# The run


def run_dir(cfg: TrainConfig) -> Path:
    return Path(cfg.out_dir) / cfg.name


def _check_resumable(cfg: TrainConfig, saved: dict[str, Any]) -> None:
    diff = {k: (saved[k], v) for k, v in cfg.to_dict().items()
            if k not in RESUMABLE and k in saved and saved[k] != v}
    if diff:
        lines = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in diff.items())
        raise ValueError(f"--resume with a different experiment ({lines}); start a new --name instead")


def _data_info(folder: str) -> dict[str, Any]:
    """What a model card needs to know about the data: the manifest without per-file lists."""
    manifest = read_manifest(folder)
    info = {k: v for k, v in manifest.items() if k not in ("skipped", "excluded")}
    info["skipped_count"] = len(manifest.get("skipped") or [])
    info["excluded_count"] = sum(int(v.get("count", 0)) for v in (manifest.get("excluded") or {}).values())
    info["path"] = str(folder)
    return info


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
    out = run_dir(cfg)
    ckpt_path = out / "checkpoints" / "last.pt"

    ckpt: dict[str, Any] | None = None
    if cfg.resume:
        ckpt = load_checkpoint(ckpt_path)
        _check_resumable(cfg, ckpt["config"])
    elif ckpt_path.exists():
        raise FileExistsError(f"{ckpt_path} exists: continue it with --resume, or pick another --name")

    manifest = read_manifest(cfg.data)
    train = PairedData.load(cfg.data, "train", device)
    held_out = PairedData.load(cfg.data, "test", device) if split_size(manifest, "test") else None
    if held_out is None and main:
        log.warning("no test split in %s: sample grids use training pairs and no final evaluation runs", cfg.data)
    in_ch, out_ch = cfg.in_channels or train.channels, train.channels
    check_patchgan_fits(cfg.n_layers, train.size)
    spe = steps_per_epoch(len(train), cfg.batch_size, world)
    trainer = Trainer(cfg, size=train.size, in_channels=in_ch, out_channels=out_ch, device=device,
                      steps_per_epoch=spe, world=world)
    total = trainer.total_steps if not cfg.max_steps else min(trainer.total_steps, cfg.max_steps)
    jitter = Jitter(train.size, jitter=cfg.jitter, load_size=cfg.load_size, flip=cfg.flip)
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
        from train.lineage import load_init_source

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
    while step < total:
        idx = batch_indices(len(train), step, cfg.batch_size, cfg.seed, rank, world)
        a, b = train.pairs(idx, in_ch)
        a, b = jitter(a, b, jitter_rng)
        losses = trainer.step(a, b)
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
        from train.evaluate import evaluate_generator, line_style_of

        final_eval, _ = evaluate_generator(trainer.G_out, held_out, seed=0, line_style=line_style_of(manifest),
                                           max_items=cfg.eval_max)
        trainer.G_out.set_training_mode()
    trained = images_seen - images_before
    metrics = {
        "name": cfg.name, "steps": step, "epochs": step / spe, "steps_this_session": step - start_step,
        "images_seen": images_seen, "world_size": world, "device": str(device),
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
                 "its architecture options become the defaults",
    "ema_decay": "keep an EMA of G's weights with this decay (e.g. 0.999); it is what is shown and exported",
    "lambda_ms": "weight of the mode-seeking term between two dropout samples (Mao et al. 2019)",
    "lr_d": "discriminator lr (0 = --lr)",
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
    from train.lineage import load_init_source

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
    from train.prepare import NotPrepared

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
