"""Evaluation of generators: FID/KID/IS/precision-recall and class coverage.

Entry points: ``evaluate(sample_fn, manifest, EvalConfig(...), z_dim=..., c_dim=..., device=...)``
(the trainer, ``ganforge eval``), ``precompute_reference`` (``ganforge prep``), and
``higher_is_better`` / ``is_better`` (keeping the best checkpoint, promoting a model).
Free of Accelerate: distributed callers pass ``rank``, ``world_size`` and a ``gather`` collective.
See docs/evaluation.md.
"""

from .coverage import ClassifierConfig, coverage_stats, load_or_train_classifier
from .evaluation import (
    FEATURE_EXTRACTORS,
    METRICS,
    EvalConfig,
    compute_metrics,
    evaluate,
    higher_is_better,
    is_better,
    precompute_reference,
    preflight,
    result_names,
)
from .features import (
    INCEPTION_WEIGHTS_FILE,
    INCEPTION_WEIGHTS_URL,
    InceptionWeightsError,
    check_inception,
    resolve_inception_weights,
)
from .fid import frechet_distance, inception_score, kernel_distance, precision_recall

__all__ = [
    "FEATURE_EXTRACTORS",
    "INCEPTION_WEIGHTS_FILE",
    "INCEPTION_WEIGHTS_URL",
    "METRICS",
    "ClassifierConfig",
    "EvalConfig",
    "InceptionWeightsError",
    "check_inception",
    "compute_metrics",
    "coverage_stats",
    "evaluate",
    "frechet_distance",
    "higher_is_better",
    "inception_score",
    "is_better",
    "kernel_distance",
    "load_or_train_classifier",
    "precision_recall",
    "precompute_reference",
    "preflight",
    "resolve_inception_weights",
    "result_names",
]
