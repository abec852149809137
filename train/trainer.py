"""The pix2pix training step: G, D, their optimisers, lr schedules, grad scalers and the EMA of G.

The objective is the paper's: per step one D update on
0.5 * (loss(D(x, y), real) + loss(D(x, G(x)), fake)), then one G update on the non-saturating
GAN loss + lambda * L1 (+ lambda_ms * the mode-seeking term, + lambda_flat * the flat-fill term).
Adam 2e-4 (0.5, 0.999); the lr is constant for ``n_epochs`` then decays linearly to 0 over
``n_epochs_decay`` (per step), or, with ``lr_schedule="budget"``, the same shape over the wall-clock
budget. Under DDP, G and D are wrapped for gradient averaging here; BatchNorm statistics stay per
process (as with the reference's per-GPU batches).
"""

from __future__ import annotations

import copy
import logging
import math
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from p2p_demo.nets import GeneratorConfig, build_generator
from train.config import ConfigError, TrainConfig
from train.discriminator import PatchDiscriminator, init_weights
from train.losses import (d_in_channels, d_input, d_loss, flat_fill_loss, flat_mask, g_loss, mode_seeking_loss,
                          object_mask, r1_penalty)

if TYPE_CHECKING:
    from train.lineage import InitSource

log = logging.getLogger(__name__)

R1_EVERY = 16  # lazy R1 (Karras et al., StyleGAN2): every 16th D step, weighted x16, at ~1/16 of its cost
LOSS_NAMES = ("D_real", "D_fake", "G_GAN", "G_L1", "G_MS", "G_flat")  # G_L1 is the raw mean |G(x) - y| in [-1, 1]
OPTIONAL_LOSSES = ("G_MS", "G_flat")  # terms a run may leave off; plotted only when used


def check_patchgan_fits(n_layers: int, size: int) -> None:
    """A PatchGAN with n_layers stride-2 convolutions then a stride-1 one and the 4x4 output conv
    (each -1 px) needs size / 2**n_layers >= 3, or its last normalised map is 1x1 (InstanceNorm
    and training-mode BatchNorm at batch 1 cannot normalise one value) and its output empty."""
    if n_layers > 0 and size >> n_layers < 3:
        fits = max(k for k in range(6) if k == 0 or size >> k >= 3)
        raise ConfigError(f"--n-layers {n_layers} needs images of at least {3 << n_layers} px; these are {size} px "
                          f"(use --n-layers {fits} or less, or prepare the data at a larger --size)")


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool | None:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX); None where it cannot be told.

    Without it oneDNN emulates bf16, and autocast makes training slower, not faster: measured on a
    2-core AVX2 EPYC, a U-Net step took 14x longer in bf16 than in fp32.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    flags = set(next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), []))
    if not flags:
        return None
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def autocast(device: torch.device, amp: str) -> AbstractContextManager:
    """The autocast context of ``TrainConfig.amp``: none | bf16 | fp16."""
    if amp == "none":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


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
    """G, D, their optimisers, lr schedules and grad scalers, and one training step.

    ``generator`` is ``cfg.generator`` resolved for the data (``GeneratorOptions.resolve``); G is built
    from it, D takes its norm, and the checkpoint records it (``gen_config``).
    """

    def __init__(self, cfg: TrainConfig, generator: GeneratorConfig, *, device: torch.device, steps_per_epoch: int,
                 world: int = 1) -> None:
        self.cfg, self.gen_config, self.device, self.world = cfg, generator, device, world
        if cfg.amp == "bf16" and device.type == "cpu" and cpu_has_native_bf16() is False:
            log.warning("--amp bf16 on a CPU without hardware bf16 (no avx512_bf16 or amx_bf16 flag): oneDNN "
                        "emulates it and training runs many times slower than fp32; use --amp none here")
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank
        self.G = build_generator(generator)
        init_weights(self.G, cfg.init_std)
        self.D: PatchDiscriminator | None = None
        if cfg.uses_gan:
            self.D = PatchDiscriminator(d_in_channels(generator.in_channels, generator.out_channels, cfg.conditional),
                                        ndf=cfg.ndf, n_layers=cfg.n_layers, norm=generator.norm)
            init_weights(self.D, cfg.init_std)
        # The EMA of G's weights (Karras et al.'s generator averaging): what sample grids, the final
        # evaluation and export use when the run keeps one. ``ema_steps`` drives its warm-up.
        self.G_ema: nn.Module | None = None
        self.ema_steps = 0
        self.d_steps = 0  # D updates so far (lazy R1's clock)
        if cfg.r1_gamma and world > 1:
            raise ConfigError("--r1-gamma runs on one process: its second derivative cannot go through "
                              "DistributedDataParallel; train without torchrun, or leave --r1-gamma at 0")
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
        cfg, g = self.cfg, self.gen_config
        return {"in_channels": d_in_channels(g.in_channels, g.out_channels, cfg.conditional),
                "ndf": cfg.ndf, "n_layers": cfg.n_layers, "norm": g.norm}

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

        generator, ema = source.generator, source.ema
        src = GeneratorConfig.from_dict(source.generator_config)
        if src.upsample != self.gen_config.upsample:  # a resize-conv decoder continuing a transposed one (train.regrid)
            from train.regrid import CannotRegrid, regrid_state

            target = replace(src, upsample=self.gen_config.upsample)
            try:
                generator = regrid_state(generator, src, target)
                ema = regrid_state(ema, src, target)
            except CannotRegrid as e:
                raise ConfigError(f"--init-from {source.spec} has upsample {src.upsample}, this run "
                                  f"{self.gen_config.upsample}: {e}") from e
            log.info("--init-from %s: decoder converted from %s to %s convolutions (least squares; it has to "
                     "relearn the rest)", source.spec, src.upsample, self.gen_config.upsample)
            src = target
        if src.ngf != self.gen_config.ngf:  # a wider generator continuing a narrower one (train.widen)
            from train.widen import CannotWiden, widen_state

            try:
                generator = widen_state(generator, src, self.gen_config, seed=self.cfg.seed)
                ema = widen_state(ema, src, self.gen_config, seed=self.cfg.seed, noise=False)  # the same mapping
            except CannotWiden as e:
                raise ConfigError(f"--init-from {source.spec} has ngf {src.ngf}, this run {self.gen_config.ngf}: {e}") from e
            log.info("--init-from %s: generator widened from ngf %d to %d (same function, Net2Net)",
                     source.spec, src.ngf, self.gen_config.ngf)
        load(self.G, generator, "generator")
        if self.G_ema is not None and self.cfg.ema_restart:
            load(self.G_ema, generator, "generator (EMA)")  # a new average, warmed up like a fresh run's
            self.ema_steps = 0
        elif self.G_ema is not None:
            load(self.G_ema, ema, "generator (EMA)")
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
            self.d_steps += 1
            if cfg.r1_gamma and self.d_steps % R1_EVERY == 0:
                # through the bare D: a second derivative cannot go through DDP's reducer (refused there)
                loss_D = loss_D + cfg.r1_gamma / 2 * R1_EVERY * r1_penalty(self.D, d_input(a, b, cfg.conditional))
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
            loss_G_MS = mode_seeking_loss(fake.float(), fake2.float(), self.gen_config.dropout_p,
                                          cfg.ms_pool, object_mask(b) if cfg.ms_object else None)
            loss_G = loss_G + cfg.lambda_ms * loss_G_MS
        loss_G_flat = zero
        if cfg.lambda_flat:
            flat = flat_mask(b)  # once for both samples
            loss_G_flat = sum(flat_fill_loss(f, flat) for f in fakes) / len(fakes)
            loss_G = loss_G + cfg.lambda_flat * loss_G_flat
        self.scaler_G.scale(loss_G).backward()
        self.scaler_G.step(self.opt_G)
        self.scaler_G.update()
        self.update_ema()

        self.sched_G.step()
        if self.sched_D is not None:
            self.sched_D.step()
        return {"D_real": loss_D_real.detach(), "D_fake": loss_D_fake.detach(),
                "G_GAN": loss_G_GAN.detach(), "G_L1": loss_G_L1.detach(), "G_MS": loss_G_MS.detach(),
                "G_flat": loss_G_flat.detach()}

    def state_dict(self) -> dict[str, Any]:
        def sd(x: Any) -> Any:
            return None if x is None else x.state_dict()

        return {"G": sd(self.G), "D": sd(self.D), "G_ema": sd(self.G_ema), "ema_steps": self.ema_steps,
                "d_steps": self.d_steps,
                "opt_G": sd(self.opt_G), "opt_D": sd(self.opt_D),
                "sched_G": sd(self.sched_G), "sched_D": sd(self.sched_D),
                "scaler_G": sd(self.scaler_G), "scaler_D": sd(self.scaler_D)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ema_steps = int(state.get("ema_steps", 0))
        self.d_steps = int(state.get("d_steps", 0))
        for key in ("G", "D", "G_ema", "opt_G", "opt_D", "sched_G", "sched_D", "scaler_G", "scaler_D"):
            obj = getattr(self, key)
            if (obj is None) != (state.get(key) is None):
                raise ValueError(f"checkpoint has {'no ' if state.get(key) is None else ''}{key} but this run "
                                 f"{'needs' if obj is not None else 'has none'}")
            if obj is not None:
                obj.load_state_dict(state[key])
