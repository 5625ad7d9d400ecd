"""training.metrics.cas: CAS and augmentation gain on real digit shards with the real classifier."""

from __future__ import annotations

import pytest
import torch

from training.metrics.cas import (
    UsefulnessConfig,
    split_metrics,
    stratified_subset,
    usefulness,
)
from training.metrics.coverage import ClassifierConfig, _read_all


@pytest.fixture(scope="module")
def digits_val(tmp_path_factory):
    """The built-in digits at 16 px with a held-out 'val' split."""
    from data_prep import shard_dataset
    from data_prep.config import PrepConfig
    from data_prep.manifest import load_manifest

    out = tmp_path_factory.mktemp("digits-val")
    shard_dataset(
        PrepConfig(source="digits", resolution=16, shard_samples=512, workers=1, val_fraction=0.2),
        out=str(out),
        progress=False,
    )
    return load_manifest(str(out))


CFG = UsefulnessConfig(max_real=800, classifier=ClassifierConfig(epochs=3))


def _bank(manifest):
    """Real training digits by class: an 'oracle generator' draws from them."""
    x, y = _read_all(manifest, 800, "train")
    return {int(k): x[y == k] for k in y.unique()}


def _sampler(bank, honest: bool):
    def sample(z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        cls = c.argmax(1)
        if not honest:  # ignores the requested class: labels carry no information
            cls = (cls + 1 + (z[:, 0] > 0).long() * 3) % len(bank)
        pick = (z[:, 1].abs() * 1000).long()
        imgs = torch.stack([bank[int(k)][int(p) % len(bank[int(k)])] for k, p in zip(cls, pick)])
        return imgs.float() / 127.5 - 1.0

    return sample


def test_cas_near_real_for_faithful_generator_chance_for_label_blind(digits_val):
    bank = _bank(digits_val)
    good = usefulness(_sampler(bank, True), digits_val, ["cas"], z_dim=4, c_dim=10, cfg=CFG)
    bad = usefulness(_sampler(bank, False), digits_val, ["cas"], z_dim=4, c_dim=10, cfg=CFG)
    assert good["cas_real_accuracy"] > 0.8
    assert good["cas"] > 0.7  # a generator that reproduces the classes scores near real data
    assert bad["cas"] < 0.3 and bad["cas_chance"] == pytest.approx(0.1)


def test_augment_gain_positive_with_faithful_synthetic_data(digits_val):
    bank = _bank(digits_val)
    cfg = UsefulnessConfig(max_real=800, real_fraction=0.05, classifier=ClassifierConfig(epochs=3))
    r = usefulness(_sampler(bank, True), digits_val, ["augment"], z_dim=4, c_dim=10, cfg=cfg)
    assert r["augment_gain"] == pytest.approx(r["augment_with_synth"] - r["augment_real_only"])
    assert r["augment_gain"] > 0.02 and r["augment_real_fraction"] == 0.05


def test_helpers_and_errors(digits_val, digits_shards):
    assert split_metrics("fid, cas,augment") == ("fid", ["cas", "augment"])
    labels = torch.arange(100) % 4
    keep = stratified_subset(labels, 0.1, 0)
    assert torch.bincount(labels[keep]).tolist() == [2, 2, 2, 2]  # round(0.1 * 25) per class
    with pytest.raises(ValueError, match="conditional on the dataset's 10 classes"):
        usefulness(lambda z, c: z, digits_val, ["cas"], z_dim=4, c_dim=3)
    from data_prep.manifest import load_manifest

    with pytest.raises(ValueError, match="no 'val' split"):
        usefulness(lambda z, c: z, load_manifest(str(digits_shards)), ["cas"], z_dim=4, c_dim=10)


def test_eval_cli_cas_augment(digits_val, tmp_path, capsys):
    import json

    from pipeline.cli import main as cli
    from tests.unit.deploy.conftest import make_export

    export = make_export(tmp_path / "cond10", c_dim=10)
    argv = [
        "eval",
        "--model",
        str(export),
        "--data",
        digits_val.location,
        "--metrics",
        "cas,augment",
        "--max-real",
        "300",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "r.json"),
    ]
    assert cli(argv) == 0
    metrics = json.loads((tmp_path / "r.json").read_text())["metrics"]
    assert {
        "cas",
        "cas_real_accuracy",
        "augment_gain",
        "augment_real_only",
        "augment_with_synth",
    } <= set(metrics)
    assert cli(argv[:2] + [str(tmp_path / "missing")] + argv[3:]) == 2
