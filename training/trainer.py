"""The GAN trainer: one readable ``fit()`` on Accelerate for every family (``training/family.py``).

Per step: the family's phases (StyleGAN2: G main -> lazy path length -> D main -> lazy R1; a
critic block repeated ``train.d_steps_per_g`` times), the family's end-of-step statistics, EMA
copies, the ADA p update. Per tick (``train.tick_kimg``): the one host synchronisation
(metrics, bad-step streak), the tick line, evaluation, sample grid, checkpoint.

Reproducibility across world sizes and resumes: every random draw of a micro-batch comes from
torch's RNG reseeded from ``(seed, step, phase, global micro-batch index)``; a global batch is the
same set of micro-batches whether it runs on one process with gradient accumulation or on many,
and a resumed run continues the same streams from its counters (``training/state.py``).

Speed: no host synchronisation inside a tick (statistics stay on the device, a bad update is
skipped on the device, stop signals are agreed between host threads); cudnn autotuning and TF32
(``train.tf32``) on CUDA; fused Adam; ``train.compile`` compiles the main phases.
"""

from __future__ import annotations

import copy
import resource
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from data_prep.manifest import Manifest, load_manifest

from . import augment as augment_lib
from . import data as data_lib
from . import networks as networks_lib
from .checkpoint import latest_valid_checkpoint, remove_stale_temp, verify_checkpoint
from .distributed import DeepSpeedUpdater, Distributed, Updater
from .ema import ema_beta, update_ema
from .families import get_family
from .family import Batch, EvalContext
from .metrics import is_better
from .networks.export import export_kind, read_export_config, read_translator_config
from .optim import build_optimizer, lazy_ratio, lr_factor
from .runlog import RunLog
from .state import TrainState, load_training, save_training
from .steps import StepRunner
from .train_config import TrainConfig

Status = Literal["finished", "interrupted", "diverged"]


class TrainingError(RuntimeError):
    """Training stopped abnormally (non-finite loss); the last good checkpoint is kept."""


@dataclass
class TrainResult:
    run_dir: Path
    export_dir: Path | None
    images_seen: int
    status: Status
    mlflow_run_id: str | None = None
    last_checkpoint: Path | None = None
    grid_path: Path | None = None
    metrics: dict[str, float] = field(default_factory=dict)


def configure_backends(tcfg: TrainConfig, device: torch.device) -> None:
    """CUDA: cudnn autotuning (fixed shapes within a run) and the documented TF32 choice."""
    if device.type != "cuda":
        return
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = tcfg.tf32
    torch.backends.cudnn.allow_tf32 = tcfg.tf32


def _default_yaml(cfg: Any) -> str:
    import yaml

    def plain(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        return x

    return yaml.safe_dump(plain(asdict(cfg)), sort_keys=False)


def _peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (Linux)


class Streams:
    """One shard reader per data stream, rebuilt when the micro-batch geometry changes (start,
    resume, ProGAN batch changes) at the current ``images_seen``."""

    def __init__(self, manifests: dict[str, Manifest], cfg: Any, dist: Distributed) -> None:
        self.manifests, self.cfg, self.dist = manifests, cfg, dist
        self.layout = (
            torch.channels_last if cfg.train.use_channels_last else torch.contiguous_format
        )
        self._key: tuple | None = None
        self._iters: dict[str, Any] = {}

    def next(self, micro: int, accum: int, rounds: int, images_seen: int) -> list[list[dict]]:
        """-> ``batches[round][micro-batch] = {stream: Batch}`` of this rank."""
        if self._key != (micro, accum):
            self._iters = {
                name: iter(
                    data_lib.build_loader(
                        manifest,
                        self.cfg.data,
                        batch=micro,
                        rank=self.dist.rank,
                        world_size=self.dist.world_size,
                        seed=self.cfg.train.seed
                        if i == 0
                        else data_lib.stable_seed(self.cfg.train.seed, "stream", name) % 2**31,
                        micro_per_rank=accum,
                        start_index=images_seen,
                    )
                )
                for i, (name, manifest) in enumerate(self.manifests.items())
            }
            self._key = (micro, accum)
        device = self.dist.device
        out = []
        for _ in range(rounds):
            row = []
            for _ in range(accum):
                micro_batch = {}
                for name, it in self._iters.items():
                    images, labels = next(it)
                    images = images.to(device, non_blocking=True).float() / 127.5 - 1.0
                    images = images.contiguous(memory_format=self.layout)
                    micro_batch[name] = Batch(images, labels.to(device, non_blocking=True))
                row.append(micro_batch)
            out.append(row)
        return out


class Trainer:
    """Builds everything from the run config, then ``fit()`` runs the algorithm."""

    def __init__(self, cfg: Any, config_yaml: str | None = None) -> None:
        self.cfg, self.tcfg = cfg, cfg.train
        self.config_yaml = config_yaml or _default_yaml(cfg)
        self.dist = Distributed(cpu=self.tcfg.cpu, mixed_precision=self.tcfg.mixed_precision)
        self.device = self.dist.device
        configure_backends(self.tcfg, self.device)
        self.run_dir = Path(cfg.run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        family_cls = get_family(cfg.model.family)
        self.manifests = {n: load_manifest(m) for n, m in family_cls.streams(cfg).items()}
        for manifest in self.manifests.values():  # missing/short shards: one line, no work yet
            data_lib.check_shards(manifest)
        self.manifest = next(iter(self.manifests.values()))
        torch.manual_seed(self.tcfg.seed)  # identical initial weights on every rank
        self.family = family_cls(cfg, self.manifests, self.device)
        self._build_networks()
        self._build_updaters()
        self._build_augment()
        self.state = TrainState(family=self.family.name, world_size=self.dist.world_size)
        self.log = RunLog(cfg, is_main=self.dist.is_main, config_yaml=self.config_yaml)
        self.streams = Streams(self.manifests, cfg, self.dist)
        self.runner = StepRunner(
            family=self.family,
            cfg=cfg,
            dist=self.dist,
            nets=self.nets,
            specs=self.specs,
            updaters=self.updaters,
            augment=self.augment,
            report_real_logits=self.report_real_logits,
            precision=self.precision,
        )
        self.total_images = int(self.tcfg.total_kimg * 1000)
        self.last_metrics: dict[str, float] = {}
        self._era: int | None = None
        self._stop_signal: str | None = None

    # -- construction ----------------------------------------------------------------------------
    def _build_networks(self) -> None:
        """Networks on the device, their precision (contract: the networks cast their own
        high-resolution blocks), and the EMA copies."""
        self.specs = self.family.build_networks()
        set_precision = getattr(networks_lib, "set_precision", None)
        # Until the networks support set_precision, reduced precision falls back to autocast.
        self.precision = (
            self.dist.autocast
            if set_precision is None and self.tcfg.mixed_precision != "no"
            else _no_autocast
        )
        self.nets: dict[str, torch.nn.Module] = {}
        self.ema_pairs: list[tuple[str, str]] = []
        for name, spec in self.specs.items():
            module = spec.module.to(self.device).train()
            if self.tcfg.use_channels_last:
                module = module.to(memory_format=torch.channels_last)
            if set_precision is not None and spec.reduced_precision:
                set_precision(module, self.tcfg.mixed_precision)
            # trained networks keep requires_grad until the updaters are built (DeepSpeed
            # partitions only parameters that require grad); the phases switch it after that
            self.nets[name] = module.requires_grad_(spec.optimizer is not None)
        for name, spec in self.specs.items():
            if spec.ema:
                ema = copy.deepcopy(self.nets[name]).eval().requires_grad_(False)
                self.nets[spec.ema] = ema
                self.ema_pairs.append((spec.ema, name))

    def _build_updaters(self) -> None:
        """One updater per trained network: the default averaged all-reduce, or DeepSpeed."""
        _, micro, accum = self.geometry(self.family.schedule(0).batch)
        self.updaters: dict[str, Updater] = {}
        self.lr_ratio: dict[str, float] = {}
        for name, spec in self.specs.items():
            if spec.optimizer is None:
                continue
            module = self.nets[name]
            opt = build_optimizer(spec.optimizer, module.parameters(), self.device)
            self.lr_ratio[name] = lazy_ratio(spec.optimizer)
            if self.tcfg.backend == "deepspeed":
                self.updaters[name] = DeepSpeedUpdater(
                    self.dist,
                    module,
                    opt,
                    zero_stage=self.tcfg.zero_stage,
                    micro_batch=micro,
                    accum=accum,
                )
            else:
                self.updaters[name] = Updater(self.dist, module, opt)

    def _build_augment(self) -> None:
        acfg = self.cfg.augment
        self.ada = None
        if acfg.mode == "ada":
            self.ada = augment_lib.AdaController.from_config(acfg, device=self.device)

    # -- augmentation and ADA --------------------------------------------------------------------
    def augment_p(self) -> float | torch.Tensor:
        """The current p: the ADA controller's (its device tensor once it keeps one), else the
        configured constant."""
        return self.ada.p if self.ada is not None else self.cfg.augment.p

    def p_value(self) -> float:
        """p as a float for logging (a host read: once per tick)."""
        if self.ada is None:
            return float(self.cfg.augment.p) if self.cfg.augment.mode == "fixed" else 0.0
        return float(self.ada.p_value()) if hasattr(self.ada, "p_value") else float(self.ada.p)

    def augment(self, images: torch.Tensor) -> torch.Tensor:
        return augment_lib.augment(images, self.cfg.augment, self.augment_p())

    def report_real_logits(self, logits: torch.Tensor) -> None:
        if self.ada is not None:  # a non-finite logit must not move p
            self.ada.accumulate(torch.nan_to_num(logits.detach().float(), 0.0, 0.0, 0.0))

    # -- geometry and schedule -------------------------------------------------------------------
    def geometry(self, batch: int) -> tuple[int, int, int]:
        """-> (global batch, per-device micro-batch, accumulation steps)."""
        world = self.dist.world_size
        micro = self.tcfg.batch_per_device or max(batch // world, 1)
        micro = min(micro, max(batch // world, 1))
        if batch % (micro * world):
            raise ValueError(
                f"train.batch={batch} must be a multiple of train.batch_per_device ({micro}) x "
                f"world size ({world}); change train.batch or train.batch_per_device"
            )
        return batch, micro, batch // (micro * world)

    def apply_schedule(self, resuming: bool = False) -> tuple[int, int, int]:
        """Learning rates and optimizer resets of the family's schedule -> batch geometry."""
        seen = self.state.images_seen
        sched = self.family.schedule(seen)
        total = int(self.tcfg.total_kimg * 1000)
        ramp = lr_factor(seen, total, total - int(self.tcfg.lr_rampdown_kimg * 1000))
        for name, updater in self.updaters.items():
            lr = (sched.lr or {}).get(name, self.specs[name].optimizer.lr)
            updater.set_lr(lr * ramp * self.lr_ratio[name])
        if self._era is not None and sched.era != self._era and sched.reset_optimizers:
            if not resuming:
                for updater in self.updaters.values():
                    updater.reset_state()
        self._era = sched.era
        batch, micro, accum = self.geometry(sched.batch)
        for updater in self.updaters.values():
            if hasattr(updater, "set_accumulation"):
                updater.set_accumulation(micro, accum)
        return batch, micro, accum

    # -- one step --------------------------------------------------------------------------------
    def next_batches(self) -> tuple[int, list[list[dict[str, Batch]]]]:
        """Host side of a step: the schedule and this rank's real batches -> (images, batches)."""
        batch, micro, accum = self.apply_schedule()
        rounds = self.tcfg.d_steps_per_g
        return batch * rounds, self.streams.next(micro, accum, rounds, self.state.images_seen)

    def train_step(self, images: int, batches: list[list[dict[str, Batch]]]) -> None:
        """Device side of a step: phases, EMA, ADA p. Never waits for the device."""
        st = self.state
        self._last_step_images = st.images_seen
        self.runner.run(batches, step=st.step, images_seen=st.images_seen)
        # EMA half-life in kimg, ramped up early in training (StyleGAN2-ADA)
        beta = ema_beta(images, self.tcfg.ema_kimg, st.images_seen, self.tcfg.ema_rampup)
        for ema_name, name in self.ema_pairs:
            update_ema(self.nets[ema_name], self.nets[name], beta)
        st.images_seen += images
        st.step += 1
        if self.ada is not None and st.step % self.cfg.augment.interval == 0:
            self.ada.update(self.dist.sum(self.ada.pending().to(self.device)))

    # -- the algorithm ---------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        resumed = self.resume()
        self.start()
        stop = self.dist.stop_agreement()
        tick_images = int(self.tcfg.tick_kimg * 1000)
        self._tick_start = (time.time(), self.state.images_seen)
        status: Status | None = None
        while status is None and self.state.images_seen < self.total_images:
            self.train_step(*self.next_batches())
            stopping = stop.poll(self._stop_signal is not None)
            done = self.state.images_seen >= self.total_images
            if stopping or done or self.state.images_seen - self._tick_start[1] >= tick_images:
                status = self.end_tick(stopping, done)
        stop.close()
        return self.finish(status or "finished", resumed)

    def end_tick(self, stopping: bool, done: bool) -> Status | None:
        """The tick's single host sync, then its outputs -> a final status or None to go on."""
        metrics, bad_steps, bad_now, _ = self.runner.collect(stopping)
        if bad_steps >= self.tcfg.max_bad_steps:
            self._bad_steps = bad_steps
            return "diverged"
        self.log_tick(metrics)
        st, tcfg = self.state, self.tcfg
        tick, st.tick = st.tick, st.tick + 1
        if stopping:
            return "interrupted"
        every = int(self.cfg.eval.every_kimg * 1000)
        tick_images = st.images_seen - self._tick_start[1]
        if every and not done and st.images_seen // every > (st.images_seen - tick_images) // every:
            self.evaluate()
        if tcfg.snapshot_ticks and tick % tcfg.snapshot_ticks == 0 and not done:
            self.sample_grid()
        if tcfg.checkpoint_ticks and tick % tcfg.checkpoint_ticks == 0 and not done:
            if bad_now:  # keep the last good checkpoint: never save right after a bad step
                self.log.say(
                    f"checkpoint skipped: the last {bad_now} step(s) had a non-finite loss"
                )
            else:
                self.save()
        self.runner.reset_tick()
        self._tick_start = (time.time(), st.images_seen)
        return None

    def log_tick(self, metrics: dict[str, float]) -> None:
        start, start_images = self._tick_start
        seconds = max(time.time() - start, 1e-9)
        images = self.state.images_seen - start_images
        # the position the tick's last step trained at (ProGAN: its resolution and alpha)
        progress = self.family.progress(getattr(self, "_last_step_images", self.state.images_seen))
        values = {
            **metrics,
            "timing/sec_per_kimg": seconds / max(images / 1000, 1e-9),
            "timing/images_per_sec": images / seconds,
            "resources/peak_memory_gb": _peak_memory_gb(self.device),
            "augment/p": self.p_value(),
            "progress/kimg": self.state.images_seen / 1000,
            **{f"progress/{k}": v for k, v in progress.items()},
        }
        self.last_metrics = {
            **{k: v for k, v in self.last_metrics.items() if k.startswith("metrics/")},
            **values,
        }
        self.log.tick(
            tick=self.state.tick,
            images_seen=self.state.images_seen,
            total_images=self.total_images,
            values=values,
            progress=progress,
        )

    def start(self) -> None:
        st = self.state
        if self.dist.is_main:
            remove_stale_temp(self.ckpt_dir)  # what a killed save left behind
        warning = data_lib.shard_warning(
            self.manifest, self.dist.world_size, self.cfg.data.num_workers
        )
        if warning:
            self.log.warn(warning)
        st.mlflow_run_id = self.log.start(
            resumed_images=st.images_seen if self._resumed_from else None,
            mlflow_run_id=st.mlflow_run_id,
            tags={
                "ganforge.dataset_sha256": self.manifest.sha256,
                "ganforge.dataset": self.manifest.name,
                "ganforge.world_size": self.dist.world_size,
                "ganforge.family": self.family.name,
                "ganforge.resolution": self.manifest.resolution,
                "ganforge.run_dir": str(self.run_dir.resolve()),
            },
        )
        self._install_signal_handlers()
        held_out = self.manifest.num_samples - self.manifest.split_samples("train")
        self.log.say(
            f"training {self.family.name} at {self.manifest.resolution}px on "
            f"{self.manifest.split_samples('train')} images"
            + (f" ({held_out} held out)" if held_out else "")
            + f", {self.dist.world_size} process(es) on "
            f"{self.device.type}, batch {self.tcfg.batch}, {self.total_images / 1000:g} kimg; "
            f"run dir {self.run_dir}"
        )

    def finish(self, status: Status, resumed: Path | None) -> TrainResult:
        export_dir = grid = last_ckpt = None
        if status == "diverged":
            last_ckpt = self.log.diverged(self.state.images_seen, self.ckpt_dir, self._bad_steps)
        else:
            if status == "interrupted":
                self.log.say(
                    f"ganforge: {self._stop_signal} received: saving a checkpoint and exiting"
                )
            if status == "finished" and (self.cfg.eval.at_end or self.cfg.eval.every_kimg > 0):
                self.evaluate()
            last_ckpt = self.save()
            grid = self.sample_grid()
            export_dir = self.export()
        metrics = dict(self.last_metrics)
        if status == "finished" and self.cfg.eval.use_best and export_dir is not None:
            export_dir, metrics = self.best_result(export_dir, metrics)
        self.log.finish(status, export_dir)
        result = TrainResult(
            run_dir=self.run_dir,
            export_dir=export_dir,
            images_seen=self.state.images_seen,
            status=status,
            mlflow_run_id=self.state.mlflow_run_id,
            last_checkpoint=last_ckpt,
            grid_path=grid,
            metrics=metrics,
        )
        self.dist.shutdown()
        return result

    def best_result(self, final: Path, metrics: dict[str, float]) -> tuple[Path, dict]:
        """``eval.use_best``: export-best/ and its evaluation (its export's metrics, which survive
        a resume) as the run's result; the final export when no snapshot was kept."""
        best = self.run_dir / "export-best"
        if not self.dist.is_main or not best.is_dir():
            return final, metrics
        read = read_export_config if export_kind(best) == "generator" else read_translator_config
        meta = read(best).get("meta", {})
        key = self.cfg.eval.keep_best
        value = meta.get("metrics", {}).get(key)
        shown = f"{value:.4f}" if isinstance(value, (int, float)) else value
        self.log.say(
            f"eval.use_best: the run's result is {best} ({meta.get('kimg')} kimg, {key} "
            f"{shown}); the final G is in {final}"
        )
        return best, {f"metrics/{k}": float(v) for k, v in meta.get("metrics", {}).items()}

    # -- checkpoints -----------------------------------------------------------------------------
    def save(self, root: Path | None = None, keep: int | None = None) -> Path | None:
        self.state.world_size = self.dist.world_size
        self.state.phase = self.family.progress(self.state.images_seen)
        path = save_training(
            Path(root or self.ckpt_dir),
            state=self.state,
            dist=self.dist,
            nets=self.nets,
            updaters=self.updaters,
            family=self.family,
            ada=self.ada,
            config_yaml=self.config_yaml,
            keep=self.tcfg.keep_checkpoints if keep is None else keep,
        )
        self.log.checkpoint_saved(path)
        return path

    def resume(self) -> Path | None:
        spec = self.tcfg.resume
        path = None
        if spec == "auto":  # the newest checkpoint that passes its checksums
            path = latest_valid_checkpoint(self.ckpt_dir, warn=self.log.warn)
        elif spec is not None:
            path = verify_checkpoint(spec)
        self._resumed_from = path
        if path is None:
            self.apply_schedule()
            return None
        saved, note = load_training(
            path,
            dist=self.dist,
            nets=self.nets,
            updaters=self.updaters,
            family=self.family,
            ada=self.ada,
        )
        self.state = saved
        self.apply_schedule(resuming=True)
        self.log.say(
            f"resumed from {path} at {saved.images_seen / 1000:.1f} kimg (saved with world size "
            f"{saved.world_size}, now {self.dist.world_size}), augment p {self.p_value():.3f}{note}"
        )
        return path

    # -- evaluation and outputs ------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        """The family's metrics (all ranks take part); logged as ``metrics/<name>``. With
        ``eval.keep_best``, a new best is saved as ``checkpoints-best/`` + ``export-best/``."""
        with self.precision():  # evaluate() trains its classifier: no global no_grad
            results = self.family.evaluate(
                self.nets,
                self.state.images_seen,
                EvalContext(
                    device=self.device,
                    rank=self.dist.rank,
                    world_size=self.dist.world_size,
                    gather=self.dist.gather,
                    log=self.log.say if self.dist.is_main else None,
                ),
            )
        metrics = {f"metrics/{k}": float(v) for k, v in results.items()}
        self.last_metrics.update(metrics)
        self.log.eval_metrics(metrics, self.state.images_seen)
        key = self.cfg.eval.keep_best
        if key and key in results and is_better(key, results[key], self.state.best_metric):
            self.state.best_metric = float(results[key])
            self.log.say(
                f"new best {key} {self.state.best_metric:.4f}: saved to checkpoints-best/ and "
                f"export-best/"
            )
            self.save(root=self.run_dir / "checkpoints-best", keep=1)
            self.export(self.run_dir / "export-best")
        return results

    @torch.no_grad()
    def sample_grid(self) -> Path | None:
        if not self.dist.is_main or self.tcfg.grid_size == 0:
            return None
        images = self.family.grid(self.nets, self.state.images_seen, self.tcfg.grid_size)
        return self.log.grid(images.float(), self.state.images_seen, self.manifest.resolution)

    def export(self, out_dir: Path | None = None) -> Path | None:
        if not self.dist.is_main:
            return None
        meta = {
            "kimg": round(self.state.images_seen / 1000, 3),
            "dataset_sha256": self.manifest.sha256,
            "dataset": self.manifest.name,
            "mlflow_run_id": self.state.mlflow_run_id,
            "metrics": {
                k.split("/", 1)[1]: v
                for k, v in self.last_metrics.items()
                if k.startswith("metrics/")
            },
        }
        return self.family.export(self.nets, Path(out_dir or self.run_dir / "export"), meta)

    def _install_signal_handlers(self) -> None:
        def handler(signum, _frame):
            self._stop_signal = signal.Signals(signum).name

        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                signal.signal(sig, handler)
            except ValueError:  # not the main thread (e.g. embedded use)
                pass


def _no_autocast():
    import contextlib

    return contextlib.nullcontext()


def train(cfg: Any, config_yaml: str | None = None) -> TrainResult:
    """Train from a run config (``pipeline.config.RunConfig`` or anything with the same sections)."""
    return Trainer(cfg, config_yaml).fit()


__all__ = ["TrainConfig", "TrainResult", "Trainer", "TrainingError", "train"]
