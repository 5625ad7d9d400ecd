"""The shard reader: decode, exactly-once epochs across ranks/workers, deterministic streams."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from data_prep.manifest import Manifest, ShardInfo, load_manifest, save_manifest
from training.data import DataConfig, ShardStream, build_loader, shard_warning


def _write_shards(tmp_path, num_shards=6, per_shard=5, res=8):
    shards = []
    for s in range(num_shards):
        name = f"train-{s:06d}.tar"
        with wds.TarWriter(str(tmp_path / name)) as sink:
            for i in range(per_shard):
                idx = s * per_shard + i
                arr = np.full((res, res, 3), idx, dtype=np.uint8)
                buf = io.BytesIO()
                Image.fromarray(arr).save(buf, format="PNG")
                sink.write(
                    {
                        "__key__": f"{idx:06d}",
                        "png": buf.getvalue(),
                        "cls": str(idx % 3).encode(),
                        "json": json.dumps({"index": idx}).encode(),
                    }
                )
        shards.append(
            ShardInfo(
                name=name,
                split="train",
                num_samples=per_shard,
                bytes=(tmp_path / name).stat().st_size,
                sha256="x",
            )
        )
    manifest = Manifest(
        name="t",
        resolution=res,
        channels=3,
        image_format="png",
        num_samples=num_shards * per_shard,
        classes={"a": 0, "b": 1, "c": 2},
        shards=shards,
    )
    save_manifest(manifest, str(tmp_path))
    return load_manifest(str(tmp_path))


def _ids(images):
    return images[:, 0, 0, 0].tolist()  # each image is filled with its sample index


def test_decode_and_labels(tmp_path):
    m = _write_shards(tmp_path)
    loader = build_loader(m, DataConfig(num_workers=0, shuffle_buffer=0), batch=4, mode="epoch")
    images, labels = next(iter(loader))
    assert images.dtype == torch.uint8 and images.shape == (4, 3, 8, 8)
    assert [i % 3 for i in _ids(images)] == labels.tolist()


@pytest.mark.parametrize("world_size,workers", [(1, 0), (2, 0), (3, 2), (4, 1)])
def test_epoch_reads_every_sample_exactly_once(tmp_path, world_size, workers):
    m = _write_shards(tmp_path, num_shards=7)  # 7 shards: uneven split on purpose
    seen = []
    for rank in range(world_size):
        loader = build_loader(
            m,
            DataConfig(num_workers=workers),
            batch=4,
            rank=rank,
            world_size=world_size,
            mode="epoch",
        )
        for images, _ in loader:  # finite: no rank blocks on the others
            seen += _ids(images)
    assert sorted(seen) == list(range(35))


def test_resampled_streams_differ_by_rank_and_are_endless(tmp_path):
    m = _write_shards(tmp_path)
    streams = []
    for rank in range(2):
        it = iter(
            build_loader(
                m,
                DataConfig(num_workers=0, shuffle_buffer=8),
                batch=5,
                rank=rank,
                world_size=2,
                seed=1,
            )
        )
        streams.append(
            [v for _ in range(20) for v in _ids(next(it)[0])]
        )  # 100 > 30 samples: endless
    assert streams[0] != streams[1]
    assert set(streams[0]) <= set(range(30))


def test_deterministic_mode_slices_one_global_stream(tmp_path):
    m = _write_shards(tmp_path)
    cfg = DataConfig(num_workers=0, shuffle_buffer=8, loader="deterministic")
    # one process, 2 micro-batches of 3 per step == two ranks with 1 micro-batch of 3 each
    single = iter(build_loader(m, cfg, batch=3, micro_per_rank=2, seed=5))
    ranks = [iter(build_loader(m, cfg, batch=3, rank=r, world_size=2, seed=5)) for r in range(2)]
    for _ in range(6):
        a, b = _ids(next(single)[0]), _ids(next(single)[0])
        assert a == _ids(next(ranks[0])[0]) and b == _ids(next(ranks[1])[0])


def test_deterministic_resume_continues_the_stream(tmp_path):
    m = _write_shards(tmp_path)
    cfg = DataConfig(num_workers=0, shuffle_buffer=8, loader="deterministic", xflip=True)
    it = iter(build_loader(m, cfg, batch=4, seed=3))
    full = [_ids(next(it)[0]) for _ in range(6)]
    resumed = iter(build_loader(m, cfg, batch=4, seed=3, start_index=12))
    assert [_ids(next(resumed)[0]) for _ in range(3)] == full[3:]


def test_corrupt_sample_is_skipped_with_warning(tmp_path):
    m = _write_shards(tmp_path, num_shards=1, per_shard=3)
    with wds.TarWriter(str(tmp_path / "train-000000.tar")) as sink:
        sink.write({"__key__": "bad", "png": b"not a png"})
        sink.write({"__key__": "good", "png": m and _png(), "cls": b"1"})
    stream = ShardStream(m.shard_urls(), mode="epoch", batch=8, channels=3)
    with pytest.warns(UserWarning, match="undecodable"):
        batches = list(stream)
    assert sum(b[0].shape[0] for b in batches) == 1


def _png():
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_too_few_shards_warning(tmp_path):
    m = _write_shards(tmp_path, num_shards=3)
    assert "shards" in shard_warning(m, world_size=2, num_workers=2)
    assert shard_warning(m, world_size=1, num_workers=1) is None
