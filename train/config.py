"""TrainConfig: every knob of a training run, saved in its checkpoint as a plain dict.

Defaults are the reference's (pix2pix, Isola et al. 2017, and its PyTorch code): L1 + conditional GAN with lambda 100, vanilla
(BCE-with-logits) GAN loss, 70x70 PatchGAN, unet_256 with BatchNorm and dropout, batch 1,
Adam 2e-4 (0.5, 0.999), 100 epochs constant + 100 epochs linear decay, load 286 -> crop 256 +
flip, N(0, 0.02) init.

The generator's architecture is one nested object, ``TrainConfig.generator`` (``GeneratorOptions``):
the options as asked, some left to the data (0 = decided by it). ``GeneratorOptions.resolve`` turns
them into the ``p2p_demo.nets.GeneratorConfig`` the networks are built from, where the data is
known (``train.fit.Run``); the trainer and the checkpoint's "generator_config" hold that resolved one.
On the command line, and in every config saved before they were nested, the generator's options sit
flat beside the others (``--ngf``, ``"ngf": 16``); ``flat_options`` and ``TrainConfig.from_dict`` read both.
"""

from __future__ import annotations

import math
from dataclasses import Field, asdict, dataclass, field, fields
from typing import Any, Collection, Iterable, Mapping

from p2p_demo.errors import P2PError
from p2p_demo.nets import NORMS, UPSAMPLES, GeneratorConfig


class ConfigError(P2PError, ValueError):
    """Options that cannot train: a bad value, a mix that does not go together, or one this data or
    this checkpoint cannot take. Said before any work is done."""


LOSSES = ("l1", "gan", "cgan", "l1+gan", "l1+cgan")
GAN_MODES = ("vanilla", "lsgan", "hinge")
AMP_MODES = ("none", "bf16", "fp16")
LR_SCHEDULES = ("epochs", "budget")

# Options (by their command-line names) that may differ between a run and its resumption (budgets,
# logging, hardware).
# Everything else defines the experiment and must match the checkpoint.
RESUMABLE = frozenset({
    "max_steps", "max_seconds", "checkpoint_every", "sample_every", "log_every", "device",
    "workers", "compile", "final_eval", "eval_max", "progress", "resume", "data", "low_res_data",
})


def _opt(default: Any, help: str, *, choices: tuple | None = None, at_least: float | None = None,
         above: float | None = None, at_most: float | None = None, below: float | None = None) -> Any:
    """An option (a field of TrainConfig or GeneratorOptions): its default, its --help text (the one
    place it is written), and the values that make sense (checked by its dataclass, shown by the
    command line)."""
    limits = dict(choices=choices, at_least=at_least, above=above, at_most=at_most, below=below)
    return field(default=default, metadata={"help": help, **{k: v for k, v in limits.items() if v is not None}})


def _out_of_range(value: Any, meta: Mapping[str, Any]) -> str | None:
    """What is wrong with a field's value by its metadata (``_opt``), or None."""
    if "choices" in meta:
        return None if value in meta["choices"] else f"must be one of {meta['choices']}, got {value!r}"
    low = ("[", meta["at_least"]) if "at_least" in meta else ("(", meta["above"]) if "above" in meta else None
    high = (meta["at_most"], "]") if "at_most" in meta else (meta["below"], ")") if "below" in meta else None
    if ((low is None or (value >= low[1] if low[0] == "[" else value > low[1]))
            and (high is None or (value <= high[0] if high[1] == "]" else value < high[0]))):
        return None
    if low and high:
        want = f"in {low[0]}{low[1]}, {high[0]}{high[1]}"
    elif low:
        want = (">= " if low[0] == "[" else "> ") + str(low[1])
    else:
        want = ("<= " if high[1] == "]" else "< ") + str(high[0])
    return f"must be {want}, got {value}"


def _check_ranges(options: Any) -> None:
    """Refuse a dataclass of options whose field is out of its ``_opt`` range, naming the flag."""
    for f in fields(options):
        problem = _out_of_range(getattr(options, f.name), f.metadata)
        if problem:
            raise ConfigError(f"--{f.name.replace('_', '-')} {problem}")


@dataclass
class GeneratorOptions:
    """The generator's architecture as a run asks for it, before the data is known.

    Not a ``p2p_demo.nets.GeneratorConfig`` itself: ``in_channels`` and ``num_downs`` may be 0 (decided
    by the data), and the targets decide ``out_channels``; ``resolve`` makes the GeneratorConfig.
    ``norm`` is here because it is the generator's (a model continued with --init-from brings its
    own); the discriminator follows it, as with the reference's one --norm for both networks.
    """

    ngf: int = _opt(64, "generator width: filters of its first layer", at_least=1)
    num_downs: int = _opt(0, "U-Net depth; 0 = log2(size), a 1x1 bottleneck (8 = unet_256 at 256 px)", at_least=0)
    norm: str = _opt("batch", "normalisation of G and D: batch | instance", choices=NORMS)
    dropout: bool = _opt(True, "dropout in the generator's decoder (the reference's noise)")
    dropout_p: float = _opt(0.5, "generator dropout rate (the reference: 0.5)", above=0, below=1)
    in_channels: int = _opt(0, "generator input channels: 0 = as many as the targets (the reference feeds edges as "
                               "RGB), 1 or 3", choices=(0, 1, 3))
    upsample: str = _opt("transpose", "decoder x2 steps: transpose (the reference's 4x4 stride-2) | resize "
                                      "(nearest x2 + 3x3 conv: no checkerboard; with --init-from a transpose model, its "
                                      "decoder is converted, train.regrid)", choices=UPSAMPLES)
    channel_dropout: bool = _opt(False, "dropout drops whole feature maps (Tompson et al. 2015), so samples differ "
                                        "over areas, not in patches")
    dropout_levels: int = _opt(0, "decoder levels with dropout, counted outward from the bottleneck: 0 = the "
                                  "reference's (the ngf*8 levels: num_downs - 5, 3 in unet_256); one more adds the "
                                  "ngf*4 level (finer maps)", at_least=0)

    def __post_init__(self) -> None:
        _check_ranges(self)
        if self.num_downs and self.num_downs < 5:
            raise ConfigError(f"--num-downs must be 0 (auto) or at least 5, got {self.num_downs}")

    def num_downs_at(self, size: int) -> int:
        """The U-Net's depth for images of ``size`` px: as asked, else a 1x1 bottleneck at that size."""
        return self.num_downs or int(math.log2(size))

    def resolve(self, *, size: int, channels: int) -> GeneratorConfig:
        """The generator for this data: ``size`` px images (the smallest a run trains at) whose
        targets have ``channels`` channels."""
        num_downs = self.num_downs_at(size)
        most = GeneratorConfig.most_dropout_levels(num_downs)
        if self.dropout_levels > most:
            raise ConfigError(f"--dropout-levels must be at most {most} for a {num_downs}-level U-Net, "
                              f"got {self.dropout_levels}")
        if size % 2**num_downs:
            raise ConfigError(f"image size {size} is not a multiple of 2**num_downs = {2**num_downs}")
        return GeneratorConfig(**{**asdict(self), "in_channels": self.in_channels or channels,
                                  "out_channels": channels, "num_downs": num_downs})

    @classmethod
    def of(cls, saved: Mapping[str, Any]) -> "GeneratorOptions":
        """The options that build a saved generator (``GeneratorConfig.to_dict()``, older ones lacking
        later keys) again, its data's choices fixed: what --init-from continues."""
        config = GeneratorConfig.from_dict(dict(saved))
        return cls(**{f.name: getattr(config, f.name) for f in fields(cls)})


@dataclass
class TrainConfig:
    # data and output
    data: str = _opt("", "prepared dataset folder (manifest.json + train.npz [+ test.npz])")
    name: str = _opt("run", "run folder: <out-dir>/<name>/")
    out_dir: str = _opt("runs", "where run folders go")
    # objective
    loss: str = _opt("l1+cgan", "l1 | gan (D sees the output) | cgan (D sees input+output) | l1+gan | l1+cgan",
                     choices=LOSSES)
    gan_mode: str = _opt("vanilla", "vanilla (BCE with logits) | lsgan | hinge", choices=GAN_MODES)
    lambda_l1: float = _opt(100.0, "weight of the L1 term", at_least=0)
    r1_gamma: float = _opt(0.0, "R1 penalty on D: gamma / 2 * |grad D(real)|^2 (Mescheder et al. 2018), lazily "
                                "every 16th D step (R1_EVERY); 0 = off", at_least=0)
    lambda_ms: float = _opt(0.0, "weight of the mode-seeking term between two dropout samples (Mao et al. 2019); "
                                 "0 = off", at_least=0)
    ms_pool: int = _opt(1, "mode seeking compares the two samples averaged over k x k cells (1 = per pixel); "
                           "k > 1 rewards samples that differ over areas, not in fine texture", at_least=1)
    ms_object: bool = _opt(False, "mode seeking measures the two samples' difference over the object only (the "
                                  "target's pixels that are not paper white): specks and colour clouds on the "
                                  "paper earn nothing")
    lambda_flat: float = _opt(0.0, "weight of the flat-fill term: the output's 5x5 local std where the target is "
                                   "flat (fills, paper); blind to a fill's colour, so it costs variety nothing; "
                                   "0 = off", at_least=0)
    # generator: its architecture (the command line's --ngf ... --upsample)
    generator: GeneratorOptions = field(default_factory=GeneratorOptions)
    # discriminator
    ndf: int = _opt(64, "discriminator width: filters of its first layer", at_least=1)
    n_layers: int = _opt(3, "PatchGAN depth 0..5 (0 = 1x1 PixelGAN, 1..5 = 16..286 px patches, 3 = 70x70)",
                         at_least=0, at_most=5)
    # optimisation
    batch_size: int = _opt(1, "pairs per step, per process", at_least=1)
    lr: float = _opt(2e-4, "Adam learning rate", above=0)
    lr_d: float = _opt(0.0, "discriminator lr (0 = --lr)", at_least=0)
    beta1: float = _opt(0.5, "Adam beta1", at_least=0, below=1)
    beta2: float = _opt(0.999, "Adam beta2", at_least=0, below=1)
    n_epochs: float = _opt(100.0, "epochs at constant lr", at_least=0)
    n_epochs_decay: float = _opt(100.0, "then epochs of linear lr decay to 0", at_least=0)
    lr_schedule: str = _opt("epochs", "epochs (the two above) | budget (their ratio stretched over --max-seconds)",
                            choices=LR_SCHEDULES)
    max_steps: int = _opt(0, "stop after this many steps (0 = no limit; the epoch schedule decides)", at_least=0)
    max_seconds: float = _opt(0.0, "stop once the run's wall time (all sessions) passes this (0 = no limit)",
                              at_least=0)
    init_std: float = _opt(0.02, "std of the reference's N(0, std) weight init", above=0)
    ema_decay: float = _opt(0.0, "keep an EMA of G's weights with this decay (e.g. 0.999); it is what is shown and "
                                 "exported; 0 = off", at_least=0, below=1)
    init_from: str = _opt("", "start from a model (folder, registry id, Hub repo or checkpoint): its G, EMA and D; "
                              "its architecture options become the defaults; a larger --ngf widens its generator "
                              "(train.widen)")
    ema_restart: bool = _opt(False, "with --init-from on another data set (a new style): start the EMA anew from its "
                                    "generator, with the warm-up, instead of continuing its average of a model of "
                                    "other data")
    # augmentation (on the device, in batch)
    jitter: bool = _opt(True, "random jitter: resize S -> --load-size, random crop back to S")
    load_size: int = _opt(0, "jitter resize side (0 = round(S * 286 / 256))", at_least=0)
    flip: bool = _opt(True, "random horizontal flip")
    # resolution curriculum: the first share of the budget on the same pairs prepared smaller
    low_res_data: str = _opt("", "resolution curriculum: the same training pairs prepared at a smaller size (train "
                                 "prepare --size, e.g. data/openmoji-128), trained on first")
    low_res_share: float = _opt(0.0, "share of the budget (--max-seconds, else the steps) spent on --low-res-data "
                                     "before --data; 0 = off", at_least=0, below=1)
    freehand: float = _opt(0.0, "chance a training drawing is redrawn with hand-drawing faults (wobble, gaps, "
                                "overshoot, doubled strokes, pen width; train.freehand) before the canonical "
                                "line-style step; 0 = off", at_least=0, at_most=1)
    # speed
    amp: str = _opt("none", "autocast precision: none | bf16 | fp16 (fp16 adds gradient scalers)", choices=AMP_MODES)
    channels_last: bool = _opt(False, "channels-last memory format")
    compile: bool = _opt(False, "torch.compile the networks")
    device: str = _opt("auto", "auto | cpu | cuda | cuda:N (under torchrun: cuda:LOCAL_RANK)")
    workers: int = _opt(0, "CPU threads per process (torch.set_num_threads; 0 = torch's default)", at_least=0)
    # bookkeeping
    seed: int = _opt(0, "seed of weights, batches, jitter and dropout")
    checkpoint_every: int = _opt(1000, "steps between checkpoints (one is also written at the end; 0 = only then)",
                                 at_least=0)
    sample_every: int = _opt(500, "steps between PNG grids of held-out input | output | target (0 = at the end only)",
                             at_least=0)
    n_samples: int = _opt(4, "rows in that grid", at_least=1)
    log_every: int = _opt(10, "steps between log.jsonl lines / loss-history points", at_least=1)
    final_eval: bool = _opt(True, "run evaluate on the held-out split at the end")
    eval_max: int = _opt(0, "pairs the final evaluation reads (0 = the whole held-out split)", at_least=0)
    progress: bool = _opt(True, "tqdm bar on rank 0")
    resume: bool = _opt(False, "continue from <out-dir>/<name>/checkpoints/last.pt")

    def __post_init__(self) -> None:
        if isinstance(self.generator, Mapping):  # TrainConfig(generator={"ngf": 16}) from Python
            self.generator = GeneratorOptions(**_generator_keys(self.generator))
        elif not isinstance(self.generator, GeneratorOptions):
            raise ConfigError(f"generator must be GeneratorOptions or a dict of its options, got {self.generator!r}")
        _check_ranges(self)  # the generator's options check theirs
        if self.n_epochs + self.n_epochs_decay <= 0:
            raise ConfigError("--n-epochs and --n-epochs-decay must not both be 0")
        if self.lr_schedule == "budget" and self.max_seconds <= 0:
            raise ConfigError("lr_schedule 'budget' spreads the schedule over the wall-clock budget: "
                             "give --max-seconds too")
        if bool(self.low_res_data) != bool(self.low_res_share):
            raise ConfigError("a resolution curriculum needs both --low-res-data DIR (the same pairs prepared at a "
                              "smaller --size) and --low-res-share F (the share of the budget spent on them)")
        if self.r1_gamma and not self.uses_gan:
            raise ConfigError("--r1-gamma regularises the discriminator, and loss 'l1' has none")
        if self.lambda_ms and not self.generator.dropout:
            raise ConfigError("--lambda-ms needs dropout: the mode-seeking term compares two dropout samples")
        if self.ms_object and not self.lambda_ms:
            raise ConfigError("--ms-object shapes the mode-seeking term: give --lambda-ms too")

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
        """The saved layout: the generator's options nested under "generator"."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        """A config from options: nested (``to_dict``), or flat (the command line's layout, and that of
        every config saved before the generator's options were nested)."""
        _generator_keys(d.get("generator") or {})
        options = flat_options(d)
        unknown = set(options) - {f.name for f in option_fields()}
        if unknown:
            raise ConfigError(f"unknown train config keys: {sorted(unknown)}")
        generator = {f.name: options.pop(f.name) for f in fields(GeneratorOptions) if f.name in options}
        return cls(**options, generator=GeneratorOptions(**generator))


def _generator_keys(d: Mapping[str, Any]) -> dict[str, Any]:
    """``d`` when every key is one of the generator's options, else a ConfigError naming the others."""
    unknown = set(d) - {f.name for f in fields(GeneratorOptions)}
    if unknown:
        raise ConfigError(f"unknown generator options: {sorted(unknown)}; "
                          f"they are {[f.name for f in fields(GeneratorOptions)]}")
    return dict(d)


def option_fields() -> list[Field]:
    """Every option as the command line lists it: TrainConfig's fields, the generator's in its place."""
    return [g for f in fields(TrainConfig) for g in (fields(GeneratorOptions) if f.name == "generator" else (f,))]


def flat_options(d: Mapping[str, Any]) -> dict[str, Any]:
    """A config dict, nested (``TrainConfig.to_dict``) or flat (saved before the nesting), in the flat
    layout of the command line, with no key added or checked. Where a dict has both, the flat key wins
    (an option given over a saved config). What --resume compares and a stint's recipe records."""
    return {**(d.get("generator") or {}), **{k: v for k, v in d.items() if k != "generator"}}


def option_changes(before: Mapping[str, Any], now: Mapping[str, Any], *, keys: Iterable[str] | None = None,
                   ignore: Collection[str] = ()) -> dict[str, tuple[Any, Any]]:
    """{option: (before, now)} for each option both config dicts (either layout) set, to different
    values: among ``keys`` (in their order; default: all of ``now``'s), ``ignore`` aside. What --resume
    refuses and what a continued stint warns of."""
    before, now = flat_options(before), flat_options(now)
    return {k: (before[k], now[k]) for k in (now if keys is None else keys)
            if k not in ignore and k in before and k in now and before[k] != now[k]}
