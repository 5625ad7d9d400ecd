"""``evaluate()``: the one call the trainer and ``ganforge eval`` make, and its ``EvalConfig``.

Flow (identical on every rank; collectives only through the caller's ``gather``):

1. Check everything that could fail late (Inception weights, labels for coverage) first.
2. Feature extractors: Inception (``features.py``) and/or the coverage classifier (trained or
   loaded on rank 0, its weights broadcast so every rank extracts identical features).
3. Real features from the per-manifest cache, or computed across ranks and cached
   (``reference.py``).
4. Each rank generates its contiguous slice of the ``num_images`` seeds, extracts features, and
   the slices are gathered. Image ``i`` uses latent ``RandomState(seed + i).randn(z_dim)``, the
   convention of ``ganforge generate --seeds``; a conditional generator gets a class drawn from
   the real label distribution with the same RandomState. The generator's noise inputs follow
   ``EvalConfig.noise_mode`` (default random, NVlabs' metric setting), drawn from torch's RNG
   reseeded per rank, so a rerun gives the same images.
5. Rank 0 computes the metrics (``fid.py``, ``coverage.py``) and broadcasts them.

Metric names say which feature space they come from: with ``feature_extractor: classifier``
the distribution metrics are ``classifier_fd``, ``classifier_kid``, ``classifier_precision``,
``classifier_recall`` and ``classifier_is`` - never ``fid``, which always means Inception.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from data_prep.manifest import Manifest

from ..networks.export import lower_is_better
from ..networks.samples import latent_stream, quantize
from .coverage import (
    ClassifierConfig,
    ClassifierFeatures,
    ClassifierNet,
    check_labelled,
    classifier_key,
    classifier_kwargs,
    confident_balanced,
    confident_share,
    coverage_stats,
    load_or_train_classifier,
)
from .features import FeatureExtractor, check_inception, inception_extractor
from .fid import frechet_distance, inception_score, kernel_distance, precision_recall
from .gather import Gather, broadcast_from_main, gather_padded, resolve_gather
from .reference import reference_features

METRICS = ("fid", "kid", "pr", "is", "coverage")
DISTRIBUTION_METRICS = ("fid", "kid", "pr", "is")
FEATURE_EXTRACTORS = ("inception", "classifier")
# result names; which are lower-is-better: training.networks.export.lower_is_better
RESULTS = (
    "fid",
    "kid",
    "precision",
    "recall",
    "is",
    "coverage",
    "class_entropy",
    "classifier_fd",
    "classifier_kid",
    "classifier_precision",
    "classifier_recall",
    "classifier_is",
    "confident",
    "confident_real",
    "confident_balanced",
)

SampleFn = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]
NOISE_MODES = ("random", "const")


@dataclass(kw_only=True)
class EvalConfig:
    """What ``evaluate`` measures and how (``eval:`` in a preset)."""

    metrics: list[str] = field(default_factory=lambda: ["fid"])
    """Which metrics: fid, kid, pr (precision + recall), is (Inception Score), coverage (class
    coverage, class_entropy, classifier_fd, confident, confident_real, confident_balanced;
    labelled data only)."""
    num_images: int = 50_000
    """Generated images per evaluation (50k as in the literature; at least 10)."""
    every_kimg: float = 0.0
    """Evaluate during training every this many kimg (0: off)."""
    at_end: bool = False
    """Evaluate the final G_ema at the end of training (results go into the export's metadata,
    MLflow metrics and, on registration, version tags)."""
    inception_weights: str | None = None
    """Inception weights file (None: $GANFORGE_INCEPTION_WEIGHTS, then torch's hub cache).
    Never downloaded; see docs/evaluation.md."""
    feature_extractor: Literal["inception", "classifier"] = "inception"
    """Feature space of fid/kid/pr/is: inception (standard, needs the weights) or classifier
    (the coverage classifier; results named classifier_*)."""
    keep_best: str | None = None
    """Keep the checkpoint/export that is best by this result name, e.g. fid or coverage
    (None: keep only the latest)."""
    use_best: bool = False
    """The run's result is the best snapshot by ``keep_best`` (``export-best/``): what
    ``ganforge train`` registers and reports and ``ganforge run`` generates from, as a
    StyleGAN2-ADA user picks the best-FID pickle; the final G stays in ``export/``. False: the
    final G."""
    batch: int = 64
    """Images per generator/extractor call, per rank."""
    max_real: int = 0
    """Real images in the reference statistics (0: the whole split)."""
    split: str = "train"
    """Manifest split the real images come from."""
    seed: int = 0
    """First latent seed (image i uses seed + i) and seed of KID/IS subsets."""
    num_workers: int = 2
    """DataLoader workers decoding real images, per rank (0: in the main process)."""
    noise_mode: Literal["random", "const"] = "random"
    """Generator noise inputs while sampling for metrics: random (fresh per image, NVlabs' metric
    setting, which published FID/KID numbers use; seeded, so reruns match) or const (the
    generator's stored per-layer noise). Families without noise inputs ignore it."""

    def __post_init__(self) -> None:
        if isinstance(self.metrics, str):
            self.metrics = [m.strip() for m in self.metrics.split(",") if m.strip()]
        self.metrics = list(dict.fromkeys(self.metrics))
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown or not self.metrics:
            raise ValueError(f"metrics: {unknown or 'empty'} - valid: {', '.join(METRICS)}")
        if self.num_images < 10:
            raise ValueError(f"num_images: must be >= 10, got {self.num_images}")
        if self.every_kimg < 0:
            raise ValueError(f"every_kimg: must be >= 0 (0: off), got {self.every_kimg}")
        if self.feature_extractor not in FEATURE_EXTRACTORS:
            raise ValueError(
                f"feature_extractor: {self.feature_extractor!r} - valid: {', '.join(FEATURE_EXTRACTORS)}"
            )
        if self.batch <= 0:
            raise ValueError(f"batch: must be positive, got {self.batch}")
        if self.max_real < 0:
            raise ValueError(f"max_real: must be >= 0 (0: all), got {self.max_real}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers: must be >= 0, got {self.num_workers}")
        if self.noise_mode not in NOISE_MODES:
            raise ValueError(
                f"noise_mode: must be random or const, got {self.noise_mode!r} (random is the "
                "setting of published FID/KID)"
            )
        if self.use_best and not (self.keep_best and (self.every_kimg > 0 or self.at_end)):
            raise ValueError(
                "use_best: needs eval.keep_best (the metric that ranks the snapshots) and "
                "evaluations (eval.every_kimg > 0 or eval.at_end); set them or use_best=false"
            )
        if self.keep_best is not None and self.keep_best not in result_names(self):
            raise ValueError(
                f"keep_best: {self.keep_best!r} is not computed by metrics={self.metrics} with "
                f"feature_extractor={self.feature_extractor}; choose one of {', '.join(result_names(self))}"
            )


def result_names(cfg: EvalConfig) -> list[str]:
    """The keys ``evaluate`` returns for ``cfg``, in order."""
    p = "" if cfg.feature_extractor == "inception" else "classifier_"
    names = {
        "fid": ["fid" if not p else "classifier_fd"],
        "kid": [f"{p}kid"],
        "pr": [f"{p}precision", f"{p}recall"],
        "is": [f"{p}is"],
        "coverage": [
            "coverage",
            "class_entropy",
            "classifier_fd",
            "confident",
            "confident_real",
            "confident_balanced",
        ],
    }
    return list(dict.fromkeys(n for m in cfg.metrics for n in names[m]))


def higher_is_better(metric: str) -> bool:
    """True for precision/recall/IS/coverage/class_entropy, False for the distances.
    Accepts logged names with a prefix such as ``metrics/fid``."""
    name = metric.rsplit("/", 1)[-1]
    if name not in RESULTS:
        raise ValueError(f"unknown metric {metric!r}; valid: {', '.join(RESULTS)}")
    return not lower_is_better(name)


def is_better(metric: str, value: float, best: float | None) -> bool:
    """Whether ``value`` beats ``best`` (None: nothing yet) on ``metric``; NaN never wins."""
    if value is None or math.isnan(value):
        return False
    if best is None or math.isnan(best):
        return True
    return value > best if higher_is_better(metric) else value < best


# -- extractors ----------------------------------------------------------------------------------
def _needs(cfg: EvalConfig) -> tuple[bool, bool]:
    distribution = any(m in DISTRIBUTION_METRICS for m in cfg.metrics)
    inception = distribution and cfg.feature_extractor == "inception"
    classifier = "coverage" in cfg.metrics or (
        distribution and cfg.feature_extractor == "classifier"
    )
    return inception, classifier


def preflight(manifest: Manifest, cfg: EvalConfig) -> None:
    """Raise now what would otherwise fail after minutes of work: missing or malformed
    Inception weights, coverage on unlabelled data."""
    need_inception, need_classifier = _needs(cfg)
    if need_classifier:
        check_labelled(manifest)
    if need_inception:
        check_inception(cfg.inception_weights)


def shared_classifier(
    manifest: Manifest,
    *,
    cache_dir,
    device: torch.device,
    rank: int,
    world_size: int,
    gather: Gather,
    log=None,
) -> ClassifierFeatures:
    """Rank 0 loads or trains the classifier; its weights are broadcast so all ranks agree."""
    cfg = ClassifierConfig()
    if rank == 0:
        classifier = load_or_train_classifier(
            manifest, cfg=cfg, cache_dir=cache_dir, device=device, log=log
        )
        if world_size == 1:
            return classifier
        net = classifier.net
    else:
        net = ClassifierNet(**classifier_kwargs(manifest, cfg)).to(device)
    flat = torch.nn.utils.parameters_to_vector(net.parameters()).detach()
    torch.nn.utils.vector_to_parameters(
        broadcast_from_main(flat, gather, rank, world_size), net.parameters()
    )
    return classifier if rank == 0 else ClassifierFeatures(net, classifier_key(manifest, cfg))


def build_extractors(
    manifest: Manifest,
    cfg: EvalConfig,
    *,
    device: torch.device | str = "cpu",
    cache_dir=None,
    rank: int = 0,
    world_size: int = 1,
    gather: Gather | None = None,
    log=None,
) -> dict[str, FeatureExtractor]:
    """{"inception": ..., "classifier": ...} as needed by ``cfg``; fails before any heavy work."""
    device = torch.device(device)
    gather = resolve_gather(gather, world_size)
    preflight(manifest, cfg)
    need_inception, need_classifier = _needs(cfg)
    extractors: dict[str, FeatureExtractor] = {}
    if need_inception:
        extractors["inception"] = inception_extractor(cfg.inception_weights).to(device)
    if need_classifier:
        extractors["classifier"] = shared_classifier(
            manifest,
            cache_dir=cache_dir,
            device=device,
            rank=rank,
            world_size=world_size,
            gather=gather,
            log=log,
        )
    return extractors


# -- generated images ----------------------------------------------------------------------------
@contextlib.contextmanager
def _seeded(device: torch.device, seed: int) -> Iterator[None]:
    """Seed CPU and this CUDA device for the generator's noise; restore both afterwards."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.default_generator.manual_seed(seed)
        if device.type == "cuda":
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        yield


def latents_and_labels(
    indices: range, z_dim: int, class_probs: np.ndarray | None, seed: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Image i -> ``RandomState(seed + i)``: ``randn(z_dim)``, then a class drawn from ``class_probs``."""
    z = np.zeros([len(indices), z_dim], dtype=np.float32)
    labels = None if class_probs is None else np.zeros(len(indices), dtype=np.int64)
    cdf = None if class_probs is None else np.cumsum(class_probs)
    for row, i in enumerate(indices):
        rs = latent_stream(seed + i)
        z[row] = rs.randn(z_dim)
        if cdf is not None:
            labels[row] = min(
                int(np.searchsorted(cdf, rs.random_sample() * cdf[-1], side="right")), len(cdf) - 1
            )
    return z, labels


def generator_sampler(generator: torch.nn.Module, noise_mode: str, **forward_kwargs) -> SampleFn:
    """The :data:`SampleFn` of a generator module for ``evaluate``: ``generator(z, c,
    noise_mode=noise_mode, **forward_kwargs)`` as float32 (no truncation).

    noise_mode: pass ``EvalConfig.noise_mode`` (random for training-time FID/KID, as NVlabs);
    forward_kwargs: family extras, e.g. ProGAN's ``resolution``/``alpha``.
    """
    if noise_mode not in NOISE_MODES:
        raise ValueError(f"noise_mode: must be random or const, got {noise_mode!r}")

    def sample(z: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        return generator(z, c, noise_mode=noise_mode, **forward_kwargs).float()

    return sample


def generated_features(
    sample_fn: SampleFn,
    extractors: list[FeatureExtractor],
    *,
    num_images: int,
    z_dim: int,
    c_dim: int,
    class_probs: np.ndarray | None,
    batch: int,
    device: torch.device,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    gather: Gather | None = None,
) -> list[torch.Tensor]:
    """This rank's contiguous slice of the images, through every extractor, gathered in index order."""
    gather = resolve_gather(gather, world_size)
    start, stop = rank * num_images // world_size, (rank + 1) * num_images // world_size
    outputs: list[list[torch.Tensor]] = [[] for _ in extractors]
    with torch.no_grad(), _seeded(device, seed * 1_000_003 + rank):
        for lo in range(start, stop, batch):
            z, labels = latents_and_labels(
                range(lo, min(lo + batch, stop)), z_dim, class_probs if c_dim else None, seed
            )
            c = None
            if c_dim:
                c = torch.zeros([len(z), c_dim], device=device)
                c[torch.arange(len(z)), torch.from_numpy(labels).to(device)] = 1.0
            images = quantize(sample_fn(torch.from_numpy(z).to(device), c))
            for out, extractor in zip(outputs, extractors):
                out.append(extractor(images).float())
    return [
        gather_padded(
            torch.cat(out) if out else torch.zeros(0, e.num_features, device=device),
            gather,
            world_size,
        )
        for out, e in zip(outputs, extractors)
    ]


def _class_probs(
    labels: torch.Tensor | None,
    c_dim: int,
    device: torch.device,
    gather: Gather,
    rank: int,
    world_size: int,
) -> np.ndarray | None:
    """The real label distribution (rank 0's reference labels), uniform when unknown."""
    if c_dim == 0:
        return None
    probs = torch.full([c_dim], 1.0 / c_dim, dtype=torch.float64, device=device)
    if (
        rank == 0
        and labels is not None
        and len(labels)
        and labels.min() >= 0
        and labels.max() < c_dim
    ):
        probs = torch.bincount(labels.long(), minlength=c_dim).double().to(device)
        probs = probs / probs.sum()
    return broadcast_from_main(probs, gather, rank, world_size).cpu().numpy()


# -- the entry point -----------------------------------------------------------------------------
def evaluate(
    sample_fn: SampleFn,
    manifest: Manifest,
    cfg: EvalConfig,
    *,
    z_dim: int,
    c_dim: int,
    device: torch.device | str = "cpu",
    rank: int = 0,
    world_size: int = 1,
    gather: Gather | None = None,
    cache_dir: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """Metrics of a generator against the manifest's real data -> ``{name: value}`` (``result_names``).

    ``sample_fn(z [N, z_dim] float, c [N, c_dim] one-hot or None) -> images [N, C, H, W] in [-1, 1]``
    on ``device``, called under ``torch.no_grad()``. Call on every rank with the same arguments;
    ``gather`` is required when ``world_size > 1`` (see ``gather.py``). Every rank returns the
    same dict. ``log`` receives progress lines (pass it on rank 0 only).
    """
    device = torch.device(device)
    gather = resolve_gather(gather, world_size)
    names = result_names(cfg)
    start = time.time()
    extractors = build_extractors(
        manifest,
        cfg,
        device=device,
        cache_dir=cache_dir,
        rank=rank,
        world_size=world_size,
        gather=gather,
        log=log,
    )
    kinds, ext_list = list(extractors), list(extractors.values())
    reals = reference_features(
        manifest,
        ext_list,
        cache_dir=cache_dir,
        split=cfg.split,
        max_images=cfg.max_real,
        batch=cfg.batch,
        device=device,
        rank=rank,
        world_size=world_size,
        gather=gather,
        num_workers=cfg.num_workers,
        log=log,
    )
    class_probs = _class_probs(
        reals[0].labels if reals[0] is not None else None, c_dim, device, gather, rank, world_size
    )
    if log is not None:
        log(f"generating {cfg.num_images} images for {', '.join(cfg.metrics)}")
    fakes = generated_features(
        sample_fn,
        ext_list,
        num_images=cfg.num_images,
        z_dim=z_dim,
        c_dim=c_dim,
        class_probs=class_probs,
        batch=cfg.batch,
        device=device,
        seed=cfg.seed,
        rank=rank,
        world_size=world_size,
        gather=gather,
    )
    values = torch.full([len(names)], float("nan"), dtype=torch.float64, device=device)
    if rank == 0:
        real = {k: r.features for k, r in zip(kinds, reals)}
        fake = dict(zip(kinds, fakes))
        results = compute_metrics(cfg, extractors, real, fake)
        values = torch.tensor([results[n] for n in names], dtype=torch.float64, device=device)
    values = broadcast_from_main(values, gather, rank, world_size)
    out = dict(zip(names, values.tolist()))
    if log is not None:
        log(
            f"evaluated in {time.time() - start:.1f} s: "
            + ", ".join(f"{k}={v:.4g}" for k, v in out.items())
        )
    return out


def compute_metrics(
    cfg: EvalConfig,
    extractors: dict[str, FeatureExtractor],
    real: dict[str, torch.Tensor],
    fake: dict[str, torch.Tensor],
) -> dict[str, float]:
    """The metrics of ``cfg`` from gathered features ``{extractor kind: [N, D]}`` (one process)."""
    with torch.no_grad():
        return _compute(cfg, extractors, real, fake)


def _compute(
    cfg: EvalConfig,
    extractors: dict[str, FeatureExtractor],
    real: dict[str, torch.Tensor],
    fake: dict[str, torch.Tensor],
) -> dict[str, float]:
    results: dict[str, float] = {}
    kind = cfg.feature_extractor
    p = "" if kind == "inception" else "classifier_"
    if "fid" in cfg.metrics:
        results["fid" if not p else "classifier_fd"] = frechet_distance(real[kind], fake[kind])
    if "kid" in cfg.metrics:
        results[f"{p}kid"] = kernel_distance(real[kind], fake[kind], seed=cfg.seed)
    if "pr" in cfg.metrics:
        results[f"{p}precision"], results[f"{p}recall"] = precision_recall(real[kind], fake[kind])
    if "is" in cfg.metrics:
        results[f"{p}is"] = inception_score(extractors[kind].logits(fake[kind]), seed=cfg.seed)
    if "coverage" in cfg.metrics:
        classifier = extractors["classifier"]
        fake_logits = classifier.logits(fake["classifier"])
        results.update(coverage_stats(fake_logits.argmax(dim=1), classifier.num_logits))
        # the share read with >= 0.9 probability, for the generated and for the real images
        results["confident"] = confident_share(fake_logits)
        results["confident_real"] = confident_share(classifier.logits(real["classifier"]))
        results["confident_balanced"] = confident_balanced(fake_logits)
        if "classifier_fd" not in results:
            results["classifier_fd"] = frechet_distance(real["classifier"], fake["classifier"])
    return results


def precompute_reference(
    manifest: Manifest,
    cfg: EvalConfig,
    *,
    device: torch.device | str = "cpu",
    cache_dir: str | os.PathLike | None = None,
    log=None,
) -> list[str]:
    """Cache the real-data features (and coverage classifier) ``cfg`` needs; for ``ganforge prep``.
    Returns the names of the feature spaces now cached."""
    extractors = build_extractors(manifest, cfg, device=device, cache_dir=cache_dir, log=log)
    reference_features(
        manifest,
        list(extractors.values()),
        cache_dir=cache_dir,
        split=cfg.split,
        max_images=cfg.max_real,
        batch=cfg.batch,
        device=device,
        num_workers=cfg.num_workers,
        log=log,
    )
    return [e.name for e in extractors.values()]
