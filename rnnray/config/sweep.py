"""The sweep file: which encoders, at what budget, searched how, on what resources (SPEC.md section 7).

The encoders' own search spaces live with the encoders; :func:`rnnray.sweep.settings.check_search`
checks a sweep's ``search:`` section against them when the file is loaded.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from ..encoders.catalog import check_name
from .base import DEFAULT_PRESET, PATH_TAG, PRESET_NAMES, Strict, finite_tree, ranks_apart
from .train import TrainConfig, TrainSettings
from .zoo import FormalLanguagesZoo, MnistZoo


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

# the training settings a sweep's ``search:`` may set per trial beside the encoders' own knobs
# (lr is searched by default; conditioning when the file asks: ``conditioning: [bos, every_step]``)
TRAIN_KNOBS = ("lr", "conditioning")


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
    schedule: Literal["one_queue", "per_encoder"] = Field(
        "one_queue", description="one_queue: every encoder's search trials, its final seeds once its search has "
                                 "ended and the label oracles share one Tune queue, so no slot waits while work is "
                                 "runnable; per_encoder: one Tune experiment per encoder after the other (the old schedule)")


def startup_trials(tune: TuneSettings) -> int:
    """TPE's start-up count: Optuna's default of 10 random trials would make a sweep of a few
    trials a random search, so a quarter of the trials (1 to 10) explore before TPE proposes."""
    return tune.startup_trials or max(1, min(10, tune.samples_per_encoder // 4))


class TrialResources(Strict):
    workers: int = Field(1, ge=1, description="Ray Train workers per trial (DDP)")
    gpus_per_worker: float = Field(0.0, ge=0, description="> 0: workers train on CUDA when Ray assigns a GPU they can see")
    cpus_per_worker: float = Field(1.0, gt=0)
    worker_nice: int = Field(
        0, ge=0, le=19, description="above 0: the job's Ray workers start at nice 0 instead of Ray's 15 and each "
                                    "training worker lowers itself to this once its run starts, so with more slots "
                                    "than cores a freed slot's next trial starts ahead of the running trials' steps; "
                                    "0: Ray's default")
    process_group_backend: Literal["auto", "gloo", "nccl"] = Field(
        "auto", description="torch.distributed backend; auto: nccl with GPUs, else gloo (gloo for logical GPUs)"
    )
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "PACK", description="placement of a trial's workers: PACK keeps them on one node, SPREAD over nodes"
    )

    @model_validator(mode="after")
    def _ranks_apart(self):
        ranks_apart(self.workers, self.gpus_per_worker, self.process_group_backend)
        return self


class FinalSettings(Strict):
    """After an encoder's search: its best configuration and its paper preset, retrained from scratch
    with new seeds to the full planned length (ordinary Ray Train runs under Tune)."""

    seeds: int = Field(3, ge=0, description="seeds per configuration (0: no final runs); a seed sets the "
                                            "initialisation and the batch order, never the split")
    first_seed: int = Field(1, ge=0, description="the seeds are first_seed, first_seed + 1, ... (the search "
                                                 "trains with train.seed, 0 by default)")
    paper_preset: bool = Field(True, description="retrain the paper-preset trial's configuration too "
                                                 "(needs tune.paper_trial), so tuning's gain has an interval")


ORACLE_MODES = ("constant", "step", "task", "task+step")  # rnnray.analysis.oracles's representations


class OracleSettings(Strict):
    """Label oracles after the final runs (``rnnray.analysis.oracles``): the sweep's emulator trained on
    learned embeddings of each snapshot's known labels instead of an encoder, under the final runs'
    seeds, so the report can say whether an encoder carries more than how far training went."""

    modes: list[Literal[ORACLE_MODES]] = Field(  # type: ignore[valid-type]
        ["constant", "step", "task+step"],
        description="which oracles: constant, step (training progress only), task, task+step ([]: none; "
                    "they also need final.seeds)")


# the downstream predictors' defaults (rnnray.analysis.downstream.PredictorConfig uses these too)
PREDICTOR_STEPS = 2000
PREDICTOR_HIDDEN = 64
PREDICTOR_SEEDS = (0, 1, 2)
SUPERVISED_ENCODER = "stats"


SEED_MAX = 2**63 - 1  # torch's and numpy's seeds both take it


def predictor_seeds(seeds) -> list[int]:
    """Downstream predictor seeds: whole numbers from 0 to 2^63 - 1, each once (a repeated seed would
    count one predictor twice in the spread over seeds). ValueError naming the first that is not."""
    seen: set[int] = set()
    for s in seeds:
        if not 0 <= s <= SEED_MAX:
            raise ValueError(f"{s} is not a seed (a whole number from 0 to 2^63 - 1)")
        if s in seen:
            raise ValueError(f"seed {s} is listed twice")
        seen.add(s)
    return list(seeds)


class DownstreamSettings(Strict):
    """Downstream evaluation of each encoder's best trial and the report, run at the end of the sweep."""

    enabled: bool = Field(True, description="run downstream evaluation and write the report at the end")
    steps: int = Field(PREDICTOR_STEPS, ge=1, description="optimisation steps of each downstream predictor")
    hidden: int = Field(PREDICTOR_HIDDEN, ge=1, description="predictor MLP width")
    seeds: list[int] = Field(list(PREDICTOR_SEEDS), min_length=1, description="predictor seeds (the spread is over these)")
    supervised_encoder: str = Field(SUPERVISED_ENCODER, description="encoder trained end to end on each target (the supervised baseline)")

    @field_validator("supervised_encoder")
    @classmethod
    def _encoder(cls, v):
        return check_name(v)

    _seeds = field_validator("seeds")(lambda cls, v: predictor_seeds(v))


class MlflowSettings(Strict):
    """Ray Tune's MLflow logger: one MLflow run per trial (``pip install rnnray[mlflow]``)."""

    tracking_uri: str | None = Field(None, description="MLflow tracking URI (a file:// folder, or a server); "
                                                        "default: MLflow's own (MLFLOW_TRACKING_URI, else ./mlruns)")
    experiment: str | None = Field(None, description="MLflow experiment; default: the sweep's name")


class WandbSettings(Strict):
    """Ray Tune's Weights & Biases logger: one W&B run per trial, grouped by sweep (``pip install rnnray[wandb]``)."""

    project: str = Field(..., min_length=1, description="W&B project")
    mode: Literal["offline", "online"] = Field("offline", description="offline: written into the sweep folder "
                                                                      "(`wandb sync` uploads it later); online: needs a login")
    entity: str | None = Field(None, description="W&B entity (team or user); default: yours")


class TrackingSettings(Strict):
    """Experiment trackers every trial logs to: its encoder, hyperparameters, parameter count and every
    evaluation. TensorBoard needs nothing: Tune writes its event files under ``tune/`` in the sweep folder."""

    mlflow: MlflowSettings | None = Field(None, description="log to MLflow (off when absent)")
    wandb: WandbSettings | None = Field(None, description="log to Weights & Biases (off when absent)")


def _zoo_tag(value) -> str | None:
    """Which member of ``zoo:`` a value is: a mapping by its ``kind`` (None: missing or unknown, so
    the error says what a zoo config needs, and a typo inside one names the key), else a path."""
    if isinstance(value, dict):
        kind = value.get("kind")
        return kind if kind in ("formal_languages", "mnist") else None
    if isinstance(value, (FormalLanguagesZoo, MnistZoo)):
        return value.kind
    return PATH_TAG


ZooField = Annotated[
    Union[Annotated[str, Tag(PATH_TAG)], Annotated[FormalLanguagesZoo, Tag("formal_languages")],
          Annotated[MnistZoo, Tag("mnist")]],
    Discriminator(_zoo_tag, custom_error_type="zoo_kind",
                  custom_error_message="a zoo config needs kind: formal_languages or mnist (or give a zoo's path)"),
]


# the training file's fields a sweep sets itself (from its own keys, per trial), not under `train:`
RUN_OWNED = frozenset(TrainConfig.model_fields) - frozenset(TrainSettings.model_fields)


class SweepConfig(Strict):
    """A sweep file. ``zoo`` is a path to a built zoo, or a zoo config (built if missing)."""

    name: str = Field("sweep", pattern=r"^[A-Za-z0-9_.-]+$")
    results: str = Field("results", description="results directory; one folder per sweep inside it")
    zoo: ZooField
    encoders: list[str] = Field(min_length=1, description="built-in names, plug-ins' import paths (package.module:Class) or "
                                                          "names registered under the rnnray.encoders entry-point group")
    budget: int = Field(gt=0, description="trainable encoder parameters, the same for every trial")
    tolerance: float = Field(0.05, gt=0, lt=1)
    search: dict[str, dict[str, SearchValue]] = Field(
        default_factory=dict,
        description="search-space overrides: per encoder name, or 'all'; a list is a choice, a range is numeric, a scalar "
                    "fixes the value; the encoders' knobs and the training settings lr and conditioning",
    )
    presets: dict[str, str] = Field(
        default_factory=dict, description="preset per encoder name (default `paper` for every encoder): where its "
                                          "hyperparameters start, and its trial 0"
    )
    train: TrainSettings = Field(TrainSettings(), description="how every trial is optimised (the training file's settings)")
    tune: TuneSettings = TuneSettings()
    final: FinalSettings = Field(FinalSettings(), description="seeds after the search")
    oracles: OracleSettings = Field(OracleSettings(), description="label oracles after the final runs")
    resources: TrialResources = TrialResources()
    downstream: DownstreamSettings = DownstreamSettings()
    tracking: TrackingSettings = TrackingSettings()

    _finite_search = field_validator("search", mode="before")(finite_tree)

    @field_validator("encoders")
    @classmethod
    def _known(cls, v):
        for e in v:
            check_name(e)
        if len(set(v)) != len(v):
            raise ValueError("an encoder is listed twice")
        return v

    @model_validator(mode="after")
    def _presets(self):
        for enc, preset in self.presets.items():
            if enc not in self.encoders:
                raise ValueError(f"presets.{enc}: not one of the sweep's encoders ({', '.join(self.encoders)})")
            if preset not in PRESET_NAMES:
                raise ValueError(f"presets.{enc}: unknown preset {preset!r}; choose from {', '.join(PRESET_NAMES)}")
        return self

    def preset(self, encoder: str) -> str:
        return self.presets.get(encoder, DEFAULT_PRESET)

    @field_validator("train", mode="before")
    @classmethod
    def _train_fields(cls, v):
        if isinstance(v, dict):
            owned = sorted(set(v) & RUN_OWNED)
            if owned:
                raise ValueError(f"{owned[0]!r} is set by the sweep itself (zoo, budget, tolerance, resources), not under train")
        return v

    @property
    def zoo_path(self) -> str:
        return self.zoo if isinstance(self.zoo, str) else self.zoo.path

    def searched_conditioning(self, encoder: str):
        """``search:``'s value for ``conditioning`` for ``encoder`` (its own, else ``all``'s), None when not set."""
        for key in (encoder, "all"):
            if "conditioning" in self.search.get(key, {}):
                return self.search[key]["conditioning"]
        return None

    def train_config(self, encoder: str, encoder_hparams: dict, knobs: dict | None, storage_path: str,
                     name: str) -> TrainConfig:
        """One run's training file. ``knobs``: a trial's values of the searched training settings
        (:data:`TRAIN_KNOBS`: ``lr``, ``conditioning``), over the file's ``train:`` section."""
        data = self.train.model_dump()
        data.update({k: v for k, v in (knobs or {}).items() if v is not None})
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
            worker_nice=self.resources.worker_nice,
            process_group_backend=self.resources.process_group_backend,
            placement_strategy=self.resources.placement_strategy,
            storage_path=storage_path,
            name=name,
        )
