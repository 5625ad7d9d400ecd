"""training.metrics: FID/KID/IS/PR through torchmetrics on features, coverage, caching, ranks, CLI.

Offline by design: a tiny fixed-seed CNN stands in for Inception (whose weights are absent here),
and every metric still runs the library's code path.
"""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from training.metrics import (
    INCEPTION_WEIGHTS_URL,
    EvalConfig,
    InceptionWeightsError,
    evaluate,
    frechet_distance,
    higher_is_better,
    inception_score,
    is_better,
    kernel_distance,
    precision_recall,
    resolve_inception_weights,
    result_names,
)
from training.metrics import evaluation as evaluation_module
from training.metrics.coverage import reset_parameters
from training.metrics.features import FeatureExtractor
from training.metrics.gather import broadcast_from_main, gather_padded


# -- helpers -------------------------------------------------------------------------------------
class TinyExtractor(FeatureExtractor):
    """A fixed random CNN standing in for Inception: uint8 [N, C, H, W] -> 16-d features."""

    name = "tiny-test-extractor"
    num_features = 16
    num_logits = 10

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(32, 16),
        )
        self.fc = nn.Linear(16, 10)
        # weights from a private generator: identical in every instance, even when ranks are threads
        reset_parameters(self, torch.Generator().manual_seed(0))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images.float() / 127.5 - 1)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)


def numpy_fid(a: np.ndarray, b: np.ndarray) -> float:
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(cov_a @ cov_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * covmean))


def numpy_kid(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel on the whole sets (one subset)."""
    d = a.shape[1]
    k_aa, k_bb, k_ab = ((a @ a.T) / d + 1) ** 3, ((b @ b.T) / d + 1) ** 3, ((a @ b.T) / d + 1) ** 3
    m = len(a)
    return float(
        (k_aa.sum() - np.trace(k_aa) + k_bb.sum() - np.trace(k_bb)) / (m * (m - 1))
        - 2 * k_ab.mean()
    )


@pytest.fixture(scope="module")
def digits(digits_shards):
    """(manifest, all real train images uint8 [N, 3, 16, 16], labels [N])."""
    from data_prep.manifest import load_manifest
    from training.data import DataConfig, build_loader

    manifest = load_manifest(str(digits_shards))
    batches = list(
        build_loader(manifest, DataConfig(num_workers=0, shuffle_buffer=0), batch=512, mode="epoch")
    )
    return manifest, torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("eval-cache")


@pytest.fixture
def tiny_inception(monkeypatch):
    """Replace the Inception network with TinyExtractor (as if weights were installed)."""
    monkeypatch.setattr(evaluation_module, "check_inception", lambda weights=None: None)
    monkeypatch.setattr(
        evaluation_module, "inception_extractor", lambda weights=None: TinyExtractor()
    )


def replay(images: torch.Tensor):
    """A 'generator' that returns real images, picked by its latent (so seeds select images)."""

    def sample(z: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        idx = (z[:, 0].abs() * 1e4).long() % len(images)
        return images[idx].float() / 127.5 - 1

    return sample


# -- the metrics on features ---------------------------------------------------------------------
def test_fid_self_zero_different_large_and_matches_numpy():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(300, 8, generator=g)
    b = torch.randn(300, 8, generator=g) * 1.5 + 2.0
    assert abs(frechet_distance(a, a)) < 1e-6
    fid = frechet_distance(a, b)
    assert fid > 30
    assert fid == pytest.approx(numpy_fid(a.double().numpy(), b.double().numpy()), rel=1e-6)
    c = torch.randn(300, 8, generator=g)  # same distribution, other samples: small
    assert frechet_distance(a, c) < 0.5


def test_kid_self_near_zero_different_large_and_matches_numpy():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(200, 8, generator=g)
    b = torch.randn(200, 8, generator=g) + 1.5
    different = kernel_distance(a, b, subsets=5)
    assert different > 0.5
    assert abs(kernel_distance(a, a, subsets=5)) < 0.02 * different
    # one subset of all samples: the subset permutation cannot matter, so it equals the direct formula
    assert kernel_distance(a, b, subsets=1) == pytest.approx(
        numpy_kid(a.double().numpy(), b.double().numpy()), rel=1e-9
    )
    assert kernel_distance(a, b, subsets=5, seed=3) == kernel_distance(a, b, subsets=5, seed=3)


def test_kid_does_not_depend_on_the_order_of_the_rows():
    # ranks gather features in rank order: the same images in another order must give the same
    # KID, although its subsets are drawn at random (by position) with subset_size < N
    g = torch.Generator().manual_seed(2)
    a = torch.randn(300, 8, generator=g)
    b = torch.randn(300, 8, generator=g) + 0.3
    perm_a, perm_b = torch.randperm(300, generator=g), torch.randperm(300, generator=g)
    kid = kernel_distance(a, b, subsets=7, subset_size=50, seed=4)
    assert kernel_distance(a[perm_a], b[perm_b], subsets=7, subset_size=50, seed=4) == kid


def test_inception_score_bounds():
    uniform = torch.zeros(100, 10)
    assert inception_score(uniform) == pytest.approx(1.0)
    confident = torch.nn.functional.one_hot(torch.arange(1000) % 10, 10).float() * 50
    assert inception_score(confident, splits=1) == pytest.approx(10.0, rel=1e-6)
    assert (
        9.0 < inception_score(confident) <= 10.0 + 1e-6
    )  # 10 random splits of 100: nearly balanced


def test_precision_recall_hand_computed():
    real = torch.tensor(
        [[0.0, 0], [1, 0], [0, 1], [1, 1]]
    )  # 3rd-NN radius of every corner: sqrt(2)
    inside = torch.tensor([[0.5, 0.5], [0.2, 0.1], [0.9, 0.8], [0.1, 0.9]])
    far = torch.tensor([[10.0, 10], [11, 10], [10, 11], [11, 11]])
    assert precision_recall(real, real) == (1.0, 1.0)
    assert precision_recall(real, far) == (0.0, 0.0)
    precision, _ = precision_recall(real, torch.cat([inside[:2], far[:2]]))
    assert precision == 0.5


# -- Inception weights ---------------------------------------------------------------------------
def test_missing_inception_weights_message(monkeypatch, tmp_path):
    monkeypatch.delenv("GANFORGE_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(InceptionWeightsError) as err:
        resolve_inception_weights()
    message = str(err.value)
    expected = (
        tmp_path / "torch" / "hub" / "checkpoints" / "weights-inception-2015-12-05-6726825d.pth"
    )
    for needle in (
        INCEPTION_WEIGHTS_URL,
        str(expected),
        "GANFORGE_INCEPTION_WEIGHTS",
        "--inception-weights",
        "docs/evaluation.md",
    ):
        assert needle in message
    with pytest.raises(InceptionWeightsError, match="given explicitly"):
        resolve_inception_weights(tmp_path / "nope.pth")
    monkeypatch.setenv("GANFORGE_INCEPTION_WEIGHTS", str(tmp_path / "env.pth"))
    with pytest.raises(InceptionWeightsError, match="GANFORGE_INCEPTION_WEIGHTS"):
        resolve_inception_weights()
    expected.parent.mkdir(parents=True)
    expected.write_bytes(b"x")
    monkeypatch.delenv("GANFORGE_INCEPTION_WEIGHTS")
    assert resolve_inception_weights() == expected


def test_missing_weights_fail_before_any_work(digits, monkeypatch, tmp_path):
    manifest, _, _ = digits
    monkeypatch.delenv("GANFORGE_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def never(z, c):
        raise AssertionError("generated before checking the weights")

    with pytest.raises(InceptionWeightsError, match="torch-fidelity/releases"):
        evaluate(
            never,
            manifest,
            EvalConfig(metrics=["fid"], num_images=16),
            z_dim=4,
            c_dim=0,
            cache_dir=tmp_path / "cache",
        )
    assert not (tmp_path / "cache").exists()


# -- evaluate() end to end -----------------------------------------------------------------------
def test_evaluate_with_standin_extractor(digits, cache_dir, tiny_inception):
    manifest, images, labels = digits
    cfg = EvalConfig(metrics=["fid", "kid", "pr", "is"], num_images=300, batch=64, num_workers=0)
    real_like = evaluate(replay(images), manifest, cfg, z_dim=8, c_dim=0, cache_dir=cache_dir)
    assert list(real_like) == ["fid", "kid", "precision", "recall", "is"]
    blank = evaluate(
        lambda z, c: torch.full((len(z), 3, 16, 16), -1.0),
        manifest,
        cfg,
        z_dim=8,
        c_dim=0,
        cache_dir=cache_dir,
    )
    assert real_like["fid"] < 0.2 * blank["fid"]
    assert real_like["kid"] < 0.2 * blank["kid"]
    assert real_like["precision"] > 0.8 and real_like["recall"] > 0.5
    assert blank["recall"] < 0.05
    cached = list(cache_dir.glob("reference-*tiny-test-extractor*.safetensors"))
    assert len(cached) == 1 and cached[0].with_suffix(".json").is_file()
    meta = json.loads(cached[0].with_suffix(".json").read_text())
    assert meta["manifest_sha256"] == manifest.sha256 and meta["num_samples"] == len(images)


def test_coverage_separates_collapsed_from_healthy(digits, cache_dir):
    manifest, images, labels = digits
    cfg = EvalConfig(metrics=["coverage"], num_images=400, batch=100, num_workers=0)
    healthy = evaluate(replay(images), manifest, cfg, z_dim=8, c_dim=0, cache_dir=cache_dir)
    threes = images[labels == 3]
    collapsed = evaluate(replay(threes), manifest, cfg, z_dim=8, c_dim=0, cache_dir=cache_dir)
    assert healthy["coverage"] == 1.0 and healthy["class_entropy"] > 0.95
    assert collapsed["coverage"] <= 0.2 and collapsed["class_entropy"] < 0.3
    assert collapsed["classifier_fd"] > 5 * healthy["classifier_fd"]
    assert len(list(cache_dir.glob("classifier-*.safetensors"))) == 1
    assert json.loads(next(cache_dir.glob("classifier-*.json")).read_text())["val_accuracy"] > 0.85


def test_conditional_generator_gets_real_label_distribution(digits, cache_dir):
    manifest, images, labels = digits
    by_class = [images[labels == k] for k in range(10)]
    seen = []

    def conditional(z, c):  # honours its label: a perfect conditional model
        ids = c.argmax(1)
        seen.append(ids)
        return (
            torch.stack(
                [by_class[k][i % len(by_class[k])] for i, k in enumerate(ids.tolist())]
            ).float()
            / 127.5
            - 1
        )

    cfg = EvalConfig(metrics=["coverage"], num_images=200, batch=100, num_workers=0)
    result = evaluate(conditional, manifest, cfg, z_dim=8, c_dim=10, cache_dir=cache_dir)
    assert result["coverage"] == 1.0
    assert torch.bincount(torch.cat(seen), minlength=10).min() > 5


def test_distributed_matches_single_process(digits, cache_dir, tiny_inception):
    """Two ranks (threads with an all-gather) give the single-process result."""
    manifest, images, _ = digits
    cfg = EvalConfig(metrics=["fid", "pr", "coverage"], num_images=101, batch=16, num_workers=0)
    single = evaluate(replay(images), manifest, cfg, z_dim=8, c_dim=0, cache_dir=cache_dir)

    world = 2
    slots: list = [None] * world
    barrier = threading.Barrier(world)

    def make_gather(rank):
        def gather(tensor):
            slots[rank] = tensor.clone()
            barrier.wait()
            out = torch.cat(slots)
            barrier.wait()
            return out

        return gather

    def run_ranks(folder):
        results: list = [None] * world
        errors: list = []

        def run(rank):
            try:
                results[rank] = evaluate(
                    replay(images),
                    manifest,
                    cfg,
                    z_dim=8,
                    c_dim=0,
                    rank=rank,
                    world_size=world,
                    gather=make_gather(rank),
                    cache_dir=folder,
                )
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
                barrier.abort()

        threads = [threading.Thread(target=run, args=(r,)) for r in range(world)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert not errors, errors
        assert results[0] == results[1]
        return results[0]

    # first: nothing cached (classifier trained on rank 0 and broadcast, reals read by both ranks);
    # then: everything cached (rank 0 reads the cache, rank 1 only generates)
    for attempt in range(2):
        result = run_ranks(cache_dir / "ranks")
        for key, value in single.items():
            assert result[key] == pytest.approx(value, rel=1e-4, abs=1e-6), (attempt, key)


def test_seeds_follow_the_generate_convention():
    from deploy.sampling import seeds_to_latents
    from training.metrics.evaluation import latents_and_labels

    z, labels = latents_and_labels(range(5, 9), 12, None, seed=100)
    assert labels is None
    np.testing.assert_array_equal(z, seeds_to_latents([105, 106, 107, 108], 12))
    _, labels = latents_and_labels(range(2000), 4, np.array([0.5, 0.0, 0.25, 0.25]), seed=0)
    counts = np.bincount(labels, minlength=4)
    assert counts[1] == 0 and 900 < counts[0] < 1100


def test_gather_helpers():
    world = 3
    parts = [
        torch.arange(n, dtype=torch.float32).reshape(n, 1) + 10 * r for r, n in enumerate([2, 0, 3])
    ]
    calls = {"n": 0}

    def fake_gather_for(rank):  # what an all-gather returns, built from every rank's padded input
        def gather(t):
            calls["n"] += 1
            if t.dtype == torch.int64:
                return torch.tensor([len(p) for p in parts])
            longest = t.shape[0]
            return torch.cat([torch.cat([p, p.new_zeros(longest - len(p), 1)]) for p in parts])

        return gather

    out = gather_padded(parts[0], fake_gather_for(0), world)
    assert out.flatten().tolist() == [0, 1, 20, 21, 22]
    assert broadcast_from_main(
        torch.ones(2), lambda t: torch.cat([t, t * 0, t * 0]), 0, 3
    ).tolist() == [1, 1]


def test_precompute_reference_then_evaluate_reuses_it(digits, tmp_path, tiny_inception):
    from training.metrics import precompute_reference

    manifest, images, _ = digits
    cfg = EvalConfig(metrics=["fid"], num_images=20, num_workers=0)
    assert precompute_reference(manifest, cfg, cache_dir=tmp_path) == ["tiny-test-extractor"]
    entry = next(tmp_path.glob("reference-*.safetensors"))
    before = entry.stat().st_mtime_ns
    evaluate(replay(images), manifest, cfg, z_dim=8, c_dim=0, cache_dir=tmp_path)
    assert entry.stat().st_mtime_ns == before


def test_cache_locations(digits, tmp_path, monkeypatch):
    import dataclasses

    from training.metrics.reference import cache_dirs

    manifest, _, _ = digits
    monkeypatch.setenv("GANFORGE_CACHE", str(tmp_path / "user"))
    local = dataclasses.replace(manifest)
    local.location = str(tmp_path / "data")
    (tmp_path / "data").mkdir()
    assert cache_dirs(local) == (
        [tmp_path / "data" / "eval-cache", tmp_path / "user" / "eval"],
        tmp_path / "data" / "eval-cache",
    )
    remote = dataclasses.replace(manifest)
    remote.location = "s3://bucket/digits"
    assert cache_dirs(remote) == ([tmp_path / "user" / "eval"], tmp_path / "user" / "eval")
    assert cache_dirs(remote, tmp_path / "x") == ([tmp_path / "x"], tmp_path / "x")


def test_classifier_is_deterministic(digits):
    from training.metrics.coverage import ClassifierConfig, train_classifier

    _, images, labels = digits
    cfg = ClassifierConfig(epochs=1, max_images=200)
    nets = [
        train_classifier(images[:200], labels[:200], num_classes=10, resolution=16, cfg=cfg)[0]
        for _ in range(2)
    ]
    for a, b in zip(nets[0].state_dict().values(), nets[1].state_dict().values()):
        assert torch.equal(a, b)


# -- config and names ----------------------------------------------------------------------------
def test_eval_config_validation_and_names():
    assert result_names(EvalConfig(metrics=["fid", "pr", "coverage"])) == [
        "fid",
        "precision",
        "recall",
        "coverage",
        "class_entropy",
        "classifier_fd",
        "confident",
        "confident_real",
        "confident_balanced",
    ]
    assert result_names(EvalConfig(metrics="fid,kid", feature_extractor="classifier")) == [
        "classifier_fd",
        "classifier_kid",
    ]
    with pytest.raises(ValueError, match="^metrics:"):
        EvalConfig(metrics=["fid", "lpips"])
    with pytest.raises(ValueError, match="^num_images:"):
        EvalConfig(num_images=5)
    with pytest.raises(ValueError, match="^keep_best:"):
        EvalConfig(metrics=["fid"], keep_best="coverage")
    with pytest.raises(ValueError, match="^every_kimg:"):
        EvalConfig(every_kimg=-1)
    assert EvalConfig(metrics=["coverage"], keep_best="coverage").keep_best == "coverage"
    with pytest.raises(ValueError, match="^use_best: needs eval.keep_best"):
        EvalConfig(metrics=["coverage"], at_end=True, use_best=True)
    with pytest.raises(ValueError, match="^use_best: needs eval.keep_best"):
        EvalConfig(metrics=["coverage"], keep_best="confident_balanced", use_best=True)
    assert EvalConfig(
        metrics=["coverage"], keep_best="confident_balanced", at_end=True, use_best=True
    ).use_best
    assert higher_is_better("confident_balanced")
    assert not higher_is_better("fid") and not higher_is_better("metrics/classifier_fd")
    assert higher_is_better("coverage") and higher_is_better("recall")
    assert is_better("fid", 3.0, 4.0) and not is_better("fid", 5.0, 4.0)
    assert is_better("coverage", 0.9, None) and not is_better("coverage", float("nan"), 0.1)


def test_unlabelled_data_rejects_coverage(digits, monkeypatch):
    import dataclasses

    manifest, _, _ = digits
    unlabelled = dataclasses.replace(manifest, classes={})
    with pytest.raises(ValueError, match="coverage"):
        evaluate(
            lambda z, c: None,
            unlabelled,
            EvalConfig(metrics=["coverage"], num_images=10),
            z_dim=4,
            c_dim=0,
        )


# -- CLI ----------------------------------------------------------------------------------------
def test_cli_eval_on_a_tiny_export(digits_shards, cache_dir, tmp_path, capsys):
    from pipeline.cli import main
    from training.networks import build_networks
    from training.networks.config import ModelConfig
    from training.networks.export import save_export

    g, _, g_kwargs, _ = build_networks(
        ModelConfig(z_dim=16, w_dim=16, map_depth=2, channel_base=128, channel_max=16), 16, 3, 0
    )
    export = save_export(tmp_path / "export", g, family="stylegan2", kwargs=g_kwargs)
    out = tmp_path / "metrics.json"
    code = main(
        [
            "eval",
            "--model",
            str(export),
            "--data",
            str(digits_shards),
            "--metrics",
            "coverage",
            "--num-images",
            "32",
            "--batch",
            "16",
            "--device",
            "cpu",
            "--workers",
            "0",
            "--cache-dir",
            str(cache_dir),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "coverage" in printed and "classifier_fd" in printed
    saved = json.loads(out.read_text())
    assert set(saved["metrics"]) == {
        "coverage",
        "class_entropy",
        "classifier_fd",
        "confident",
        "confident_real",
        "confident_balanced",
    }


def test_cli_eval_missing_weights_is_a_user_error(digits_shards, tmp_path, monkeypatch, capsys):
    from pipeline.cli import main

    monkeypatch.delenv("GANFORGE_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.delenv("GANFORGE_DEBUG", raising=False)
    code = main(
        [
            "eval",
            "--model",
            str(tmp_path / "none"),
            "--data",
            str(digits_shards),
            "--metrics",
            "fid",
            "--inception-weights",
            str(tmp_path / "missing.pth"),
            "--device",
            "cpu",
        ]
    )
    assert code == 2
    assert "weights-inception-2015-12-05-6726825d.pth" in capsys.readouterr().err


def test_cli_records_metrics_as_registry_version_tags(digits, tmp_path):
    import argparse

    from mlflow import MlflowClient

    from deploy.generator import mlflow_uri
    from pipeline.commands.eval import _record

    manifest, _, _ = digits
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with mlflow_uri(uri):
        client = MlflowClient()
        client.create_registered_model("digits")
        version = client.create_model_version("digits", source=str(tmp_path)).version
        client.set_registered_model_alias("digits", "champion", version)
    args = argparse.Namespace(
        model="models:/digits@champion",
        tracking_uri=uri,
        no_tags=False,
        log_run=None,
        num_images=64,
    )
    _record(args, {"coverage": 0.9, "classifier_fd": 12.5}, manifest)
    with mlflow_uri(uri):
        tags = MlflowClient().get_model_version("digits", version).tags
    assert tags["metric.coverage"] == "0.9" and tags["metric.classifier_fd"] == "12.5"
    assert tags["eval.dataset_sha256"] == manifest.sha256 and tags["eval.num_images"] == "64"
