"""What a model folder carries so that training can continue it, and the running totals.

A model folder (``config.json`` + ``model.safetensors``, what the app loads) may hold a
``training/`` subfolder that the app never reads:

* ``training/generator.safetensors``: the raw generator weights (``model.safetensors`` is the
  exported one: the EMA of the weights when the run kept one);
* ``training/discriminator.safetensors``: the PatchGAN, so the adversarial game goes on where it
  stopped instead of against a fresh discriminator;
* ``training/state.json``: the discriminator's shape and every stint of training so far (steps,
  images seen, wall time, CPU-hours, recipe), so the model card can add them up.

Tensors only (safetensors), never a pickle. ``python -m train fit --init-from <folder>`` reads
this, ``python -m train export`` writes it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from train.config import TrainConfig, flat_options, option_changes
from train.resume import checkpoint_weights, is_train_checkpoint, load_checkpoint

TRAINING_DIR = "training"
GENERATOR_FILE = "generator.safetensors"
DISCRIMINATOR_FILE = "discriminator.safetensors"
STATE_FILE = "state.json"
STATE_VERSION = 1

# The recipe options a stint records (the rest of TrainConfig is bookkeeping), by their command-line
# names: a recipe is flat (``train.config.flat_options``) whichever layout the config was saved in.
RECIPE_KEYS = ("ngf", "loss", "gan_mode", "lambda_l1", "lambda_ms", "ms_pool", "ms_object", "lambda_flat",
               "r1_gamma", "ndf", "n_layers",
               "batch_size", "lr", "lr_d", "beta1", "beta2", "n_epochs", "n_epochs_decay", "lr_schedule",
               "max_seconds", "ema_decay", "dropout_p", "channel_dropout", "dropout_levels", "jitter", "flip",
               "freehand", "low_res_share", "amp", "seed")


# Recipe options a stint sets for itself rather than inherits: its budget and schedule, its seed.
BUDGET_KEYS = frozenset({"max_seconds", "n_epochs", "n_epochs_decay", "lr_schedule", "seed"})


@dataclass
class Lineage:
    """The stints of training a model went through, oldest first, and its discriminator's shape."""

    stints: list[dict[str, Any]] = field(default_factory=list)
    discriminator: dict[str, Any] | None = None  # {"in_channels", "ndf", "n_layers", "norm"}

    @property
    def steps(self) -> int:
        return sum(int(s.get("steps", 0)) for s in self.stints)

    @property
    def images_seen(self) -> int:
        return sum(int(s.get("images_seen", 0)) for s in self.stints)

    @property
    def cpu_hours(self) -> float:
        return sum(float(s.get("cpu_hours", 0.0)) for s in self.stints)

    @property
    def wall_hours(self) -> float:
        return sum(float(s.get("wall_s", 0.0)) for s in self.stints) / 3600.0

    def to_dict(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "steps": self.steps, "images_seen": self.images_seen,
                "cpu_hours": round(self.cpu_hours, 3), "wall_hours": round(self.wall_hours, 3),
                "discriminator": self.discriminator,
                "stints": [{**st, "init_from": recorded_source(str(st.get("init_from") or ""))} for st in self.stints]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Lineage":
        if int(d.get("version", 0)) != STATE_VERSION:
            raise ValueError(f"training state version {d.get('version')!r}; this code reads version {STATE_VERSION}")
        return cls(stints=list(d.get("stints") or []), discriminator=d.get("discriminator"))

    def recipe_changes(self, cfg: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
        """{option: (previous stint's value, this config's)} for each recipe option a new stint changes
        (budget and seed aside). An option the flags leave at its default silently changes the recipe
        of a continued lineage (the previous stint's batch 4 becomes 1): the run says so at its start.
        An option newer than the previous stint's record was at its default then (an option is added
        with the default that keeps the old behaviour), so turning it on is a change too."""
        if not self.stints:
            return {}
        before = {**flat_options(TrainConfig.from_dict({}).to_dict()), **flat_options(self.stints[-1].get("recipe") or {})}
        return option_changes(before, cfg, keys=RECIPE_KEYS, ignore=BUDGET_KEYS)

    def summary(self) -> str:
        """One sentence for the model card."""
        if not self.stints:
            return ""
        devices = sorted({str(s.get("device", "?")) for s in self.stints})
        return (f"Training so far: {len(self.stints)} stint(s), {self.steps:,} steps, {self.images_seen:,} images seen, "
                f"{self.wall_hours:.2f} h of wall time, {self.cpu_hours:.2f} CPU-hours ({', '.join(devices)}).")


PREVIOUS_STINT = "the previous stint's checkpoint"
_OLD_CHECKPOINT_NAME = "the checkpoint of run "  # how records named a run checkpoint before


def recorded_source(spec: str) -> str:
    """How a lineage and a model card name an ``--init-from`` source: a registry id, a Hub repo or a
    relative path as given; an absolute path relative to the working folder when it lies inside it,
    else by its name alone, marked local (``openmoji (a local path)``: neither a Hub id nor a user's
    folder); a ``train fit`` checkpoint (``runs/<name>/checkpoints/*.pt``) as the previous stint's:
    its lineage ends with that stint, and a run folder is never shipped, so its name means nothing to
    a reader of the card. A model's record never carries a path of the machine that trained it:
    ``Lineage.to_dict`` applies this whenever a lineage is written, so stints recorded before the rule
    existed are cleaned too."""
    path = Path(spec)
    if (path.suffix == ".pt" and path.parent.name == "checkpoints") or spec.startswith(_OLD_CHECKPOINT_NAME):
        return PREVIOUS_STINT
    if not spec or not path.is_absolute():
        return spec
    try:
        inside = path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        inside = None
    if inside is not None and inside.parts:
        return inside.as_posix()
    return f"{path.name or 'a folder'} (a local path)"


def stint_record(cfg: dict[str, Any], *, steps: int, images_seen: int, wall_s: float, threads: int, world: int,
                 device: str, init_from: str = "") -> dict[str, Any]:
    """One stint of ``train fit`` as the lineage records it, from its config dict (either layout).
    CPU-hours count threads x processes x wall time on a CPU (what a 2-core machine spends); on a GPU
    they count the GPU-hours instead."""
    options = flat_options(cfg)
    return {
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "steps": int(steps), "images_seen": int(images_seen), "wall_s": round(float(wall_s), 1),
        "device": device, "processes": int(world), "threads": int(threads),
        "cpu_hours": round(float(wall_s) * (threads * world if device == "cpu" else world) / 3600.0, 6),
        "init_from": init_from,  # as given; Lineage.to_dict names it for the record (recorded_source)
        "recipe": {k: options[k] for k in RECIPE_KEYS if k in options},
    }


def read_lineage(folder: str | Path) -> Lineage:
    """The folder's lineage; an empty one when it carries no training state."""
    path = Path(folder) / TRAINING_DIR / STATE_FILE
    if not path.is_file():
        return Lineage()
    return Lineage.from_dict(json.loads(path.read_text()))


def read_tensors(folder: str | Path, filename: str) -> dict[str, torch.Tensor] | None:
    """fp32 tensors of ``training/<filename>``, or None when the folder does not carry it."""
    from safetensors.torch import load_file

    path = Path(folder) / TRAINING_DIR / filename
    if not path.is_file():
        return None
    return {k: (v.float() if v.is_floating_point() else v) for k, v in load_file(str(path)).items()}


def write_training_state(folder: str | Path, *, generator: dict[str, torch.Tensor],
                         discriminator: dict[str, torch.Tensor] | None, lineage: Lineage,
                         dtype: torch.dtype = torch.float16) -> Path:
    """Write ``training/`` into a model folder (each file atomically, p2p_demo.files.atomic_write)."""
    from safetensors.torch import save_file

    from p2p_demo.files import atomic_write as _atomic_write

    out = Path(folder) / TRAINING_DIR
    out.mkdir(parents=True, exist_ok=True)

    def cast(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: (v.detach().cpu().to(dtype) if v.is_floating_point() else v.detach().cpu()).contiguous().clone()
                for k, v in sd.items()}

    _atomic_write(out / GENERATOR_FILE, lambda p: save_file(cast(generator), str(p), metadata={"format": "pt"}))
    if discriminator is not None:
        _atomic_write(out / DISCRIMINATOR_FILE, lambda p: save_file(cast(discriminator), str(p), metadata={"format": "pt"}))
    else:
        (out / DISCRIMINATOR_FILE).unlink(missing_ok=True)
    text = json.dumps(lineage.to_dict(), indent=2) + "\n"
    _atomic_write(out / STATE_FILE, lambda p: p.write_text(text))
    return out


def checkpoint_lineage(ckpt: dict[str, Any]) -> Lineage:
    """The lineage of a ``train fit`` checkpoint: the stints it started from plus its own."""
    prior = Lineage.from_dict(ckpt["lineage"]) if ckpt.get("lineage") else Lineage()
    cfg = ckpt.get("config", {})
    stint = ckpt.get("stint") or stint_record(
        cfg, steps=int(ckpt.get("step", 0)), images_seen=int(ckpt.get("images_seen", 0)),
        wall_s=float(ckpt.get("wall_time", 0.0)), threads=int(cfg.get("workers") or torch.get_num_threads()),
        world=int(ckpt.get("world_size", 1)), device="cpu", init_from=str(cfg.get("init_from", "")))
    return Lineage(stints=prior.stints + [stint], discriminator=ckpt.get("discriminator_config") or prior.discriminator)


@dataclass
class InitSource:
    """What ``--init-from`` starts a run with."""

    spec: str
    generator_config: dict[str, Any]
    generator: dict[str, torch.Tensor]  # raw weights to train on
    ema: dict[str, torch.Tensor]  # the averaged (exported) weights; the raw ones when there is no average
    discriminator: dict[str, torch.Tensor] | None
    lineage: Lineage
    line_style: dict[str, Any] | None = None
    license: str = ""  # the start's licence ("" = not known)


def load_init_source(spec: str) -> InitSource:
    """A training checkpoint (``runs/x/checkpoints/last.pt``) or any model the app can load (a
    registry id, a folder, a Hub repo), with its ``training/`` state when it carries one."""
    path = Path(spec)
    if path.is_file() and path.suffix in (".pt", ".ckpt"):
        ckpt = load_checkpoint(path)
        if not is_train_checkpoint(ckpt):
            raise ValueError(f"--init-from {spec}: not a train fit checkpoint (no G / generator_config in it)")
        return InitSource(spec, ckpt["generator_config"], ckpt["G"], checkpoint_weights(ckpt), ckpt.get("D"),
                          checkpoint_lineage(ckpt), ckpt.get("line_style"), checkpoint_license(ckpt))
    from p2p_demo.hub import UNKNOWN_LICENSE, load_generator

    G, info = load_generator(spec)
    exported = {k: v.float() if v.is_floating_point() else v for k, v in G.state_dict().items()}
    folder = info.path if info.path is not None and Path(info.path).is_dir() else None
    raw = read_tensors(folder, GENERATOR_FILE) if folder else None
    disc = read_tensors(folder, DISCRIMINATOR_FILE) if folder else None
    lineage = read_lineage(folder) if folder else Lineage()
    return InitSource(spec, G.config.to_dict(), raw if raw is not None else exported, exported, disc, lineage,
                      info.line_style or None, "" if info.license == UNKNOWN_LICENSE else info.license)


def combined_license(start: str, data: str) -> str:
    """The licence of weights trained from a model under ``start`` on data under ``data``: their common
    licence, or the share-alike one of the two, which binds adaptations (a model trained from CC BY-SA
    weights on MIT data, or from MIT weights on CC BY-SA data, is CC BY-SA). Any other pair, or an
    unknown side, is for a person to decide: "" (``export --license``)."""
    if not start or not data:
        return ""
    if start.lower() == data.lower():
        return start
    share_alike = [x for x in (start, data) if "-sa" in x.lower()]
    return share_alike[0] if len(share_alike) == 1 else ""


def checkpoint_license(ckpt: dict[str, Any]) -> str:
    """The licence a checkpoint's weights carry ("" = not known). Checkpoints written before fit
    recorded it: the data's when trained from scratch, not known when started from a model."""
    if "license" in ckpt:
        return ckpt["license"]
    if (ckpt.get("config") or {}).get("init_from"):
        return ""
    return (ckpt.get("data") or {}).get("licence") or ""
