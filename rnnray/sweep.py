"""The sweep of ``python -m rnnray.sweep SWEEP.yaml`` (the main job, :mod:`rnnray.job`): compare encoders
under equal parameter budgets with Ray Tune.

What happens:
1. the sweep file is validated (pydantic; one line and exit 2 for anything wrong);
2. the zoo is built with Ray Data if its directory holds no finished zoo;
3. every encoder's parameter budget is checked once, so an impossible budget fails before any work;
4. per encoder, one Ray Tune experiment: trial 0 is the encoder's preset (the paper's, SPEC.md 5b;
   ``paper_config: true`` in its record), then Optuna's TPE proposes the learning rate and the
   encoder's structural knobs (define-by-run), after ``startup_trials`` random ones (a quarter of
   the trials, 1 to 10: Optuna's default of 10 would make a small sweep a random search); the
   body's width is solved from the budget inside the trial, so every trial of every encoder has the
   same parameter count within the tolerance; ASHA stops weak trials; each trial launches a Ray
   Train ``TorchTrainer`` (``rnnray.train.fit``);
5. the results store is written: per trial ``trial.json`` (config, parameter count, metrics history,
   best checkpoint, ``paper_config``), and ``summary.csv``, ``summary.md`` (with trial 0's loss and
   the tuning gain), ``best.json`` for the sweep. Ctrl-C stops the sweep resumable (exit 130).

Resuming (``--resume``): encoders whose experiment finished are not run again; an unfinished
experiment is restored with ``Tuner.restore`` (finished trials are kept, unfinished and errored
ones are run again from their last checkpoint, the Optuna searcher's state comes back). ASHA's
rung statistics are *not* restored by Ray Tune, so early stopping after a resume starts afresh.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import io
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from .cli import UsageError
from .config import (
    ConfigError,
    FormalLanguagesZoo,
    MnistZoo,
    Strict,
    TrainConfig,
    apply_overrides,
    format_validation_error,
    read_yaml,
)
from .atomic import atomic_write_json, atomic_write_text
from .results import write_latest

TUNE_METRIC = "val_loss"
EXIT_INTERRUPTED = 130  # what a shell reports for a command ended by Ctrl-C
TRAIN_RESULT = "train_result.json"  # written by a trial that returns (see run_trial)

def trial_record(result, encoder: str, cfg: SweepConfig) -> dict:
    """One trial of Tune's ResultGrid as the results store keeps it."""
    m = dict(result.metrics or {})
    trial_id = m.get("trial_id") or Path(result.path).name.split("_", 1)[-1]
    config = dict(result.config or {})
    history = []
    df = result.metrics_dataframe
    if df is not None:
        keep = [c for c in ("step", "train_loss", "val_loss", "ood_loss", "best_val_loss", "best_ood_loss", "training_iteration") if c in df]
        history = json.loads(df[keep].to_json(orient="records"))
    best_val = m.get("best_val_loss")
    # Tune marks a trial's last result `done` also when ASHA stopped it: compare with the planned length
    planned = int(cfg.train.get("steps", TrainConfig.model_fields["steps"].default))
    status = "failed" if result.error is not None else ("finished" if m.get("step") == planned else "stopped early")
    if best_val is not None and not math.isfinite(best_val):
        status = "failed"
    rec = {
        "encoder": encoder,
        "trial_id": trial_id,
        "status": status,
        "config": config,
        "n_params": m.get("n_params"),
        "budget": cfg.budget,
        "tolerance": cfg.tolerance,
        "best_val_loss": best_val,
        "best_ood_loss": m.get("best_ood_loss"),
        "best_step": m.get("best_step"),
        "checkpoint": m.get("best_checkpoint_path") or m.get("checkpoint_path"),
        "iterations": m.get("training_iteration"),
        "history": history,
    }
    if result.error is not None:
        lines = str(result.error).strip().splitlines()
        rec["reason"] = lines[-1] if lines else result.error.__class__.__name__
    if m.get("diverged"):
        rec["status"], rec["reason"] = "failed", m["diverged"]
    return rec


class SweepInterrupted(Exception):
    """Tune returned from an interrupted experiment (SIGINT): the sweep stops, resumable."""

    def __init__(self, message: str, sweep_dir: Path):
        super().__init__(message)
        self.sweep_dir = sweep_dir


# ------------------------------------------------------------------------------------------------
# the sweep file


class Range(Strict):
    """A numeric search range: ``{low: 1e-4, high: 1e-2, log: true}`` (``int: true`` for integers)."""

    low: float
    high: float
    log: bool = False
    int: bool = False

    @model_validator(mode="after")
    def _ordered(self):
        if not self.low < self.high:
            raise ValueError("low must be below high")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


SearchValue = list | Range | float | int | str | bool


class TuneSettings(Strict):
    samples_per_encoder: int = Field(4, ge=1, description="trials per encoder")
    max_concurrent_trials: int = Field(2, ge=1)
    scheduler: Literal["asha", "none"] = "asha"
    grace_period: int = Field(2, ge=1, description="evaluations before ASHA may stop a trial")
    reduction_factor: float = Field(2.0, gt=1)
    seed: int = Field(0, ge=0, description="seed of Optuna's TPE sampler")
    startup_trials: int | None = Field(
        None, ge=1, description="TPE's random start-up trials (finished trials before TPE models the results); "
                                "default max(1, min(10, samples_per_encoder // 4)), the paper-preset trial counting among them"
    )
    paper_trial: bool = Field(True, description="trial 0 of every encoder is its preset (the paper's) scaled to the budget")
    max_failures: int = Field(1, ge=0, description="retries of a failed trial (from its last checkpoint)")


def startup_trials(tune: TuneSettings) -> int:
    """TPE's start-up count: Optuna's default of 10 random trials would make a sweep of a few
    trials a random search, so a quarter of the trials (1 to 10) explore before TPE proposes."""
    return tune.startup_trials or max(1, min(10, tune.samples_per_encoder // 4))


def tpe_sampler(tune: TuneSettings):
    import optuna

    return optuna.samplers.TPESampler(seed=tune.seed, n_startup_trials=startup_trials(tune))


class TrialResources(Strict):
    workers: int = Field(1, ge=1, description="Ray Train workers per trial (DDP)")
    gpus_per_worker: float = Field(0.0, ge=0, description="> 0: workers train on CUDA when Ray assigns a GPU they can see")
    cpus_per_worker: float = Field(1.0, gt=0)
    process_group_backend: Literal["auto", "gloo", "nccl"] = Field(
        "auto", description="torch.distributed backend; auto: nccl with GPUs, else gloo (gloo for logical GPUs)"
    )
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "PACK", description="placement of a trial's workers: PACK keeps them on one node, SPREAD over nodes"
    )


class DownstreamSettings(Strict):
    """Downstream evaluation of each encoder's best trial and the report, run at the end of the sweep."""

    enabled: bool = Field(True, description="run downstream evaluation and write the report at the end")
    steps: int = Field(2000, ge=1, description="optimisation steps of each downstream predictor")
    hidden: int = Field(64, ge=1, description="predictor MLP width")
    seeds: list[int] = Field([0, 1, 2], min_length=1, description="predictor seeds (the spread is over these)")
    supervised_encoder: str = Field("stats", description="encoder trained end to end on each target (the supervised baseline)")


_TRAIN_OWNED = {"zoo", "budget", "tolerance", "encoder_hparams", "preset", "workers", "gpus_per_worker", "cpus_per_worker",
                "process_group_backend", "placement_strategy", "storage_path", "name"}


class SweepConfig(Strict):
    """A sweep file. ``zoo`` is a path to a built zoo, or a zoo config (built if missing)."""

    name: str = Field("sweep", pattern=r"^[A-Za-z0-9_.-]+$")
    results: str = Field("results", description="results directory; one folder per sweep inside it")
    zoo: str | FormalLanguagesZoo | MnistZoo
    encoders: list[str] = Field(min_length=1)
    budget: int = Field(gt=0, description="trainable encoder parameters, the same for every trial")
    tolerance: float = Field(0.05, gt=0, lt=1)
    search: dict[str, dict[str, SearchValue]] = Field(
        default_factory=dict,
        description="search-space overrides: per encoder name, or 'all'; a list is a choice, a range is numeric, a scalar fixes the value",
    )
    presets: dict[str, str] = Field(
        default_factory=dict, description="preset per encoder name (default `paper` for every encoder): where its "
                                          "hyperparameters start, and its trial 0"
    )
    train: dict[str, Any] = Field(default_factory=dict, description="TrainConfig fields for every trial")
    tune: TuneSettings = TuneSettings()
    resources: TrialResources = TrialResources()
    downstream: DownstreamSettings = DownstreamSettings()

    @field_validator("encoders")
    @classmethod
    def _known(cls, v):
        from .encoders import ENCODERS

        unknown = [e for e in v if e not in ENCODERS]
        if unknown:
            raise ValueError(f"unknown encoder {unknown[0]!r}; choose from {', '.join(ENCODERS)}")
        if len(set(v)) != len(v):
            raise ValueError("an encoder is listed twice")
        return v

    @model_validator(mode="after")
    def _presets(self):
        from .encoders.registry import PRESETS

        for enc, preset in self.presets.items():
            if enc not in self.encoders:
                raise ValueError(f"presets.{enc}: not one of the sweep's encoders ({', '.join(self.encoders)})")
            if preset not in PRESETS:
                raise ValueError(f"presets.{enc}: unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
        return self

    def preset(self, encoder: str) -> str:
        from .encoders.registry import DEFAULT_PRESET

        return self.presets.get(encoder, DEFAULT_PRESET)

    @field_validator("train")
    @classmethod
    def _train_fields(cls, v):
        owned = sorted(set(v) & _TRAIN_OWNED)
        if owned:
            raise ValueError(f"{owned[0]!r} is set by the sweep itself (zoo, budget, tolerance, resources), not under train")
        try:
            TrainConfig.model_validate({**v, "zoo": "-"})
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            msg = "unknown key (typo?)" if err["type"] == "extra_forbidden" else err["msg"]
            raise ValueError(f"{loc}: {msg}") from None
        return v

    @model_validator(mode="after")
    def _search_keys(self):
        from .encoders import search_space

        for key, space in self.search.items():
            if key != "all" and key not in self.encoders:
                raise ValueError(f"search.{key}: not one of the sweep's encoders ({', '.join(self.encoders)})")
            names = {"lr"} | (set().union(*(search_space(e) for e in self.encoders)) if key == "all" else set(search_space(key)))
            for knob in space:
                if knob not in names and knob not in _extra_knobs(key, self.encoders):
                    raise ValueError(f"search.{key}.{knob}: not a searchable hyperparameter ({', '.join(sorted(names))})")
        return self

    @property
    def zoo_path(self) -> str:
        return self.zoo if isinstance(self.zoo, str) else self.zoo.path

    def train_config(self, encoder: str, encoder_hparams: dict, lr: float | None, storage_path: str, name: str) -> TrainConfig:
        data = dict(self.train)
        if lr is not None:
            data["lr"] = lr
        return TrainConfig(
            **data,
            preset=self.preset(encoder),
            zoo=self.zoo_path,
            budget=self.budget,
            tolerance=self.tolerance,
            encoder_hparams=encoder_hparams,
            workers=self.resources.workers,
            gpus_per_worker=self.resources.gpus_per_worker,
            cpus_per_worker=self.resources.cpus_per_worker,
            process_group_backend=self.resources.process_group_backend,
            placement_strategy=self.resources.placement_strategy,
            storage_path=storage_path,
            name=name,
        )


def _extra_knobs(key: str, encoders: list[str]) -> set[str]:
    """Fixed hyperparameters that may be set (as scalars) though they are not searched by default."""
    from .encoders import default_hparams

    names = encoders if key == "all" else [key]
    return set().union(*(set(default_hparams(e)) - {"width"} for e in names))


def load_sweep(path: str | Path, overrides: list[str] | None = None) -> SweepConfig:
    data = apply_overrides(read_yaml(path), overrides)
    try:
        return SweepConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, str(path))) from None


def encoder_space(cfg: SweepConfig, encoder: str, zoo_kind: str) -> dict[str, SearchValue]:
    """Default space (the encoder's own knobs + learning rate), overridden by 'all' and then by name."""
    from .encoders import search_space

    space: dict[str, SearchValue] = {"lr": Range(low=3e-5, high=3e-3, log=True)}
    space.update(search_space(encoder, zoo_kind))
    for key in ("all", encoder):
        for knob, value in cfg.search.get(key, {}).items():
            if key == "all" and knob not in space and knob not in _extra_knobs(encoder, [encoder]):
                continue  # an 'all' knob this encoder does not have
            space[knob] = value
    return space


def define_by_run(trial, space: dict):
    """Optuna define-by-run space (module level so OptunaSearch can pickle it); scalars are fixed."""
    fixed = {}
    for knob, value in space.items():
        if isinstance(value, list):
            trial.suggest_categorical(knob, value)
        elif isinstance(value, Range):
            if value.int:
                trial.suggest_int(knob, int(value.low), int(value.high), log=value.log)
            else:
                trial.suggest_float(knob, value.low, value.high, log=value.log)
        elif isinstance(value, dict):  # a Range as a plain dict (what the searcher is given)
            if value.get("int"):
                trial.suggest_int(knob, int(value["low"]), int(value["high"]), log=bool(value.get("log")))
            else:
                trial.suggest_float(knob, float(value["low"]), float(value["high"]), log=bool(value.get("log")))
        else:
            fixed[knob] = value
    return fixed or None


# ------------------------------------------------------------------------------------------------
# one trial


def run_trial(config: dict, encoder: str, sweep: dict, trial_root: str) -> None:
    """Tune function trainable: fit one encoder configuration with a Ray Train TorchTrainer.

    Metrics, parameter count and checkpoint path reach Tune through the reports, and the driver
    writes the trial records from Tune's results (a trial stopped by ASHA is ended between two
    reports and never returns here). A trial that returns also leaves ``train_result.json``: where
    its workers ran and, if it diverged, why.
    """
    import ray.tune

    from . import train

    cfg = SweepConfig.model_validate(sweep)
    lr = config.get("lr")
    hparams = {k: v for k, v in config.items() if k != "lr"}
    trial_id = ray.tune.get_context().get_trial_id()
    storage = str(Path(trial_root) / trial_id)
    tcfg = cfg.train_config(encoder, hparams, lr, storage, f"{encoder}-{trial_id}")  # the run's name in the dashboard
    result = train.fit(encoder, tcfg, tune_trial=True)
    atomic_write_json(Path(storage) / TRAIN_RESULT, {"trial_id": trial_id, "train_config": tcfg.model_dump(mode="json"),
                                                     **_jsonable(result)})


def _jsonable(result) -> dict:
    if hasattr(result, "to_dict"):
        return result.to_dict()
    if hasattr(result, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(result)
    return dict(result)


# ------------------------------------------------------------------------------------------------
# the sweep


def check_budget(cfg: SweepConfig, zoo_kind: str, layout) -> dict[str, int]:
    """Fit every encoder at its default hyperparameters: an infeasible budget fails here, up front."""
    from .encoders import InfeasibleBudget, fit_to_budget

    counts = {}
    for enc in cfg.encoders:
        fixed = {k: v for k, v in cfg.search.get(enc, {}).items() if not isinstance(v, (list, Range)) and k != "lr"}
        try:
            _, n = fit_to_budget(enc, layout, cfg.budget, cfg.tolerance, zoo_kind=zoo_kind, preset=cfg.preset(enc),
                                 **fixed)
        except InfeasibleBudget as e:
            raise InfeasibleBudget(f"budget: {e}") from None
        counts[enc] = n
    return counts


def paper_point(cfg: SweepConfig, encoder: str, zoo_kind: str, layout) -> dict[str, Any] | None:
    """Trial 0 of an encoder: its preset's value for every searched knob (the width is fitted to the
    budget inside the trial, as for any trial) and the file's training learning rate (the paper's
    1e-4 unless ``train.lr`` says otherwise). None when ``tune.paper_trial`` is off. A search range
    that leaves the preset's value out is an error: the sweep could not start from the paper."""
    if not cfg.tune.paper_trial:
        return None
    from .encoders.registry import resolve_hparams

    preset = resolve_hparams(encoder, layout, zoo_kind, cfg.preset(encoder))
    preset["lr"] = float(cfg.train.get("lr", TrainConfig.model_fields["lr"].default))
    point = {}
    for knob, value in encoder_space(cfg, encoder, zoo_kind).items():
        if not isinstance(value, (list, Range)):
            continue  # fixed: not a searched parameter
        v = preset[knob]
        ok = v in value if isinstance(value, list) else value.low <= v <= value.high
        if not ok:
            where = f"search.{encoder}.{knob}" if knob in cfg.search.get(encoder, {}) else f"search.all.{knob}"
            raise ConfigError(f"{where}: leaves out the {cfg.preset(encoder)} preset's value {v!r} (trial 0); "
                              "include it, or set tune.paper_trial: false")
        point[knob] = v
    return point


def is_paper_config(config: dict, point: dict | None) -> bool:
    return point is not None and all(config.get(k) == v for k, v in point.items())


def ensure_zoo(cfg: SweepConfig, progress: bool = True) -> dict:
    from . import zoo

    if isinstance(cfg.zoo, str):
        return zoo.verify(cfg.zoo, checksums=True)
    if not (Path(cfg.zoo.path).expanduser() / "manifest.json").exists():
        print(f"building zoo {cfg.zoo.path} ({cfg.zoo.kind}, {cfg.zoo.runs} RNNs, {cfg.zoo.steps} steps) with Ray Data ...", flush=True)
    return zoo.build(cfg.zoo, progress=progress)


def sweep_dir_for(cfg: SweepConfig, resume: str | bool) -> tuple[Path, bool]:
    root = Path(cfg.results).expanduser()
    if resume:
        if isinstance(resume, str) and resume not in ("latest", "last"):
            d = Path(resume)
            d = d if d.is_dir() else root / resume
        else:
            candidates = sorted(p for p in root.glob(f"{cfg.name}-*") if (p / "sweep.json").is_file())
            if not candidates:
                raise UsageError(f"{root}: no earlier sweep named {cfg.name!r} to resume")
            d = candidates[-1]
        if not (d / "sweep.json").is_file():
            raise UsageError(f"{d}: not a sweep folder (no sweep.json)")
        return d, True
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    root.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:  # mkdir is atomic: two sweeps started in the same second get different folders
        d = root / (f"{cfg.name}-{stamp}" if n == 1 else f"{cfg.name}-{stamp}-{n}")
        try:
            d.mkdir()
            return d, False
        except FileExistsError:
            n += 1


def run_encoder(cfg: SweepConfig, encoder: str, zoo_kind: str, sweep_dir: Path, resumed: bool, verbose: int,
                point: dict | None = None):
    """One Ray Tune experiment for one encoder (trial 0: ``point``, its paper preset); returns its trial records."""
    import ray.tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    exp_dir = sweep_dir / "tune"
    exp_name = encoder
    trial_root = sweep_dir / "trials" / encoder
    done_marker = sweep_dir / "trials" / encoder / "DONE"
    if done_marker.exists():
        return collect_trials(trial_root)
    space = encoder_space(cfg, encoder, zoo_kind)
    trainable = ray.tune.with_parameters(
        run_trial, encoder=encoder, sweep=cfg.model_dump(mode="json"), trial_root=str(trial_root.resolve())
    )
    # The trial itself only coordinates: it reserves no CPU (a little memory, since a bundle cannot be
    # empty), so its Ray Train workers and their Ray Data reads get every CPU; even 0.01 CPU here
    # deadlocks a full machine, where the workers plus one 1-CPU read task need all of them.
    from ray.tune.execution.placement_groups import PlacementGroupFactory

    from ray.tune.trainable.function_trainable import wrap_function

    # a named class, so the dashboard and `ps` list "EmulationTrial" (repr: the encoder) rather than
    # Tune's anonymous "ImplicitFunc"
    trainable = wrap_function(trainable, name=f"EmulationTrial({encoder})")
    trainable = ray.tune.with_resources(trainable, PlacementGroupFactory([{"CPU": 0, "memory": 64 * 2**20}]))
    trainable = type("EmulationTrial", (trainable,), {})
    path = exp_dir / exp_name
    if resumed and ray.tune.Tuner.can_restore(str(path.resolve())):
        tuner = ray.tune.Tuner.restore(str(path.resolve()), trainable, resume_errored=True)
    else:
        searcher = OptunaSearch(
            space=functools.partial(define_by_run, space=_plain(space)),
            metric=TUNE_METRIC,
            mode="min",
            sampler=tpe_sampler(cfg.tune),
            points_to_evaluate=[point] if point else None,
        )
        scheduler = None
        if cfg.tune.scheduler == "asha":
            evals = max(1, math.ceil(int(cfg.train.get("steps", TrainConfig.model_fields["steps"].default))
                                     / int(cfg.train.get("eval_every", TrainConfig.model_fields["eval_every"].default))))
            # max_t one past the last evaluation: a trial that trains to the end returns by itself,
            # so its Ray Train run shuts down cleanly instead of being stopped by the scheduler
            scheduler = ASHAScheduler(
                time_attr="training_iteration",
                max_t=evals + 1,
                grace_period=min(cfg.tune.grace_period, evals),
                reduction_factor=cfg.tune.reduction_factor,
            )
        tuner = ray.tune.Tuner(
            trainable,
            tune_config=ray.tune.TuneConfig(
                metric=TUNE_METRIC,
                mode="min",
                search_alg=searcher,
                scheduler=scheduler,
                num_samples=cfg.tune.samples_per_encoder,
                max_concurrent_trials=cfg.tune.max_concurrent_trials,
                trial_name_creator=functools.partial(_trial_name, encoder),
                trial_dirname_creator=functools.partial(_trial_name, encoder),
            ),
            run_config=ray.tune.RunConfig(
                name=exp_name,
                storage_path=str(exp_dir.resolve()),
                failure_config=ray.tune.FailureConfig(max_failures=cfg.tune.max_failures),
                verbose=verbose,
            ),
        )
    grid = tuner.fit()
    # Ctrl-C (SIGINT) makes Tune stop its trials, save its state and return as if it had finished:
    # an experiment with trials still unended was interrupted, and must stay resumable (no records,
    # no DONE), not be taken for a finished one
    ended = grid.num_terminated + grid.num_errors
    if ended < cfg.tune.samples_per_encoder:
        raise SweepInterrupted(f"{encoder}: {ended} of {cfg.tune.samples_per_encoder} trials ended", sweep_dir)
    for result in grid:
        rec = trial_record(result, encoder, cfg)
        rec["paper_config"] = is_paper_config(rec["config"], point)
        own = trial_root / rec["trial_id"] / TRAIN_RESULT
        if own.is_file():  # where the workers ran; the checkpoint a restarted run continued from
            mine = json.loads(own.read_text())
            rec["placement"] = mine.get("placement", [])
            rec["resumed_from_step"] = mine.get("resumed_from_step")
        atomic_write_json(trial_root / rec["trial_id"] / "trial.json", rec)
    atomic_write_text(done_marker, "finished\n")
    return collect_trials(trial_root)


def _plain(space: dict) -> dict:
    """Ranges as plain dicts: the searcher is pickled and shipped, plain data travels best."""
    return {k: (v.model_dump() if isinstance(v, Range) else v) for k, v in space.items()}


def _trial_name(encoder: str, trial) -> str:
    return f"{encoder}_{trial.trial_id}"


def collect_trials(trial_root: Path) -> list[dict]:
    return [json.loads(f.read_text()) for f in sorted(trial_root.glob("*/trial.json"))]


def summarise(sweep_dir: Path, cfg: SweepConfig, records: dict[str, list[dict]]) -> tuple[list[dict], dict]:
    rows, best = [], {}
    for enc in cfg.encoders:
        ok = [r for r in records.get(enc, []) if r.get("status") != "failed" and r.get("best_val_loss") is not None
              and math.isfinite(r["best_val_loss"])]
        failed = len(records.get(enc, [])) - len(ok)
        if not ok:
            rows.append({"encoder": enc, "best_val_loss": None, "best_ood_loss": None, "n_params": None,
                         "trials": len(records.get(enc, [])), "failed": failed, "paper_val_loss": None,
                         "best_is_paper": False, "trial_id": None, "config": None})
            continue
        b = min(ok, key=lambda r: r["best_val_loss"])
        paper = next((r for r in ok if r.get("paper_config")), None)
        rows.append({"encoder": enc, "best_val_loss": b["best_val_loss"], "best_ood_loss": b.get("best_ood_loss"),
                     "n_params": b.get("n_params"), "trials": len(records[enc]), "failed": failed,
                     "paper_val_loss": paper["best_val_loss"] if paper else None,
                     "best_is_paper": bool(b.get("paper_config")),
                     "trial_id": b["trial_id"], "config": b.get("config")})
        best[enc] = {"trial_id": b["trial_id"], "paper_config": bool(b.get("paper_config")), "trial_dir": str((sweep_dir / "trials" / enc / b["trial_id"]).resolve()),
                     "checkpoint": b.get("checkpoint"), "best_val_loss": b["best_val_loss"],
                     "best_ood_loss": b.get("best_ood_loss"), "n_params": b.get("n_params"), "config": b.get("config")}
    return rows, best


def write_summary(sweep_dir: Path, rows: list[dict], best: dict, cfg: SweepConfig) -> None:
    buf = io.StringIO()
    fields = ["encoder", "best_val_loss", "best_ood_loss", "n_params", "trials", "failed", "paper_val_loss",
              "best_is_paper", "trial_id", "config"]
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    for r in rows:
        w.writerow({**r, "config": json.dumps(r["config"]) if r["config"] else ""})
    atomic_write_text(sweep_dir / "summary.csv", buf.getvalue())
    atomic_write_text(sweep_dir / "summary.md", markdown_table(rows, cfg))
    atomic_write_json(sweep_dir / "best.json", best)


def _fmt(x, spec=".4f"):
    return "—" if x is None else format(x, spec)


def markdown_table(rows: list[dict], cfg: SweepConfig) -> str:
    lines = [
        f"# Sweep `{cfg.name}`",
        "",
        f"Zoo: `{cfg.zoo_path}` · budget {cfg.budget:,} parameters ± {cfg.tolerance:.0%} · "
        f"{cfg.tune.samples_per_encoder} trials per encoder",
        "",
        "Trial 0 of each encoder is its paper preset scaled to the budget (`paper_config: true` in its "
        "`trial.json`); tuning gain = its validation loss minus the best trial's.",
        "",
        "| encoder | best val emulation loss | its OOD emulation loss | paper preset (trial 0) val loss | tuning gain | parameters | trials (failed) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        n = "—" if r["n_params"] is None else f"{r['n_params']:,}"
        paper, best = r.get("paper_val_loss"), r["best_val_loss"]
        gain = "—" if paper is None or best is None else ("0 (the best is trial 0)" if r.get("best_is_paper") else f"{paper - best:.4f}")
        lines.append(f"| {r['encoder']} | {_fmt(best)} | {_fmt(r['best_ood_loss'])} | {_fmt(paper)} | {gain} | {n} | {r['trials']} ({r['failed']}) |")
    return "\n".join(lines) + "\n"


def _http(url: str | None) -> str | None:
    if not url:
        return None
    return url if url.startswith("http") else f"http://{url}"


def absolute_paths(cfg: SweepConfig) -> SweepConfig:
    """Relative zoo and results paths, resolved against the directory the sweep was started in:
    Tune runs each trial in a working directory of its own, where they would point nowhere."""
    def absolute(p: str) -> str:
        return p if "://" in p else str(Path(p).expanduser().resolve())

    update = {"results": absolute(cfg.results)}
    if isinstance(cfg.zoo, str):
        update["zoo"] = absolute(cfg.zoo)
    else:
        update["zoo"] = cfg.zoo.model_copy(update={"path": absolute(cfg.zoo.path)})
    return cfg.model_copy(update=update)


def run_sweep(cfg: SweepConfig, resume: str | bool = False, progress: bool = True, verbose: int = 1,
              dashboard: str | None = None) -> Path:
    """Zoo, budget check, one Tune experiment per encoder, results store. Returns the sweep folder.

    Everything that can be checked before work starts is (zoo layout, budget, resources), so bad
    input fails in one line before anything is built or written. ``dashboard``: the Ray
    dashboard's address, printed for the user. The main job (:mod:`rnnray.job`) follows this with
    the downstream evaluation and the report."""
    import ray

    from .resources import cluster_shape, fit_request
    from .weights import Layout
    from .zoo.builder import layout_for

    cfg = absolute_paths(cfg)
    if isinstance(cfg.zoo, str):  # an existing zoo: verified in full (sizes and checksums) up front
        manifest = ensure_zoo(cfg, progress=progress)
        zoo_kind, layout = manifest["kind"], Layout.from_dict(manifest["layout"])
    else:
        zoo_kind, layout = cfg.zoo.kind, layout_for(cfg.zoo.kind)
    counts = check_budget(cfg, zoo_kind, layout)
    points = {enc: paper_point(cfg, enc, zoo_kind, layout) for enc in cfg.encoders}
    if not ray.is_initialized():
        ray.init()
    r = cfg.resources
    cpus, gpus = fit_request(r.cpus_per_worker, r.gpus_per_worker, "resources: a training worker", cluster_shape())
    if (cpus, gpus) != (r.cpus_per_worker, r.gpus_per_worker):
        cfg = cfg.model_copy(update={"resources": r.model_copy(update={"cpus_per_worker": cpus, "gpus_per_worker": gpus})})
    if not isinstance(cfg.zoo, str):
        manifest = ensure_zoo(cfg, progress=progress)
    sweep_dir, resumed = sweep_dir_for(cfg, resume)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    if not resumed:
        atomic_write_json(sweep_dir / "sweep.json", {"config": cfg.model_dump(mode="json"), "zoo_kind": zoo_kind,
                                                     "created": dt.datetime.now().isoformat(timespec="seconds"),
                                                     "default_param_counts": counts})
    write_latest(Path(cfg.results).expanduser(), sweep_dir)
    print(f"sweep folder: {sweep_dir}", flush=True)
    url = _http(dashboard)
    if url:
        print(f"Ray dashboard: {url}", flush=True)
    records = {}
    t0 = time.time()
    for enc in cfg.encoders:
        print(f"\n=== {enc}: {cfg.tune.samples_per_encoder} trials at {cfg.budget:,} ± {cfg.tolerance:.0%} parameters ===", flush=True)
        records[enc] = run_encoder(cfg, enc, zoo_kind, sweep_dir, resumed, verbose, points[enc])
        rows, best = summarise(sweep_dir, cfg, records)
        write_summary(sweep_dir, rows, best, cfg)
    rows, best = summarise(sweep_dir, cfg, records)
    write_summary(sweep_dir, rows, best, cfg)
    print(f"sweep finished in {time.time() - t0:.0f} s", flush=True)
    return sweep_dir


if __name__ == "__main__":
    # run from the importable modules, not __main__, so everything Ray pickles is found by reference
    from rnnray.job import main as _main

    _main(sys.argv[1:])
