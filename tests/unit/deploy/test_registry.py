"""deploy.registry: register + tags + alias + promote against a real (sqlite) MLflow store."""

from __future__ import annotations

import json

import numpy as np
import pytest

from deploy import registry
from deploy.generator import load_generator
from tests.unit.deploy.conftest import make_export


def _client(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_register_tags_alias_and_load_everywhere(export_uncond, loaded_uncond, tracking_uri):
    import mlflow

    info = registry.register_export(
        export_uncond,
        model_name="tiny",
        alias="champion",
        tracking_uri=tracking_uri,
        tags={"owner": "deploy-tests"},
    )
    assert (info.name, info.version, info.uri, info.promoted) == (
        "tiny",
        "1",
        "models:/tiny/1",
        True,
    )
    client = _client(tracking_uri)
    version = client.get_model_version_by_alias("tiny", "champion")
    assert str(version.version) == "1"
    assert {
        "family": "stylegan2",
        "resolution": "16",
        "kimg": "12.5",
        "dataset": "digits",
        "metric.fid50k": "40.0",
        "owner": "deploy-tests",
    }.items() <= version.tags.items()
    assert client.get_run(info.run_id).info.status == "FINISHED"
    # The MLflow global state is restored: nothing leaks into the caller's tracking URI.
    assert mlflow.get_tracking_uri() != tracking_uri

    expected = loaded_uncond.generate("0-3", psi=0.7)
    for ref in (
        "models:/tiny@champion",
        "models:/tiny/1",
        info.run_id,
        f"runs:/{info.run_id}/generator",
    ):
        np.testing.assert_array_equal(
            load_generator(ref, tracking_uri=tracking_uri).generate("0-3", psi=0.7), expected
        )

    # The pyfunc (models-from-code, vendored networks) gives the same images in-process.
    import pandas as pd

    mlflow.set_tracking_uri(tracking_uri)
    try:
        model = mlflow.pyfunc.load_model("models:/tiny@champion")
    finally:
        mlflow.set_tracking_uri(None)
    out = model.predict(pd.DataFrame({"seed": [0, 1, 2, 3]}), params={"psi": 0.7})
    np.testing.assert_array_equal(out, expected)
    z = np.stack([np.random.RandomState(s).randn(16) for s in (0, 1)])
    np.testing.assert_array_equal(
        model.predict(pd.DataFrame({"latent": list(z)}), params={"psi": 0.7}), expected[:2]
    )
    sig = model.metadata.signature
    assert [c.name for c in sig.inputs.inputs] == ["seed", "latent", "label"]
    assert [p.name for p in sig.params.params] == ["psi", "noise_mode"]


def test_pyfunc_conditional_labels(export_cond, loaded_cond, tracking_uri):
    import mlflow
    import pandas as pd

    info = registry.register_export(export_cond, model_name="tiny-cond", tracking_uri=tracking_uri)
    assert info.alias is None
    mlflow.set_tracking_uri(tracking_uri)
    try:
        model = mlflow.pyfunc.load_model(info.uri)
    finally:
        mlflow.set_tracking_uri(None)
    out = model.predict(pd.DataFrame({"seed": [3, 4], "label": [2, 0]}))
    np.testing.assert_array_equal(out, loaded_cond.generate([3, 4], labels=[2, 0]))
    with pytest.raises(Exception, match="conditional"):
        model.predict(pd.DataFrame({"seed": [3]}))


def test_promote_if_better_moves_alias_only_on_improvement(tmp_path, tracking_uri):
    def register(fid, **kw):
        export = make_export(tmp_path / f"e{fid}", metrics={"fid50k": fid, "is": 100 - fid})
        return registry.register_export(
            export,
            model_name="race",
            alias="champion",
            tracking_uri=tracking_uri,
            promote_if_better="fid50k",
            **kw,
        )

    assert register(30.0).promoted  # nobody held the alias
    assert not register(35.0).promoted  # worse FID (lower is better)
    assert register(20.0).promoted
    assert str(_client(tracking_uri).get_model_version_by_alias("race", "champion").version) == "3"
    assert registry.lower_is_better("fid50k_full") and not registry.lower_is_better("precision")
    missing = registry.register_export(
        make_export(tmp_path / "nometric"),
        model_name="race",
        alias="champion",
        tracking_uri=tracking_uri,
        promote_if_better="fid50k",
    )
    assert not missing.promoted and missing.version == "4"


def test_register_into_running_run_keeps_it_running(export_uncond, tracking_uri):
    import mlflow

    client = _client(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    try:
        exp = mlflow.set_experiment("train")
        run = client.create_run(exp.experiment_id)
    finally:
        mlflow.set_tracking_uri(None)
    info = registry.register_export(
        export_uncond, model_name="tiny-in-run", tracking_uri=tracking_uri, run_id=run.info.run_id
    )
    assert info.run_id == run.info.run_id
    assert client.get_run(run.info.run_id).info.status == "RUNNING"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"model_name": "a/b"}, "model_name"),
        ({"model_name": "m", "alias": "latest"}, "alias"),
        ({"model_name": "m", "alias": "1bad"}, "alias"),
        ({"model_name": "m", "promote_if_better": "fid"}, "needs an alias"),
    ],
)
def test_register_rejects_bad_requests(export_uncond, tracking_uri, kwargs, match):
    with pytest.raises(registry.RegistryError, match=match):
        registry.register_export(export_uncond, tracking_uri=tracking_uri, **kwargs)


def test_vendor_code_is_self_contained(tmp_path):
    root = registry.vendor_code(tmp_path)
    assert root.name.startswith("ganforge_pyfunc_")
    sources = "\n".join(p.read_text() for p in root.rglob("*.py"))
    assert "training.networks" not in sources and "from deploy" not in sources
    assert f"{root.name}.networks.stylegan2" in (root / "networks" / "__init__.py").read_text()
    assert registry.vendor_code(tmp_path / "again").name == root.name  # named by content


def test_version_tags_from_export_config(export_cond):
    config = json.loads((export_cond / "generator.json").read_text())
    tags = registry.version_tags(config)
    assert tags["class_names"] == "class0,class1,class2" and tags["c_dim"] == "3"


def test_register_inside_the_callers_active_run(export_uncond, tracking_uri):
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    try:
        with mlflow.start_run() as run:
            info = registry.register_export(
                export_uncond, model_name="tiny-fluent", run_id=run.info.run_id
            )
            assert (
                mlflow.active_run().info.run_id == run.info.run_id
            )  # still open, still the caller's
            other = registry.register_export(
                export_uncond, model_name="tiny-fluent"
            )  # a new (nested) run
            assert mlflow.active_run().info.run_id == run.info.run_id
    finally:
        mlflow.set_tracking_uri(None)
    assert info.run_id == run.info.run_id and other.run_id != run.info.run_id


def test_progan_export_registers_and_predicts(tmp_path, tracking_uri):
    import mlflow
    import pandas as pd

    from training.networks import build_networks
    from training.networks.config import ModelConfig
    from training.networks.export import save_export

    generator, _, g_kwargs, _ = build_networks(
        ModelConfig(family="progan", z_dim=16, channel_base=256, channel_max=32), 16, 3, 0
    )
    export = save_export(tmp_path / "progan", generator, family="progan", kwargs=g_kwargs)
    info = registry.register_export(export, model_name="tiny-progan", tracking_uri=tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    try:
        model = mlflow.pyfunc.load_model(info.uri)
    finally:
        mlflow.set_tracking_uri(None)
    np.testing.assert_array_equal(
        model.predict(pd.DataFrame({"seed": [1, 2]})), load_generator(export).generate([1, 2])
    )
