"""Train a pix2pix generator: ``python -m train fit --data DIR --name NAME [options]`` (train.fit_args).

The objective and the lr schedule are train.trainer's. ``--max-steps`` / ``--max-seconds`` cut a
run short without changing the schedule, so equal-budget comparisons see the same lr at each step.
``--lr-schedule budget`` (with ``--max-seconds``) lays the same constant-then-decay shape over the
wall-clock budget instead, so a run that must stop at a time reaches lr 0 when it does.

The same script runs on one process or under torchrun (train.distributed). Each rank trains on its
own shard of every epoch; only rank 0 writes files.

Run folder: ``<out_dir>/<name>/`` = checkpoints/last.pt, samples/step_XXXXXX.png, log.jsonl,
losses.png, metrics.json. ``last.pt`` (train.resume) holds everything needed to continue
(``--resume``); a resumed run takes exactly the steps an uninterrupted one would have taken.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.distributed as dist

from p2p_demo.image import save_image
from train.config import RESUMABLE, ConfigError, TrainConfig, option_changes
from train.curriculum import Phase, curriculum
from train.dataset import PairedData, batch_indices, load_manifest, split_size, steps_per_epoch
from train.distributed import init_distributed, resolve_device
from train.evaluate import evaluate_generator
from train.lineage import Lineage, checkpoint_license, combined_license, load_init_source, stint_record
from train.plots import check_plotting, plot_losses, sample_grid
from train.resume import CHECKPOINT_VERSION, load_checkpoint, rng_state, save_checkpoint, seed_everything, set_rng_state
from train.trainer import LOSS_NAMES, Trainer

log = logging.getLogger(__name__)


def run_dir(cfg: TrainConfig) -> Path:
    return Path(cfg.out_dir) / cfg.name


def check_resumable(cfg: TrainConfig, saved: Mapping[str, Any]) -> None:
    """Refuse to resume a checkpoint's config (either layout, ``flat_options``) with another experiment:
    options outside RESUMABLE that the checkpoint records must be the same."""
    diff = option_changes(saved, cfg.to_dict(), ignore=RESUMABLE)
    if diff:
        lines = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in diff.items())
        raise ConfigError(f"--resume with a different experiment ({lines}); start a new --name instead")


def _data_info(folder: str) -> dict[str, Any]:
    """What a model card needs to know about the data: the manifest without per-file lists."""
    manifest = load_manifest(folder)
    info = {k: v for k, v in manifest.items() if k not in ("skipped", "excluded")}
    info["skipped_count"] = len(manifest.get("skipped") or [])
    info["excluded_count"] = sum(int(v.get("count", 0)) for v in (manifest.get("excluded") or {}).values())
    info["path"] = str(folder)
    return info


def fit(cfg: TrainConfig) -> dict[str, Any]:
    """Train as configured; returns the metrics written to metrics.json (rank 0; {} elsewhere)."""
    rank, world, local_rank = init_distributed(cfg.device)
    try:
        return Run(cfg, rank, world, local_rank).train()
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


class Run:
    """One session of a run: its data, curriculum and trainer, the state it resumes, the step loop."""

    def __init__(self, cfg: TrainConfig, rank: int, world: int, local_rank: int) -> None:
        self.t_start = time.perf_counter()
        self.cfg, self.rank, self.world = cfg, rank, world
        self.device = resolve_device(cfg.device, local_rank, world)
        if cfg.workers:
            torch.set_num_threads(cfg.workers)
        self.main = rank == 0
        if self.main:
            check_plotting()
        self.out = run_dir(cfg)
        self.ckpt_path = self.out / "checkpoints" / "last.pt"

        ckpt: dict[str, Any] | None = None
        if cfg.resume:
            ckpt = load_checkpoint(self.ckpt_path)
            check_resumable(cfg, ckpt["config"])
        elif self.ckpt_path.exists():
            raise FileExistsError(f"{self.ckpt_path} exists: continue it with --resume, or pick another --name")
        self._load_data()

        self.jitter_rng = torch.Generator()
        seed_everything(cfg.seed + 1 + rank)  # dropout masks differ between ranks
        self.jitter_rng.manual_seed(cfg.seed * 1_000_003 + 7919 * (rank + 1))
        self.step, self.history, self.wall_before, self.images_before = 0, [], 0.0, 0
        self.lineage = Lineage()  # the stints the run started from (--init-from)
        self.license = self.manifest.get("licence") or ""  # what the weights carry ("" = for a person to decide)
        if ckpt is not None:
            self._restore(ckpt)
        elif cfg.init_from:
            source = load_init_source(cfg.init_from)
            self.trainer.init_from(source)
            self.lineage = source.lineage
            data_license, self.license = self.license, combined_license(source.license, self.license)
            if self.main and not self.license:
                log.warning("%s is under %s and the data under %s: decide the trained model's licence with "
                            "export --license", cfg.init_from, source.license or "an unknown licence",
                            data_license or "an unknown licence")
            elif self.main and source.license.lower() != data_license.lower():
                log.info("the trained model is under %s (%s: %s, the data: %s; export --license overrides it)",
                         self.license, cfg.init_from, source.license, data_license)
            if self.main:
                log.info("starting from %s: %d steps, %d images seen before this run", cfg.init_from,
                         self.lineage.steps, self.lineage.images_seen)
                changes = self.lineage.recipe_changes(cfg.to_dict())
                if changes:
                    log.warning("this stint changes the previous stint's recipe: %s (give the flags to keep it)",
                                ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changes.items()))
        self.images_seen = self.images_before
        if self.main:
            self._prepare_folder()

    def _load_data(self) -> None:
        cfg = self.cfg
        self.manifest = load_manifest(cfg.data)
        self.train_data = train = PairedData.load(cfg.data, "train", self.device)
        self.held_out = PairedData.load(cfg.data, "test", self.device) if split_size(self.manifest, "test") else None
        if self.held_out is None and self.main:
            log.warning("no test split in %s: sample grids use training pairs and no final evaluation runs", cfg.data)
        self.grid_data = self.held_out if self.held_out is not None else train
        self.curriculum = curriculum(cfg, self.manifest, train, self.device)
        self.spe = steps_per_epoch(len(train), cfg.batch_size, self.world)
        # Where the generator's options meet the data: the smallest size decides the U-Net's default
        # depth (a 1x1 bottleneck there) and must take it; the targets decide the channels.
        generator = cfg.generator.resolve(size=min(self.curriculum.sizes), channels=train.channels)
        self.in_ch = generator.in_channels
        self.trainer = Trainer(cfg, generator, device=self.device, steps_per_epoch=self.spe, world=self.world)
        total = self.trainer.total_steps
        self.total = total if not cfg.max_steps else min(total, cfg.max_steps)

    def _restore(self, ckpt: dict[str, Any]) -> None:
        """Continue where the checkpoint stopped: weights, optimisers, step, history, clock and RNGs."""
        cfg = self.cfg
        self.lineage = Lineage.from_dict(ckpt["lineage"]) if ckpt.get("lineage") else Lineage()
        self.license = checkpoint_license(ckpt)
        self.trainer.load_state_dict(ckpt)
        self.step, self.history = int(ckpt["step"]), list(ckpt.get("history", []))
        self.wall_before, self.images_before = float(ckpt.get("wall_time", 0.0)), int(ckpt.get("images_seen", 0))
        if cfg.max_seconds:  # a budget schedule carries on from the time already spent, not from lr 1
            self.trainer.budget_used = self.wall_before / cfg.max_seconds
        if len(ckpt["rng"]) == self.world:
            set_rng_state(ckpt["rng"][self.rank], self.jitter_rng)
        elif self.main:
            log.warning("checkpoint was written by %d processes, now %d: RNG streams restart", len(ckpt["rng"]),
                        self.world)

    def _prepare_folder(self) -> None:
        for sub in ("checkpoints", "samples"):
            (self.out / sub).mkdir(parents=True, exist_ok=True)
        (self.out / "config.json").write_text(json.dumps(self.cfg.to_dict(), indent=2))
        log_path = self.out / "log.jsonl"
        if self.step and log_path.is_file():  # drop lines the interrupted run wrote after the checkpoint
            kept = [ln for ln in log_path.read_text().splitlines()
                    if ln and json.loads(ln).get("step", 0) <= self.step]
            log_path.write_text("".join(ln + "\n" for ln in kept))
        elif not self.step:
            log_path.write_text("")

    def phase(self) -> Phase:
        """Which resolution this step trains at: the low one for the first low_res_share of the budget
        (of the wall clock with --max-seconds, else of the schedule's steps, which --max-steps does not
        change), so a resumed run is in the same phase."""
        if self.curriculum.low is None:
            return self.curriculum.full
        t = self.trainer
        return self.curriculum.at(t.budget_used if self.cfg.max_seconds else self.step / max(t.total_steps, 1))

    def checkpoint(self) -> None:
        rngs = [None] * self.world
        if self.world > 1:
            dist.all_gather_object(rngs, rng_state(self.jitter_rng))
        else:
            rngs = [rng_state(self.jitter_rng)]
        if not self.main:
            return
        cfg, step, trainer = self.cfg, self.step, self.trainer
        state = {
            "version": CHECKPOINT_VERSION, "step": step, "epoch": step / self.spe, "config": cfg.to_dict(),
            "generator_config": trainer.gen_config.to_dict(), "line_style": self.manifest.get("line_style"),
            "data": _data_info(cfg.data), "license": self.license, "world_size": self.world, "rng": rngs,
            "history": self.history,
            "wall_time": self.wall_before + (time.perf_counter() - self.t_start), "images_seen": self.images_seen,
            "lineage": self.lineage.to_dict(), "discriminator_config": trainer.discriminator_config,
            "stint": stint_record(cfg.to_dict(), steps=step, images_seen=self.images_seen,
                                  wall_s=self.wall_before + (time.perf_counter() - self.t_start),
                                  threads=torch.get_num_threads(), world=self.world, device=self.device.type,
                                  init_from=cfg.init_from),
            **trainer.state_dict(),
        }
        save_checkpoint(state, self.ckpt_path)

    def save_samples(self) -> None:
        grid = sample_grid(self.trainer.G_out, self.grid_data, self.cfg.n_samples, self.in_ch)
        save_image(grid, self.out / "samples" / f"step_{self.step:06d}.png")

    def train(self) -> dict[str, Any]:
        """The step loop, then the last checkpoint, samples, loss curves and evaluation."""
        cfg, main = self.cfg, self.main
        bar = None
        if main and cfg.progress:
            from tqdm import tqdm

            bar = tqdm(total=self.total, initial=self.step, unit="step", dynamic_ncols=True, desc=cfg.name)
        overhead = 0.0  # seconds spent on checkpoints and samples, excluded from images/s
        t_loop = time.perf_counter()
        self.window_t, self.window_images = t_loop, 0
        start_step, self.running, self.running_n = self.step, {k: 0.0 for k in LOSS_NAMES}, 0
        phase = self.phase()
        self.steps_at = {s: 0 for s in self.curriculum.sizes}
        while self.step < self.total:
            now_phase = self.phase()
            if now_phase is not phase and main:
                log.info("step %d: the curriculum moves from %d px to %d px", self.step, phase.data.size,
                         now_phase.data.size)
            phase = now_phase
            self._step(phase)
            stop = self._out_of_time()
            if self.step % cfg.log_every == 0 or self.step == self.total or stop:
                self._log(phase, bar)
            if bar is not None:
                bar.update(1)

            t0 = time.perf_counter()
            if main and cfg.sample_every and self.step % cfg.sample_every == 0:
                self.save_samples()
            if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and self.step < self.total and not stop:
                self.checkpoint()
            overhead += time.perf_counter() - t0
            if stop:
                if main:
                    log.info("stopping at step %d: --max-seconds %.0f reached", self.step, cfg.max_seconds)
                break
        loop_time = time.perf_counter() - t_loop
        if bar is not None:
            bar.close()

        self.checkpoint()
        if self.world > 1:
            dist.barrier()
        if not main:
            return {}
        return self._finish(start_step, loop_time - overhead)

    def _step(self, phase: Phase) -> None:
        cfg = self.cfg
        idx = batch_indices(len(self.train_data), self.step, cfg.batch_size, cfg.seed, self.rank, self.world)
        a, b = phase.data.pairs(idx, self.in_ch)
        a = phase.freehand(a, self.jitter_rng)
        a, b = phase.jitter(a, b, self.jitter_rng)
        losses = self.trainer.step(a, b)
        self.steps_at[phase.data.size] += 1
        self.step += 1
        self.images_seen += len(idx) * self.world
        self.window_images += len(idx) * self.world
        for k in LOSS_NAMES:
            self.running[k] = self.running[k] + losses[k]  # tensors: no device sync until we log
        self.running_n += 1

    def _out_of_time(self) -> bool:
        """Whether --max-seconds is spent (all sessions together); also moves a budget schedule on."""
        cfg = self.cfg
        if not (cfg.max_seconds and (self.world == 1 or self.step % cfg.log_every == 0)):
            return False
        spent = self.wall_before + time.perf_counter() - self.t_start
        if self.world > 1:  # every rank must stop at the same step, and use the same lr
            clock = torch.tensor([spent], device=self.device, dtype=torch.float64)
            dist.all_reduce(clock, op=dist.ReduceOp.MAX)
            spent = float(clock.item())
        self.trainer.budget_used = spent / cfg.max_seconds
        return spent > cfg.max_seconds

    def _log(self, phase: Phase, bar: Any) -> None:
        """One log.jsonl line and history point: the losses averaged since the last one, images/s."""
        device, world = self.device, self.world
        vals = torch.stack([torch.as_tensor(self.running[k], device=device).float() for k in LOSS_NAMES]) / self.running_n
        if world > 1:
            dist.all_reduce(vals, op=dist.ReduceOp.AVG if device.type == "cuda" else dist.ReduceOp.SUM)
            if device.type != "cuda":
                vals = vals / world
        now = time.perf_counter()
        ips = self.window_images / max(now - self.window_t, 1e-9)
        self.window_t, self.window_images = now, 0
        rec = {"step": self.step, "epoch": round(self.step / self.spe, 4),
               "lr": self.trainer.opt_G.param_groups[0]["lr"], "size": phase.data.size,
               **{k: float(v) for k, v in zip(LOSS_NAMES, vals.tolist())}, "images_per_s": ips,
               "time": self.wall_before + now - self.t_start}
        self.history.append(rec)
        self.running, self.running_n = {k: 0.0 for k in LOSS_NAMES}, 0
        if self.main:
            with open(self.out / "log.jsonl", "a") as f:
                f.write(json.dumps(rec) + "\n")
            if bar is not None:
                bar.set_postfix({"img/s": f"{ips:.1f}", **{k: f"{rec[k]:.3f}" for k in LOSS_NAMES}}, refresh=False)

    def _finish(self, start_step: int, train_seconds: float) -> dict[str, Any]:
        cfg, step, trainer = self.cfg, self.step, self.trainer
        if not (cfg.sample_every and step % cfg.sample_every == 0):
            self.save_samples()
        if self.history:
            plot_losses(self.history, self.out / "losses.png")
        final_eval = None
        if cfg.final_eval and self.held_out is not None:
            final_eval, _ = evaluate_generator(trainer.G_out, self.held_out, seed=0, line_style=self.curriculum.full.style,
                                               max_items=cfg.eval_max)
            trainer.G_out.set_training_mode()
        trained = self.images_seen - self.images_before
        metrics = {
            "name": cfg.name, "steps": step, "epochs": step / self.spe, "steps_this_session": step - start_step,
            "images_seen": self.images_seen, "world_size": self.world, "device": str(self.device),
            "steps_this_session_at": {str(k): v for k, v in self.steps_at.items()},
            "images_per_s": trained / max(train_seconds, 1e-9),
            "wall_time_s": self.wall_before + time.perf_counter() - self.t_start,
            "final_losses": {k: self.history[-1][k] for k in LOSS_NAMES} if self.history else {},
            "eval": final_eval, "config": cfg.to_dict(), "generator_config": trainer.gen_config.to_dict(),
            "data": _data_info(cfg.data), "history": self.history,
        }
        (self.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        return metrics
