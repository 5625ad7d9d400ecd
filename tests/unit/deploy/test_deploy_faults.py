"""Issue #16 deploy faults, reproduced the way users hit them: temp copies left by models:/
loads, unbounded --seeds, outputs unreadable to others (0600), and pyfunc code that changed."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import numpy as np
import pytest

from deploy import registry
from deploy.generator import load_generator
from pipeline.cli import main
from tests.unit.deploy.conftest import make_export


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def generate(model, *args: str) -> int:
    return main(["generate", "--model", str(model), *args])


def test_models_uri_loads_share_one_cache_entry_per_version(
    tmp_path, tracking_uri, model_cache, monkeypatch
):
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    first = make_export(tmp_path / "a", seed=3)
    registry.register_export(
        first, model_name="cached", alias="champion", tracking_uri=tracking_uri
    )
    for ref in ("models:/cached@champion", "models:/cached/1", "models:/cached@champion"):
        load_generator(ref, tracking_uri=tracking_uri)
    for _ in range(3):
        out = ("--seeds", "0-1", "--out", str(tmp_path / "g.png"), "--tracking-uri", tracking_uri)
        assert generate("models:/cached@champion", *out) == 0
    assert list((tmp_path / "tmp").glob("ganforge-model-*")) == []
    entries = [p for p in model_cache.iterdir() if p.name.startswith("cached-")]
    assert [p.name.split("-")[1] for p in entries] == ["v1"]
    # Moving the alias to a new version loads (and caches) that version, not the stale copy.
    second = make_export(tmp_path / "b", seed=4)
    registry.register_export(
        second, model_name="cached", alias="champion", tracking_uri=tracking_uri
    )
    loaded = load_generator("models:/cached@champion", tracking_uri=tracking_uri)
    np.testing.assert_array_equal(loaded.generate([0]), load_generator(second).generate([0]))
    assert sorted(
        p.name.split("-")[1] for p in model_cache.iterdir() if p.name.startswith("cached-")
    ) == ["v1", "v2"]
    assert not list(model_cache.glob(".tmp-*"))


def test_generate_seeds_cap_is_a_clear_error(export_uncond, tmp_path, capsys):
    out = str(tmp_path / "g.png")
    code = generate(export_uncond, "--seeds", "0-100000000", "--out", out)
    err = capsys.readouterr().err.strip()
    assert code == 2 and not Path(out).exists()
    assert len(err.splitlines()) == 1 and "100000001 seeds requested; at most 10000" in err
    assert "--max-seeds" in err
    assert generate(export_uncond, "--seeds", "0-20", "--max-seeds", "8", "--out", out) == 2
    assert generate(export_uncond, "--seeds", "0-20", "--max-seeds", "21", "--out", out) == 0


def test_outputs_get_the_umask_mode_not_0600(export_uncond, tmp_path, umask_022):
    grid, folder, gif = tmp_path / "grid.png", tmp_path / "separate", tmp_path / "walk.gif"
    assert generate(export_uncond, "--seeds", "0-3", "--out", str(grid)) == 0
    assert generate(export_uncond, "--seeds", "0-1", "--separate", "--out", str(folder)) == 0
    walk = ("--seeds", "0-1", "--interpolate", "--frames", "2", "--out", str(gif))
    assert generate(export_uncond, *walk) == 0
    export = make_export(tmp_path / "export")
    torchscript = ("--format", "torchscript", "--out", str(tmp_path / "g.pt"))
    assert main(["export", "--model", str(export_uncond), *torchscript]) == 0
    files = [grid, gif, *folder.iterdir(), *export.iterdir(), tmp_path / "g.pt"]
    assert {f.name: oct(_mode(f)) for f in files} == {f.name: "0o644" for f in files}


def test_pyfunc_code_hash_is_tagged_and_a_change_is_detected(tmp_path, tracking_uri):
    from mlflow.tracking import MlflowClient

    export = make_export(tmp_path / "e", seed=7)
    info = registry.register_export(export, model_name="hashed", tracking_uri=tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    tag = client.get_model_version("hashed", info.version).tags["code_sha256"]
    assert len(tag) == 64
    assert registry.verify_model_code("models:/hashed/1", tracking_uri=tracking_uri) == tag
    # Someone with write access to the artifact store edits the stored wrapper.
    store = Path(tracking_uri[len("sqlite:///") :]).parent / "mlartifacts"
    stored = [p for p in store.rglob("pyfunc_model.py") if info.model_uri.split("/")[-1] in str(p)]
    assert len(stored) == 1
    stored[0].write_text(stored[0].read_text() + "\nimport os  # injected\n")
    with pytest.raises(registry.RegistryError, match="code changed since registration"):
        registry.verify_model_code("models:/hashed/1", tracking_uri=tracking_uri)
    # The safe path reads only JSON + safetensors: unaffected by the stored code.
    np.testing.assert_array_equal(
        load_generator("models:/hashed/1", tracking_uri=tracking_uri).generate([1]),
        load_generator(export).generate([1]),
    )
