"""The built-in CycleGAN demo end to end, as a user runs it: `ganforge run --preset cyclegan-demo`
(render + prep both domains, train, evaluate, register, before/after grid from the registry).
Then, from the registry: translated A -> B images are measurably closer to B than the
untranslated A images (colour statistics), and the cycle error is small."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from tests.integration.test_distributed import ROOT, _env

pytestmark = [
    pytest.mark.slow,
    # Opt-in (GANFORGE_DEMO_TESTS=1): the whole demo is ~290 s on 2 quiet cores (passed in 288 s
    # on 2026-12-02), a quarter of the suite's CI budget. An earlier clean-clone run that failed
    # after 8 kimg did so under load 15-24 (8 jobs on 2 cores) and did not reproduce on a quiet
    # machine. The cyclegan training, 2-process, resume and deploy paths run in every CI run
    # (tests/integration/test_cyclegan.py, tests/unit/deploy/test_translate.py, ...).
    pytest.mark.skipif(
        not os.environ.get("GANFORGE_DEMO_TESTS"),
        reason="the full cyclegan-demo run is opt-in (GANFORGE_DEMO_TESTS=1): see the module note",
    ),
]


def test_demo_run_learns_the_translation(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", "--preset", "cyclegan-demo",
         "--set", f"work_dir={tmp_path}", "--set", "data.num_workers=0"],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=3600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "outputs" / "cyclegan-demo-before-after.png").is_file()
    assert "style_fd_a2b" in proc.stdout

    from data_prep.manifest import load_manifest
    from data_prep.translation_demo import colour_distance
    from deploy.translate import load_translator
    from training.families.cyclegan import read_images
    from training.networks.translation import translate_batch
    from training.tracking import default_tracking_uri

    translator = load_translator(
        "models:/ganforge-cyclegan-demo@champion", tracking_uri=default_tracking_uri(tmp_path)
    )
    real_a, real_b = (
        read_images(load_manifest(str(tmp_path / "data" / f"cyclegan-demo-{d}")), 256)
        .permute(0, 2, 3, 1)
        .numpy()
        for d in "AB"
    )
    a2b = translate_batch(translator.generators["a2b"], real_a)
    cycled = translate_batch(translator.generators["b2a"], a2b)
    before, after = colour_distance(real_a, real_b), colour_distance(a2b, real_b)
    assert after < 0.6 * before, (before, after)  # measured: 0.243 -> 0.104
    cycle_error = np.abs(cycled.astype(np.float64) - real_a).mean() / 255
    assert cycle_error < CYCLE_ERROR_MAX, cycle_error


CYCLE_ERROR_MAX = 0.15
"""Mean absolute error of A -> B -> A in [0, 1] pixel units (measured after the demo: 0.103; an
untrained translator outputs flat grey, about 0.25 from these images)."""
