"""deploy.synth / `ganforge synth`: shards in the prep contract, class balance, resume, train."""

from __future__ import annotations

import json

import numpy as np
import pytest
import webdataset as wds

from data_prep import verify_dataset
from data_prep.manifest import load_manifest
from deploy import synth
from pipeline.cli import main as cli


def _labels(out) -> list[int]:
    manifest = load_manifest(str(out))
    ds = wds.WebDataset(manifest.shard_urls("train"), shardshuffle=False).to_tuple("cls")
    return [int(c) for (c,) in ds]


def test_synth_balanced_verifies_and_resumes(export_cond, loaded_cond, tmp_path, capsys):
    out = tmp_path / "synth"
    argv = [
        "synth",
        "--model",
        str(export_cond),
        "--count",
        "25",
        "--shard-size",
        "10",
        "--out",
        str(out),
        "--quiet",
    ]
    assert cli(argv) == 0
    assert verify_dataset(str(out), progress=False) == []
    assert cli(["prep", "verify", str(out)]) == 0
    manifest = load_manifest(str(out))
    assert manifest.num_samples == 25 and len(manifest.shards) == 3
    assert manifest.classes == {"class0": 0, "class1": 1, "class2": 2}
    assert sorted(np.bincount(_labels(out)).tolist()) == [8, 8, 9]
    # Image i is the sample of seed i with its class: the same pixels as `ganforge generate`.
    ds = wds.WebDataset(manifest.shard_urls("train"), shardshuffle=False).decode("rgb8")
    first = next(iter(ds.to_tuple("png", "cls", "json")))
    np.testing.assert_array_equal(first[0], loaded_cond.generate([0], labels=[int(first[1])])[0])
    assert "seed=0" in first[2]["source"]
    # Resume: an intact shard is kept (same bytes, not rewritten), a broken one is redone.
    shard0, shard1 = out / "train-000000.tar", out / "train-000001.tar"
    mtime0 = shard0.stat().st_mtime_ns
    shard1.write_bytes(b"truncated")
    assert cli(argv) == 0
    assert shard0.stat().st_mtime_ns == mtime0
    assert verify_dataset(str(out), progress=False) == []


def test_synth_class_subset_uniform_and_parallel(export_cond, tmp_path):
    sub = synth.synthesize_dataset(
        str(export_cond),
        tmp_path / "sub",
        synth.SynthConfig(count=12, classes="2,class0", shard_size=4),
        workers=2,
        progress=False,
    )
    assert sub.num_samples == 12
    assert np.bincount(_labels(tmp_path / "sub"), minlength=3).tolist() == [6, 0, 6]
    assert verify_dataset(str(tmp_path / "sub"), progress=False) == []
    ids = synth.class_ids(synth.SynthConfig(count=3000, classes="uniform"), 3, [])
    counts = np.bincount(ids, minlength=3)
    assert counts.min() > 900 and counts.max() < 1100 and len(set(ids[:30])) == 3


def test_synth_bad_input_one_line(export_uncond, export_cond, tmp_path, capsys):
    for argv, message in [
        (["--model", str(export_uncond), "--classes", "3"], "unconditional"),
        (["--model", str(export_cond), "--classes", "7"], "not balanced, uniform"),
        (["--model", str(export_cond), "--count", "0"], "synth.count"),
    ]:
        if "--count" not in argv:
            argv += ["--count", "4"]
        assert cli(["synth", *argv, "--out", str(tmp_path / "x"), "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err


@pytest.mark.slow
def test_train_reads_synthetic_shards(export_cond, tmp_path):
    from pipeline.config import load_config
    from tests.conftest import tiny_overrides
    from training.trainer import train

    out = tmp_path / "synth"
    synth.synthesize_dataset(
        str(export_cond), out, synth.SynthConfig(count=64, shard_size=32), progress=False
    )
    cfg = load_config(
        "digits",
        tiny_overrides(tmp_path / "work", out / "manifest.json", **{"model.conditional": True}),
    )
    train(cfg)
    metrics = [
        json.loads(line)
        for line in (tmp_path / "work").rglob("metrics.jsonl").__next__().read_text().splitlines()
    ]
    assert metrics and any("kimg" in m for m in metrics)
