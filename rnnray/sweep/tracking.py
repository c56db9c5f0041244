"""Experiment trackers: the sweep file's ``tracking:`` section as Ray Tune's own logger callbacks.

Tune's MLflow and W&B callbacks log each trial as one run: its configuration (the encoder's
hyperparameters and learning rate) as parameters, and every report (each evaluation: step,
train / validation / OOD loss, best so far, parameter count) as metrics; rnnray adds the encoder
and the sweep as tags (MLflow) or group and tags (W&B). Their packages are optional extras
(``rnnray[mlflow]``, ``rnnray[wandb]``), checked before Ray starts.
"""

from __future__ import annotations

import importlib.util
import os

from ..config import ConfigError, SweepConfig
from ..results.folder import SweepFolder

EXTRAS = {"mlflow": "mlflow", "wandb": "wandb"}  # section -> module it needs (and the extra that installs it)


def check_trackers(cfg: SweepConfig) -> None:
    """Every tracker the sweep asks for is installed: one line naming the section otherwise."""
    for section, module in EXTRAS.items():
        if getattr(cfg.tracking, section) is not None and importlib.util.find_spec(module) is None:
            raise ConfigError(f"tracking.{section}: needs the {module} package (pip install \"rnnray[{section}]\")")


def tracker_folders(cfg: SweepConfig) -> list[tuple[str, str]]:
    """The local folders the trackers will write, with the field that names each: MLflow's file store
    (``tracking.mlflow.tracking_uri`` as a folder or a ``file:`` URI, else ``MLFLOW_TRACKING_URI``).
    A server's URI is MLflow's to check; TensorBoard and W&B write inside the sweep folder."""
    from urllib.parse import unquote, urlparse

    out = []
    if cfg.tracking.mlflow is not None:
        field = "tracking.mlflow.tracking_uri:"
        uri = cfg.tracking.mlflow.tracking_uri
        if not uri and os.environ.get("MLFLOW_TRACKING_URI"):
            field, uri = "MLFLOW_TRACKING_URI", os.environ["MLFLOW_TRACKING_URI"]
        if uri:
            parsed = urlparse(uri)
            if parsed.scheme == "file":
                out.append((unquote(parsed.path), field))
            elif "://" not in uri and ":" not in uri.split("/")[0] and not uri.startswith("databricks"):
                out.append((uri, field))
    return out


def tracker_callbacks(cfg: SweepConfig, encoder: str | None, folder: SweepFolder) -> list:
    """The Tune logger callbacks of one encoder's experiment, or (``encoder`` None) of the one
    queue, where each trial's config names its encoder (a side run's: its role). W&B writes into
    the sweep folder (``wandb/``): its default, the trial's staging folder, is copied to the sweep
    folder before W&B has finished writing."""
    out = []
    t = cfg.tracking
    if t.mlflow is not None:
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        uri = t.mlflow.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or ""
        if "://" not in uri or uri.startswith("file:"):  # MLflow 3 refuses its file store unless asked for it
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")

        class MLflow(MLflowLoggerCallback):
            def log_trial_start(self, trial):
                self.tags = {**self.tags, "encoder": _encoder(trial, encoder)}
                super().log_trial_start(trial)

        out.append(MLflow(tracking_uri=t.mlflow.tracking_uri, experiment_name=t.mlflow.experiment or cfg.name,
                          tags={"sweep": cfg.name, "budget": str(cfg.budget)}))
    if t.wandb is not None:
        from ray.air.integrations.wandb import WandbLoggerCallback

        if t.wandb.mode == "offline":
            os.environ["WANDB_MODE"] = "offline"  # Tune's callback asks for an API key unless this is set
        folder.path.mkdir(parents=True, exist_ok=True)

        class Wandb(WandbLoggerCallback):
            def log_trial_start(self, trial):
                self.kwargs["tags"] = [_encoder(trial, encoder), f"budget-{cfg.budget}"]
                super().log_trial_start(trial)

        out.append(Wandb(project=t.wandb.project, group=cfg.name, mode=t.wandb.mode, dir=str(folder.path.resolve()),
                         **({"entity": t.wandb.entity} if t.wandb.entity else {})))
    return out


def _encoder(trial, encoder: str | None) -> str:
    c = trial.config or {}
    return encoder or c.get("encoder") or c.get("role") or "?"
