"""MLflow tracking (implementation follows)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(kw_only=True)
class TrackingConfig:
    enabled: bool = True
    """Log to MLflow (only the main process talks to it)."""
    uri: str | None = None
    """Tracking URI (None: $MLFLOW_TRACKING_URI, else a sqlite store in the work dir)."""
    experiment: str = "ganforge"
    """MLflow experiment name."""
    run_name: str | None = None
    """MLflow run name (None: the config name)."""
    system_metrics: bool = False
    """Log CPU/GPU utilisation through MLflow's system-metrics monitor (needs psutil/pynvml)."""
    register: bool = False
    """Register the exported generator in the Model Registry at the end of training."""
    model_name: str = "ganforge-generator"
    """Registered model name."""
    alias: str | None = "champion"
    """Alias set on the new version when registering (None: no alias)."""

    def __post_init__(self) -> None:
        if not self.experiment:
            raise ValueError("experiment: must not be empty")
        if not self.model_name:
            raise ValueError("model_name: must not be empty")
