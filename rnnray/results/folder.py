"""The results store's layout: the one place that knows where a sweep's files lie.

A results directory holds one folder per sweep (``NAME-YYYYmmdd-HHMMSS``) and a ``LATEST`` file
naming the most recent one. A sweep folder::

    sweep.json                      the sweep's validated config, zoo kind, default parameter counts, and each
                                    encoder's import path, kind and invariance as resolved
    summary.md, summary.csv         one row per encoder (written by rnnray.sweep.summary)
    best.json                       each encoder's best trial: config, metrics, checkpoint
    downstream.json                 the downstream evaluation (rnnray.analysis.evaluate)
    oracles.json                    the label oracles after the final runs (rnnray.analysis.oracles)
    analysis.json                   every number the report prints (rnnray.analysis.findings)
    report.md, figures/             the report (rnnray.report)
    tune/ENCODER/                   Ray Tune's experiment state (what --resume restores)
    optuna.journal                  every encoder's Optuna study (optuna-dashboard reads it)
    wandb/offline-run-*/            W&B offline runs, one per trial (when tracking.wandb is on)
    trials/ENCODER/TRIAL_ID/        each trial's Ray Train run, trial.json and train_result.json
    trials/ENCODER/DONE             the encoder's experiment finished

Every file is written under a temporary name and renamed (:mod:`rnnray.results.atomic`), so two sweeps
sharing a results directory, or a sweep killed mid-write, never leave a torn file.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from .atomic import atomic_write_text
from ..errors import UsageError, UserError

DEFAULT_RESULTS = "results"
LATEST = "LATEST"
SWEEP_FILE = "sweep.json"


class ResultsError(UserError, LookupError):
    """Nothing to load: the message names what was looked for and what is available."""


@dataclass(frozen=True)
class SweepFolder:
    """One sweep's folder and the name of everything in it."""

    path: Path

    @staticmethod
    def holds_sweep(path: str | Path) -> bool:
        return (Path(path) / SWEEP_FILE).is_file()

    @property
    def sweep_json(self) -> Path:
        return self.path / SWEEP_FILE

    @property
    def analysis_json(self) -> Path:
        """What the report prints, as data (rnnray.analysis.findings)."""
        return self.path / "analysis.json"

    @property
    def summary_md(self) -> Path:
        return self.path / "summary.md"

    @property
    def summary_csv(self) -> Path:
        return self.path / "summary.csv"

    @property
    def best_json(self) -> Path:
        return self.path / "best.json"

    @property
    def downstream_json(self) -> Path:
        return self.path / "downstream.json"

    @property
    def report_md(self) -> Path:
        return self.path / "report.md"

    @property
    def figures(self) -> Path:
        return self.path / "figures"

    @property
    def hidden_console(self) -> Path:
        """Ray's routine console lines that the quiet console kept off the screen (:mod:`rnnray.runtime.console`)."""
        from ..runtime.console import HIDDEN_LOG

        return self.path / HIDDEN_LOG

    @property
    def tune(self) -> Path:
        return self.path / "tune"

    @property
    def optuna_journal(self) -> Path:
        return self.path / "optuna.journal"

    @property
    def rungs_json(self) -> Path:
        """Every result the one-queue scheduler's per-encoder ASHA saw, and its decision: replayed
        on ``--resume``, since Tune does not restore schedulers (rnnray.sweep.rungs)."""
        return self.path / "rungs.json"

    @property
    def timeline_json(self) -> Path:
        """When each Tune trial held a slot and when each phase ran (rnnray.sweep.timeline)."""
        return self.path / "timeline.json"

    def trials(self, encoder: str) -> Path:
        return self.path / "trials" / encoder

    def done_marker(self, encoder: str) -> Path:
        return self.trials(encoder) / "DONE"

    def trial_dir(self, encoder: str, trial_id: str) -> Path:
        return self.trials(encoder) / trial_id

    def trial_record(self, encoder: str, trial_id: str) -> Path:
        return self.trial_dir(encoder, trial_id) / TRIAL_RECORD

    def train_result(self, encoder: str, trial_id: str) -> Path:
        return self.trial_dir(encoder, trial_id) / TRAIN_RESULT

    @property
    def oracles_json(self) -> Path:
        """The label oracles' runs and intervals (rnnray.analysis.oracles)."""
        return self.path / "oracles.json"

    @property
    def final_json(self) -> Path:
        """The final seeds' results: per encoder and configuration, the seeds' losses and their interval."""
        return self.path / "final.json"

    def final(self, encoder: str) -> Path:
        """The final runs of one encoder (its best configuration and paper preset, new seeds)."""
        return self.path / "final" / encoder

    def final_done_marker(self, encoder: str) -> Path:
        return self.final(encoder) / "DONE"

    def final_record(self, encoder: str, trial_id: str) -> Path:
        return self.final(encoder) / trial_id / TRIAL_RECORD

    def final_records(self, encoder: str) -> list[Path]:
        return sorted(self.final(encoder).glob(f"*/{TRIAL_RECORD}"))

    def trial_records(self, encoder: str | None = None) -> list[Path]:
        """Every ``trial.json`` of one encoder (or of all), in name order."""
        pattern = f"{encoder}/*/{TRIAL_RECORD}" if encoder else f"*/*/{TRIAL_RECORD}"
        return sorted((self.path / "trials").glob(pattern))


TRIAL_RECORD = "trial.json"
TRAIN_RESULT = "train_result.json"  # written by a trial that returns: where its workers ran


def write_latest(results: Path, sweep_dir: Path) -> None:
    atomic_write_text(Path(results) / LATEST, sweep_dir.name + "\n")


def latest_pointer(results: Path) -> Path | None:
    f = results / LATEST
    if f.is_file():
        d = results / f.read_text().strip()
        if d.is_dir():
            return d
    sweeps = sorted((p for p in results.glob("*") if SweepFolder.holds_sweep(p)), key=lambda p: p.stat().st_mtime)
    return sweeps[-1] if sweeps else None


def is_results_dir(path: Path) -> bool:
    """A ``LATEST`` pointer or a sweep folder inside."""
    return (path / LATEST).is_file() or any(SweepFolder.holds_sweep(c) for c in path.iterdir() if c.is_dir())


def named_sweeps(root: Path, name: str) -> list[Path]:
    """The sweep folders of that sweep name under ``root``, oldest first."""
    return sorted(p for p in root.glob(f"{name}-*") if SweepFolder.holds_sweep(p))


def resolve_sweep(results: str | Path | None = None) -> Path:
    """A sweep folder from: None (the latest sweep under $RNNRAY_RESULTS or ./results), a results
    directory (its latest sweep), a sweep folder, or a sweep name (its latest run under the default)."""
    default_root = Path(os.environ.get("RNNRAY_RESULTS", DEFAULT_RESULTS)).expanduser()
    if results is None:
        root = default_root
    else:
        p = Path(results).expanduser()
        if SweepFolder.holds_sweep(p):
            return p
        if p.is_dir():
            root = p
        elif os.sep in str(results) or not default_root.is_dir():
            raise ResultsError(f"{results}: no such results directory or sweep folder")
        else:
            named = named_sweeps(default_root, str(results))
            if named:
                return named[-1]
            raise ResultsError(f"{results}: neither a results directory, a sweep folder nor a sweep name under {default_root}")
    latest = latest_pointer(root)
    if latest is None:
        raise ResultsError(f"{root}: no sweeps here yet (run `python -m rnnray.sweep SWEEP.yaml`)")
    return latest


def sweep_folder_for(results: str, name: str, resume: str | bool) -> tuple[Path, bool]:
    """The folder a sweep writes: a new ``NAME-stamp`` folder, or (``resume``) the latest of that
    name, or the folder given. Returns (folder, resumed)."""
    root = Path(results).expanduser()
    if resume:
        if isinstance(resume, str) and resume not in ("latest", "last"):
            d = Path(resume)
            d = d if d.is_dir() else root / resume
        else:
            candidates = named_sweeps(root, name)
            if not candidates:
                raise UsageError(f"{root}: no earlier sweep named {name!r} to resume")
            d = candidates[-1]
        if not SweepFolder.holds_sweep(d):
            raise UsageError(f"{d}: not a sweep folder (no {SWEEP_FILE})")
        return d, True
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    root.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:  # mkdir is atomic: two sweeps started in the same second get different folders
        d = root / (f"{name}-{stamp}" if n == 1 else f"{name}-{stamp}-{n}")
        try:
            d.mkdir()
            return d, False
        except FileExistsError:
            n += 1
