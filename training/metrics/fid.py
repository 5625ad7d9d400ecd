"""Distribution metrics on features: FID, KID, Inception Score (torchmetrics), precision/recall.

All functions take features that were already extracted (``features.py``) and gathered from every
rank, so they run on one process and never touch torch.distributed. The statistics are
torchmetrics' own code, driven through a pass-through "feature network":

- FID (Heusel et al. 2017): ``||mu_r - mu_f||^2 + Tr(S_r + S_f - 2 (S_r S_f)^(1/2))``, float64.
- KID (Binkowski et al. 2018): unbiased MMD^2 with the cubic polynomial kernel
  ``(x.y / d + 1)^3``, averaged over 100 random subsets of min(1000, n_real, n_fake) samples
  (the NVlabs/torch-fidelity protocol). Reported raw (papers often print KID x 10^3).
- IS (Salimans et al. 2016): ``exp(E_x KL(p(y|x) || p(y)))`` over 10 splits.
- Improved precision/recall (Kynkaenniemi et al. 2019): torchmetrics has none for images, so it
  is implemented below as in NVlabs' ``metrics/precision_recall.py``: each real sample gets a
  ball reaching its k-th nearest real neighbour (k=3); precision is the fraction of generated
  samples inside at least one real ball; recall swaps the roles. NVlabs computes it on VGG16
  features; ganforge uses the same features as FID, so the values are not directly comparable
  with numbers from NVlabs' tool.

Random subsets (KID) and split order (IS) come from a seeded CPU generator, so results are
reproducible and the caller's RNG state is left alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from .features import Passthrough

# torchmetrics' Metric.compute() all-reduces its state when torch.distributed is initialised;
# our features are gathered already and compute() runs on rank 0 alone, so syncing would hang.
_NO_SYNC = {"sync_on_compute": False}
_CHUNK = 8192  # rows per update(): bounds the float64 copy inside FID's covariance update


@contextlib.contextmanager
def seeded_cpu_rng(seed: int) -> Iterator[None]:
    """Seed the default CPU generator for the block and restore it afterwards (CUDA untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(int(seed))
        yield


def _check(real: torch.Tensor, fake: torch.Tensor, need: int, what: str) -> None:
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"{what}: expected features [N, D] with equal D, got {list(real.shape)} and {list(fake.shape)}"
        )
    if len(real) < need or len(fake) < need:
        raise ValueError(
            f"{what}: needs at least {need} real and {need} generated samples, "
            f"got {len(real)} and {len(fake)}; raise eval.num_images"
        )


def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """FID between feature sets ``real [N, D]`` and ``fake [M, D]`` (torchmetrics' implementation)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    _check(real, fake, 2, "fid")
    metric = FrechetInceptionDistance(feature=Passthrough(real.shape[1]), **_NO_SYNC).to(
        real.device
    )
    for chunk in real.split(_CHUNK):
        metric.update(chunk.double(), real=True)
    for chunk in fake.split(_CHUNK):
        metric.update(chunk.double(), real=False)
    return float(metric.compute())


def kernel_distance(
    real: torch.Tensor,
    fake: torch.Tensor,
    *,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> float:
    """KID (mean over ``subsets`` random subsets of ``min(subset_size, N, M)`` samples each)."""
    import warnings

    from torchmetrics.image.kid import KernelInceptionDistance

    _check(real, fake, 2, "kid")
    size = min(subset_size, len(real), len(fake))
    with warnings.catch_warnings():  # "will save all extracted features": that is the point here
        warnings.filterwarnings("ignore", message=".*save all extracted features.*")
        metric = KernelInceptionDistance(
            feature=Passthrough(real.shape[1]), subsets=subsets, subset_size=size, **_NO_SYNC
        ).to(real.device)
    # float64: the cubic kernel of 2048-d features loses digits in float32
    metric.update(_canonical_order(real.double()), real=True)
    metric.update(_canonical_order(fake.double()), real=False)
    with seeded_cpu_rng(seed):
        mean, _std = metric.compute()
    return float(mean)


def _canonical_order(features: torch.Tensor) -> torch.Tensor:
    """The rows sorted along a fixed random direction. KID draws its random subsets by position,
    and ranks gather features in rank order (each rank reads its own shards), so without this
    the same images on another number of processes gave another KID."""
    generator = torch.Generator().manual_seed(20191203)
    direction = torch.randn(features.shape[1], generator=generator, dtype=features.dtype)
    return features[torch.argsort(features @ direction.to(features.device), stable=True)]


def inception_score(logits: torch.Tensor, *, splits: int = 10, seed: int = 0) -> float:
    """IS of generated samples from their class logits ``[M, K]`` (mean over ``splits``)."""
    import warnings

    from torchmetrics.image.inception import InceptionScore

    if logits.ndim != 2 or len(logits) < splits:
        raise ValueError(
            f"is: needs logits [M, K] with M >= {splits} (splits), got {list(logits.shape)}"
        )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*save all extracted features.*")
        metric = InceptionScore(feature=Passthrough(logits.shape[1]), splits=splits, **_NO_SYNC).to(
            logits.device
        )
    metric.update(logits.double())
    with seeded_cpu_rng(seed), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*degrees of freedom.*")  # the std of splits=1
        mean, _std = metric.compute()
    return float(mean)


def _pairwise_blocks(
    rows: torch.Tensor, cols: torch.Tensor, batch: int
) -> Iterator[tuple[int, int, torch.Tensor]]:
    for i in range(0, len(rows), batch):
        for j in range(0, len(cols), batch):
            yield i, j, torch.cdist(rows[i : i + batch], cols[j : j + batch])


def knn_radii(features: torch.Tensor, k: int = 3, batch: int = 4096) -> torch.Tensor:
    """Distance from each sample to its k-th nearest neighbour in the same set (self excluded)."""
    radii = []
    for i in range(0, len(features), batch):
        rows = features[i : i + batch]
        dist = torch.cat(
            [torch.cdist(rows, features[j : j + batch]) for j in range(0, len(features), batch)],
            dim=1,
        )
        radii.append(dist.kthvalue(k + 1, dim=1).values)  # +1: the sample itself, at distance 0
    return torch.cat(radii)


def _fraction_inside(
    queries: torch.Tensor, manifold: torch.Tensor, radii: torch.Tensor, batch: int
) -> float:
    """Fraction of ``queries`` within ``radii[j]`` of some ``manifold[j]``."""
    inside = torch.zeros(len(queries), dtype=torch.bool, device=queries.device)
    for i, j, dist in _pairwise_blocks(queries, manifold, batch):
        inside[i : i + len(dist)] |= (dist <= radii[j : j + dist.shape[1]]).any(dim=1)
    return float(inside.float().mean())


def precision_recall(
    real: torch.Tensor, fake: torch.Tensor, *, k: int = 3, batch: int = 4096
) -> tuple[float, float]:
    """Improved precision and recall (Kynkaenniemi et al. 2019) with k-NN balls, k=3 as NVlabs."""
    _check(real, fake, k + 1, "pr")
    real, fake = real.float(), fake.float()
    precision = _fraction_inside(fake, real, knn_radii(real, k, batch), batch)
    recall = _fraction_inside(real, fake, knn_radii(fake, k, batch), batch)
    return precision, recall
