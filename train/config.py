"""TrainConfig: every knob of a training run, saved in its checkpoint as a plain dict.

Defaults are the reference's (pix2pix, Isola et al. 2017, and its PyTorch code): L1 + conditional GAN with lambda 100, vanilla
(BCE-with-logits) GAN loss, 70x70 PatchGAN, unet_256 with BatchNorm and dropout, batch 1,
Adam 2e-4 (0.5, 0.999), 100 epochs constant + 100 epochs linear decay, load 286 -> crop 256 +
flip, N(0, 0.02) init.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

class ConfigError(ValueError):
    """Options that cannot train: a bad value, a mix that does not go together, or one this data or
    this checkpoint cannot take. Said before any work is done."""


LOSSES = ("l1", "gan", "cgan", "l1+gan", "l1+cgan")
GAN_MODES = ("vanilla", "lsgan", "hinge")
AMP_MODES = ("none", "bf16", "fp16")
LR_SCHEDULES = ("epochs", "budget")

# Fields that may differ between a run and its resumption (budgets, logging, hardware).
# Everything else defines the experiment and must match the checkpoint.
RESUMABLE = frozenset({
    "max_steps", "max_seconds", "checkpoint_every", "sample_every", "log_every", "device",
    "workers", "compile", "final_eval", "eval_max", "progress", "resume", "data", "low_res_data",
})


@dataclass
class TrainConfig:
    # data and output
    data: str = ""  # prepared dataset folder (manifest.json + train.npz [+ test.npz])
    name: str = "run"  # run folder: <out_dir>/<name>/
    out_dir: str = "runs"
    # objective
    loss: str = "l1+cgan"  # l1 | gan | cgan | l1+gan | l1+cgan (cgan: D sees (input, output))
    gan_mode: str = "vanilla"  # vanilla (BCE with logits) | lsgan | hinge
    lambda_l1: float = 100.0
    r1_gamma: float = 0.0  # R1 penalty weight on D (gamma / 2 * |grad D(real)|^2), every R1_EVERY D steps; 0 = off
    lambda_ms: float = 0.0  # mode seeking (Mao et al. 2019) between two dropout samples; 0 = off
    # generator
    ngf: int = 64
    num_downs: int = 0  # 0 = log2(image size): a 1x1 bottleneck, 8 (unet_256) at 256 px
    norm: str = "batch"  # batch | instance, for G and D
    dropout: bool = True
    dropout_p: float = 0.5  # the reference's rate
    in_channels: int = 0  # 0 = as many as the targets (the reference feeds edges as RGB); or 1
    upsample: str = "transpose"  # decoder x2 steps: transpose (the reference) | resize (nearest x2 + 3x3 conv)
    # discriminator
    ndf: int = 64
    n_layers: int = 3  # 0 = PixelGAN, 1..5 = 16..286 px patches; 3 = 70x70
    # optimisation
    batch_size: int = 1  # per process
    lr: float = 2e-4
    lr_d: float = 0.0  # the discriminator's lr; 0 = the same as lr
    beta1: float = 0.5
    beta2: float = 0.999
    n_epochs: float = 100.0  # epochs at constant lr
    n_epochs_decay: float = 100.0  # then epochs of linear decay to 0
    lr_schedule: str = "epochs"  # epochs | budget (the n_epochs : n_epochs_decay shape over max_seconds)
    max_steps: int = 0  # 0 = no step budget (the epoch schedule decides)
    max_seconds: float = 0.0  # 0 = no wall-clock budget
    init_std: float = 0.02
    ema_decay: float = 0.0  # keep an exponential moving average of G's weights (exported as the model); 0 = off
    init_from: str = ""  # start from a model folder / registry id / checkpoint: its G, EMA and D (see train.lineage)
    # A new style from --init-from's weights: its EMA averaged a model of other data, so it starts anew from G.
    ema_restart: bool = False
    # augmentation (on the device, in batch)
    jitter: bool = True  # resize S -> load_size, random crop back to S
    load_size: int = 0  # 0 = round(S * 286 / 256)
    flip: bool = True  # random horizontal flip
    # resolution curriculum: the first share of the budget on the same pairs prepared smaller
    low_res_data: str = ""  # prepared dataset folder of the same pairs at a smaller size (e.g. data/openmoji-128)
    low_res_share: float = 0.0  # share of the budget (max_seconds, else the steps) trained on low_res_data; 0 = off
    freehand: float = 0.0  # chance a training drawing gets hand-drawing faults before its canonical redraw (train.freehand); 0 = off
    # speed
    amp: str = "none"  # none | bf16 | fp16 (autocast; fp16 adds gradient scalers)
    channels_last: bool = False
    compile: bool = False
    device: str = "auto"  # auto | cpu | cuda | cuda:N (under torchrun: cuda:LOCAL_RANK)
    workers: int = 0  # CPU threads per process (torch.set_num_threads); 0 = torch's default
    # bookkeeping
    seed: int = 0
    checkpoint_every: int = 1000  # steps; a checkpoint is also written at the end
    sample_every: int = 500  # steps; PNG grid of held-out input | output | target
    n_samples: int = 4  # rows in that grid
    log_every: int = 10  # steps between log.jsonl lines / loss-history points
    final_eval: bool = True  # run evaluate on the held-out split at the end
    eval_max: int = 0  # 0 = the whole held-out split
    progress: bool = True  # tqdm bar on rank 0
    resume: bool = False  # continue from <run>/checkpoints/last.pt

    def __post_init__(self) -> None:
        for name, value, allowed in (("loss", self.loss, LOSSES), ("gan_mode", self.gan_mode, GAN_MODES),
                                     ("amp", self.amp, AMP_MODES), ("norm", self.norm, ("batch", "instance")),
                                     ("lr_schedule", self.lr_schedule, LR_SCHEDULES),
                                     ("upsample", self.upsample, ("transpose", "resize"))):
            if value not in allowed:
                raise ConfigError(f"{name} must be one of {allowed}, got {value!r}")
        if not 0 <= self.n_layers <= 5:
            raise ConfigError(f"n_layers must be in 0..5, got {self.n_layers}")
        if self.num_downs and self.num_downs < 5:
            raise ConfigError(f"num_downs must be 0 (auto) or at least 5, got {self.num_downs}")
        if self.in_channels not in (0, 1, 3):
            raise ConfigError(f"in_channels must be 0 (same as targets), 1 or 3, got {self.in_channels}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.n_epochs < 0 or self.n_epochs_decay < 0 or self.n_epochs + self.n_epochs_decay <= 0:
            raise ConfigError("n_epochs and n_epochs_decay must be >= 0 and not both 0")
        if self.lr_schedule == "budget" and self.max_seconds <= 0:
            raise ConfigError("lr_schedule 'budget' spreads the schedule over the wall-clock budget: "
                             "give --max-seconds too")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0.0 <= self.freehand <= 1.0:
            raise ConfigError(f"freehand is a chance in [0, 1], got {self.freehand}")
        if not 0.0 <= self.low_res_share < 1.0:
            raise ConfigError(f"low_res_share is the share of the budget trained at the lower resolution, in "
                              f"[0, 1); got {self.low_res_share}")
        if bool(self.low_res_data) != bool(self.low_res_share):
            raise ConfigError("a resolution curriculum needs both --low-res-data DIR (the same pairs prepared at a "
                              "smaller --size) and --low-res-share F (the share of the budget spent on them)")
        if self.lambda_ms < 0 or self.lr_d < 0 or self.r1_gamma < 0:
            raise ConfigError("lambda_ms, lr_d and r1_gamma must be >= 0")
        if self.r1_gamma and not self.uses_gan:
            raise ConfigError("r1_gamma regularises the discriminator, and loss 'l1' has none")
        if self.lambda_ms and not self.dropout:
            raise ConfigError("lambda_ms needs dropout: the mode-seeking term compares two dropout samples")
        if not 0.0 < self.dropout_p < 1.0:
            raise ConfigError(f"dropout_p must be between 0 and 1 (exclusive), got {self.dropout_p}")

    # loss options, spelled out once
    @property
    def uses_l1(self) -> bool:
        return self.loss.startswith("l1")

    @property
    def uses_gan(self) -> bool:
        return self.loss != "l1"

    @property
    def conditional(self) -> bool:
        """cgan: D judges (input, output) pairs; gan: D sees the output alone."""
        return self.loss.endswith("cgan")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"unknown train config keys: {sorted(unknown)}")
        return cls(**d)
