"""The shard reader: decode, exactly-once epochs across ranks/workers, deterministic streams."""

from __future__ import annotations

import gc
import io
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import tarfile
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from data_prep.manifest import Manifest, ShardInfo, load_manifest, save_manifest
from training.data import (
    DataConfig,
    DataReadError,
    ShardLoader,
    ShardStream,
    build_loader,
    check_shards,
    decode_sample,
    pop_random,
    shard_warning,
)

ROOT = Path(__file__).resolve().parents[3]


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


# -- faults (issues #15, #16): reproduced by deleting, truncating and corrupting real shards ------
def _take(loader, batches):
    it = iter(loader)
    return [next(it) for _ in range(batches)]


def test_check_shards_names_the_first_missing_and_short_ones(tmp_path):
    m = _write_shards(tmp_path)
    check_shards(m)  # intact: no error
    for s in (1, 2, 4, 5):
        (tmp_path / f"train-{s:06d}.tar").unlink()
    with open(tmp_path / "train-000003.tar", "r+b") as f:
        f.truncate(1024)
    with pytest.raises(DataReadError) as err:
        check_shards(m)
    msg = str(err.value)
    assert "\n" not in msg and "5 of 6 shards" in msg and "and 2 more" in msg
    assert "train-000001.tar (missing)" in msg and "train-000002.tar (missing)" in msg
    assert "train-000003.tar (1024 bytes" in msg and "manifest.json" in msg


def test_check_shards_on_an_fsspec_url(tmp_path):
    import fsspec

    local = _write_shards(tmp_path, num_shards=3)
    fs = fsspec.filesystem("memory")
    for s in local.shards:
        fs.pipe(f"/ds/{s.name}", (tmp_path / s.name).read_bytes())
    save_manifest(local, "memory://ds")
    m = load_manifest("memory://ds")
    check_shards(m)
    fs.rm("/ds/train-000002.tar")
    with pytest.raises(DataReadError, match=r"1 of 3 shards .*train-000002.tar \(missing\)"):
        check_shards(m)
    # the reader opens fsspec URLs too
    fs.pipe("/ds/train-000002.tar", (tmp_path / "train-000002.tar").read_bytes())
    loader = build_loader(m, DataConfig(num_workers=0, shuffle_buffer=0), batch=5, mode="epoch")
    assert sorted(v for b in loader for v in _ids(b[0])) == list(range(15))


def _assert_workers_ended(children_before: set) -> None:
    """The loader's workers ended with its error, not whenever the GC breaks the traceback's
    reference cycle (a shutdown run from the GC waited ~20 s for them)."""
    assert set(multiprocessing.active_children()) <= children_before
    start = time.monotonic()
    gc.collect()
    assert time.monotonic() - start < 3


@pytest.mark.parametrize("workers", [0, 2])
def test_all_shards_missing_stops_with_a_one_line_error(tmp_path, workers):
    m = _write_shards(tmp_path)
    for s in m.shards:
        (tmp_path / s.name).unlink()
    cfg = DataConfig(num_workers=workers, shuffle_buffer=8, max_read_errors=20)
    children_before = set(multiprocessing.active_children())
    start = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataReadError) as err:
            _take(build_loader(m, cfg, batch=4), 1)
    assert time.monotonic() - start < 60  # no sleeping redraw loop
    _assert_workers_ended(children_before)
    msg = str(err.value)
    assert "\n" not in msg and "20 consecutive" in msg and "missing" in msg and ".tar" in msg


class _FailingReader(torch.utils.data.IterableDataset):
    """A reader that breaks with an error of its own (not a DataReadError) after one batch."""

    def __iter__(self):
        yield torch.zeros(2)
        raise RuntimeError("the reader broke")


@pytest.mark.parametrize("persistent", [False, True])
def test_any_reader_error_ends_the_workers_with_it(persistent):
    loader = ShardLoader(
        _FailingReader(), batch_size=None, num_workers=1, persistent_workers=persistent
    )
    children_before = set(multiprocessing.active_children())
    with pytest.raises(RuntimeError, match="the reader broke"):
        list(loader)
    _assert_workers_ended(children_before)  # as for a DataReadError
    # a persistent loader starts afresh when iterated again (its old iterator is shut down)
    again = iter(loader)
    assert next(again).tolist() == [0.0, 0.0]
    with pytest.raises(RuntimeError, match="the reader broke"):
        next(again)
    assert set(multiprocessing.active_children()) <= children_before


def test_some_shards_missing_reads_the_rest_warning_once_per_shard(tmp_path):
    m = _write_shards(tmp_path, num_shards=4)
    (tmp_path / "train-000001.tar").unlink()
    cfg = DataConfig(num_workers=0, shuffle_buffer=0)
    with pytest.warns(UserWarning) as record:
        batches = _take(build_loader(m, cfg, batch=5), 30)
    ids = {v for b in batches for v in _ids(b[0])}
    assert ids == set(range(20)) - set(range(5, 10))
    missing = [w for w in record if "train-000001.tar" in str(w.message)]
    assert len(missing) == 1 and "read 0 of 5" in str(missing[0].message)


@pytest.mark.parametrize("workers", [0, 2])
def test_undecodable_shards_stop_the_resampled_reader(tmp_path, workers):
    m = _write_shards(tmp_path, num_shards=2)
    for s in m.shards:  # valid tars whose images are all garbage
        with wds.TarWriter(str(tmp_path / s.name)) as sink:
            for i in range(5):
                sink.write({"__key__": f"{s.name}-{i}", "png": b"not a png", "cls": b"0"})
    cfg = DataConfig(num_workers=workers, shuffle_buffer=4, max_read_errors=12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataReadError, match="12 consecutive .*undecodable"):
            _take(build_loader(m, cfg, batch=4), 1)


def test_read_errors_are_counted_consecutively_not_in_total(tmp_path):
    """More bad samples in total than ``max_read_errors``, never that many in a row: the reader
    skips them and reads every good one (a total count would stop it)."""
    m = _write_shards(tmp_path, num_shards=1, per_shard=3)
    with wds.TarWriter(str(tmp_path / "train-000000.tar")) as sink:
        for i in range(8):
            sink.write({"__key__": f"bad{i}", "png": b"not a png", "cls": b"0"})
            sink.write({"__key__": f"good{i}", "png": _png(), "cls": str(i % 3).encode()})
    cfg = DataConfig(num_workers=0, shuffle_buffer=0, max_read_errors=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batches = list(build_loader(m, cfg, batch=4, mode="epoch"))
    assert [v for b in batches for v in b[1].tolist()] == [i % 3 for i in range(8)]


def _truncate_after_member(path, member_name):
    """Cut a tar right after one member's data block, as a crash or a short copy would."""
    with tarfile.open(path) as tar:
        info = tar.getmember(member_name)
    end = info.offset_data + (info.size + 511) // 512 * 512
    with open(path, "r+b") as f:
        f.truncate(end)


def test_truncated_tar_warns_once_and_never_yields_a_sample_without_its_label(
    tmp_path, digits_shards
):
    """A prep output (png, then cls, then json per sample) cut after a png: the probe's case."""
    import shutil

    root = tmp_path / "ds"
    shutil.copytree(digits_shards, root)
    m = load_manifest(str(root))
    first = m.split_shards("train")[0]
    with tarfile.open(root / first.name) as tar:
        names = tar.getnames()
        labels_in_order = [int(tar.extractfile(n).read()) for n in names if n.endswith(".cls")]
    cut = names[3 * 10]  # the png of the 11th sample
    assert cut.endswith(".png")
    _truncate_after_member(root / first.name, cut)
    one = Manifest(**{**m.__dict__, "shards": [first]})
    cfg = DataConfig(num_workers=0, shuffle_buffer=0)
    with pytest.warns(UserWarning) as record:
        labels = [v for b in build_loader(one, cfg, batch=4, mode="epoch") for v in b[1].tolist()]
    assert labels == labels_in_order[:10]  # the partial 11th sample is skipped, never class 0
    bad = [str(w.message) for w in record if first.name in str(w.message)]
    assert len(bad) == 1 and f"read 10 of {first.num_samples}" in bad[0]
    assert "1 incomplete" in bad[0]
    # resampled: the shard is read again and again, warned about once, no label is -1
    with pytest.warns(UserWarning) as record:
        batches = _take(build_loader(one, cfg, batch=8), 10)
    assert all(lb >= 0 for _, b in batches for lb in b.tolist())
    assert len([w for w in record if first.name in str(w.message)]) == 1


def test_label_outside_the_manifest_classes_is_skipped(tmp_path):
    m = _write_shards(tmp_path, num_shards=1, per_shard=3)
    with wds.TarWriter(str(tmp_path / "train-000000.tar")) as sink:
        sink.write({"__key__": "a", "png": _png(), "cls": b"7"})
        sink.write({"__key__": "b", "png": _png(), "cls": b"2"})
    with pytest.warns(UserWarning, match="read 1 of 3 .*1 incomplete"):
        batches = list(build_loader(m, DataConfig(num_workers=0), batch=4, mode="epoch"))
    assert [b[1].tolist() for b in batches] == [[2]]


_READ_UNTIL_SIGTERM = """
import signal, sys, warnings
warnings.simplefilter("ignore")
from data_prep.manifest import load_manifest
from training.data import DataConfig, DataReadError, build_loader
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))  # like the trainer: a flag
m = load_manifest(sys.argv[1])
for s in m.shards:
    __import__("os").unlink(f"{m.location}/{s.name}")  # shards vanish after the start check
print("reading", flush=True)
try:
    for images, labels in build_loader(m, DataConfig(num_workers=2, shuffle_buffer=8), batch=4):
        if stop:
            sys.exit(3)
except DataReadError as exc:
    print("error:", exc, flush=True)
    sys.exit(2)
"""


def test_sigterm_while_shards_fail_to_read_ends_the_process(tmp_path):
    """The probe's hang: all shards gone, the reader redrew forever and the flag set by SIGTERM
    was never looked at. Now the reader fails fast, so the process ends."""
    _write_shards(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-c", _READ_UNTIL_SIGTERM, str(tmp_path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "reading"
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    # 3: the flag was seen; otherwise the reader's one-line error ended it (the exit status
    # is then 2, or -15 when SIGTERM lands while the interpreter is already shutting down)
    assert proc.returncode == 3 or "error:" in out, (proc.returncode, err[-2000:])
    if proc.returncode != 3:
        assert "consecutive" in out and "missing" in out and "Traceback" not in out


def test_labelled_stream_with_workers_keeps_labels(tmp_path):
    m = _write_shards(tmp_path)
    cfg = DataConfig(num_workers=2, shuffle_buffer=8)
    for images, labels in _take(build_loader(m, cfg, batch=4, seed=2), 10):
        assert labels.tolist() == [i % 3 for i in _ids(images)]


@pytest.mark.parametrize("workers", [2, 3])
def test_deterministic_stream_is_the_same_with_workers(tmp_path, workers):
    """Workers take turns micro-batch by micro-batch: the stream does not depend on how many
    there are, nor on the world size (the distributed equality tests rely on this)."""
    m = _write_shards(tmp_path)
    base = dict(shuffle_buffer=8, loader="deterministic", xflip=True)
    single = _take(
        build_loader(
            m, DataConfig(num_workers=0, **base), batch=3, micro_per_rank=2, seed=5, start_index=6
        ),
        14,
    )
    cfg = DataConfig(num_workers=workers, **base)
    ranks = [
        _take(build_loader(m, cfg, batch=3, rank=r, world_size=2, seed=5, start_index=6), 7)
        for r in range(2)
    ]
    for step in range(7):
        for r in range(2):
            images, labels = ranks[r][step]
            assert torch.equal(images, single[2 * step + r][0])
            assert torch.equal(labels, single[2 * step + r][1])


def test_shuffle_buffer_pop_is_uniform_and_constant_time():
    import random

    rng = random.Random(0)
    buffer = list(range(10))
    drawn = pop_random(buffer, rng)
    # the last element fills the hole: nothing after it moved (list.pop(i) would shift them)
    expected = list(range(10))
    expected[drawn] = 9
    assert buffer == expected[:9] or (drawn == 9 and buffer == list(range(9)))
    counts = [0] * 4
    for _ in range(4000):
        counts[pop_random([0, 1, 2, 3], rng)] += 1
    assert all(900 < c < 1100 for c in counts)  # uniform over the buffer


def test_xflip_mirrors_about_half_the_images(tmp_path):
    arr = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)  # every column differs
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    image, label = decode_sample({"png": buf.getvalue(), "cls": b"2"}, 3, flip=True)
    assert label == 2 and torch.equal(image, torch.from_numpy(arr[:, ::-1].copy()).permute(2, 0, 1))
    with wds.TarWriter(str(tmp_path / "train-000000.tar")) as sink:
        for i in range(20):
            sink.write({"__key__": f"{i:03d}", "png": buf.getvalue()})
    stream = ShardStream(
        [str(tmp_path / "train-000000.tar")],
        mode="resampled",
        batch=10,
        channels=3,
        xflip=True,
        seed=3,
    )
    images = torch.cat([b[0] for b, _ in zip(stream, range(10))])
    original = torch.from_numpy(arr.copy()).permute(2, 0, 1)
    flipped = [bool(torch.equal(im, original.flip(-1))) for im in images]
    assert all(f or torch.equal(im, original) for f, im in zip(flipped, images))
    assert 20 < sum(flipped) < 80


def test_ganforge_train_with_all_shards_deleted_stops_with_one_line(tmp_path, digits_shards):
    """The probe's command: all shards deleted -> training hung forever. Now a one-line error
    naming a shard (from check_shards at start, or from the reader), within seconds."""
    import shutil

    data = tmp_path / "ds"
    shutil.copytree(digits_shards, data)
    for tar in data.glob("*.tar"):
        tar.unlink()
    overrides = {
        "work_dir": tmp_path / "w",
        "data.manifest": data,
        "data.num_workers": 2,
        "tracking.enabled": False,
        "train.total_kimg": 0.032,
        "eval.at_end": False,
    }
    cmd = [sys.executable, "-m", "pipeline.cli", "train", "--preset", "digits"]
    for key, value in overrides.items():
        cmd += ["--set", f"{key}={value}"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ganforge train: error:") and ".tar" in last and "missing" in last


def test_a_stop_signal_sent_to_a_loader_worker_does_not_kill_it(tmp_path):
    """SLURM signals every process of the job: the workers must leave SIGTERM/SIGINT to the main
    process (which checkpoints), not die and make it raise "DataLoader worker killed". Also in
    the instant after a worker is forked, before its init has run (a CI run lost a worker so)."""
    import psutil

    m = _write_shards(tmp_path)
    before = {p.pid for p in psutil.Process().children()}  # other tests' persistent workers
    loader = build_loader(m, DataConfig(num_workers=2, shuffle_buffer=8), batch=5, seed=1)
    iterator = loader._get_iterator()  # what iter() does first: fork the workers
    workers = [p for p in psutil.Process().children() if p.pid not in before]
    assert len(workers) == 2

    def signal_all():
        for worker in workers:
            os.kill(worker.pid, signal.SIGTERM)
            os.kill(worker.pid, signal.SIGINT)

    signal_all()  # at once, before the workers can have run their init
    images, _labels = next(iterator)
    signal_all()  # and while they stream
    time.sleep(0.5)
    for _ in range(10):  # the stream goes on, from the same worker processes
        images, _labels = next(iterator)
        assert images.shape == (5, 3, 8, 8)
    assert all(worker.is_running() for worker in workers)
    iterator._shutdown_workers()
    assert not any(worker.is_running() for worker in workers)


def _assert_exits_promptly(script: str) -> None:
    """``script`` (which prints 'read' once it has a batch, then exits 3) ends within a minute."""
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.stdout.strip() == "read", proc.stderr[-2000:]
    assert proc.returncode == 3
    assert time.monotonic() - start < 60


def test_a_process_with_an_open_loader_exits_promptly(tmp_path):
    """The workers ignore SIGTERM, and multiprocessing's exit handler SIGTERMs then joins live
    children: without shutting the workers down first, an interrupted run (loader still open)
    never exited."""
    _write_shards(tmp_path)
    script = (
        "import sys\n"
        "from data_prep.manifest import load_manifest\n"
        "from training.data import DataConfig, build_loader\n"
        f"m = load_manifest({str(tmp_path)!r})\n"
        "it = iter(build_loader(m, DataConfig(num_workers=2, shuffle_buffer=8), batch=5))\n"
        "next(it)\n"
        "print('read', flush=True)\n"
        "sys.exit(3)\n"
    )
    _assert_exits_promptly(script)


def test_a_worker_busy_past_the_shutdown_wait_does_not_block_exit():
    """torch stops workers by asking, waiting ~5 s, then SIGTERM, which ours ignore: a worker
    still inside a slow read then was never ended, and the interpreter's exit (which joins every
    child) waited forever: the CI run that hung after the suite's last test."""
    script = (
        "import sys, time, torch\n"
        "from torch.utils.data import IterableDataset\n"
        "from training.data import ShardLoader, _ignore_stop_signals\n"
        "class Slow(IterableDataset):\n"
        "    def __iter__(self):\n"
        "        yield torch.zeros(1)\n"
        "        time.sleep(600)\n"
        "        yield torch.zeros(1)\n"
        "it = iter(ShardLoader(Slow(), batch_size=None, num_workers=1, prefetch_factor=1,\n"
        "                      worker_init_fn=_ignore_stop_signals))\n"
        "next(it)\n"
        "print('read', flush=True)\n"
        "sys.exit(3)\n"
    )
    _assert_exits_promptly(script)


def test_grayscale_samples_decode_to_their_own_writable_memory():
    """[H, W, 1] -> [1, H, W] is contiguous already: without a copy torch would get PIL's
    read-only buffer (a UserWarning per run, and undefined behaviour on any in-place write)."""
    arr = np.arange(8 * 8, dtype=np.uint8).reshape(8, 8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the non-writable-array warning fails the test
        image, label = decode_sample({"png": buf.getvalue()}, 1)
        image.add_(1)  # in place, as the augment/normalise steps may
    assert label == -1 and image.shape == (1, 8, 8)
    assert torch.equal(image[0], torch.from_numpy(arr + 1))
