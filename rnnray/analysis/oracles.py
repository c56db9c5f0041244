"""Label oracles: the emulation loss a representation *could* reach, for a sweep's zoo and settings.

``python -m rnnray.label_oracle SWEEP.yaml [--seeds N] [--steps N] [--json] [--out FILE]``

An encoder's validation loss alone does not say what its representation carries. The oracles
replace the encoder with learned embeddings of what is known about every snapshot, and train the
sweep's emulator on them exactly as a sweep trains an encoder (same batches, sequences, loss,
optimiser, clipping, evaluation pairs and best-validation selection):

* ``constant``: one learned vector for all (the ``constant`` baseline; identical to it, seed for seed);
* ``step``: an embedding of the snapshot's training step only: the one-dimensional "how trained" arc;
* ``task``: the task only;
* ``task+step``: both, what a perfect encoder of the two could give.

Task embeddings generalise to the validation split's unseen tasks: on zoo A, one 6-way embedding
per offset t1, t2, t3, summed (each offset value occurs in training); on zoo B, a linear map of
(cos, sin) of the angle. An encoder whose loss sits at the ``step`` oracle's, while ``task+step``
lies clearly below, has learnt training progress but not the task.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import ORACLE_MODES as MODES
from ..kinds import KINDS
from ..sweep import progress as job_progress
from ..encoders.common import REPRESENTATION_DIM

ALPHA = 0.05  # the verdict's level (rnnray.analysis.verdict)
from ..kinds import TASK_OFFSET_VALUES as OFFSET_VALUES  # noqa: E402 - zoo A offsets t1..t3 take 6 values, -3..2


class LabelRepresentation(nn.Module):
    """A representation computed from labels, not weights: ``(task features, step index) -> (B, 16)``.

    ``constant`` is built first and drawn exactly as :class:`~rnnray.encoders.baseline.ConstantRepresentation`
    draws its vector, so under one seed the ``constant`` oracle and the baseline start identically."""

    def __init__(self, mode: str, zoo_kind: str, n_steps: int, rep_dim: int = REPRESENTATION_DIM):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown oracle mode {mode!r}; expected one of {', '.join(MODES)}")
        self.mode, self.zoo_kind = mode, zoo_kind
        self.rep = nn.Parameter(torch.randn(rep_dim))
        self.step = nn.Embedding(n_steps, rep_dim) if "step" in mode else None
        if "task" not in mode:
            self.task = None
        elif KINDS[zoo_kind].task.categorical:  # zoo A: one embedding per offset, summed (reaches unseen tasks)
            self.task = nn.ModuleList(nn.Embedding(OFFSET_VALUES, rep_dim) for _ in range(KINDS[zoo_kind].task.n_features))
        else:  # zoo B: the angle's (cos, sin)
            self.task = nn.Linear(KINDS[zoo_kind].task.n_features, rep_dim)

    def forward(self, labels: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """``labels`` in the place of an encoder's flat weights (so :class:`~rnnray.emulation.emulator.EmulationModel`
        takes it as an encoder): ``task`` (B, 3) offset indices 0..5 (zoo A) or (B, 2) (cos, sin) of
        the angle (zoo B), and ``step`` (B,) the index of the snapshot step among the zoo's steps."""
        task, step = labels
        z = self.rep.expand(step.shape[0], -1)
        if self.step is not None:
            z = z + self.step(step)
        if isinstance(self.task, nn.ModuleList):
            z = z + sum(emb(task[:, i]) for i, emb in enumerate(self.task))
        elif self.task is not None:
            z = z + self.task(task)
        return z


@dataclass
class Labels:
    """Per-row oracle inputs of one split, aligned with its :class:`~rnnray.emulation.batches.Snapshots` rows."""

    task: torch.Tensor  # (n, 3) long offset indices, or (n, 2) float (cos, sin)
    step: torch.Tensor  # (n,) long index into the zoo's snapshot steps

    def take(self, rows: np.ndarray, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.from_numpy(np.asarray(rows, dtype=np.int64))
        return self.task[idx].to(device), self.step[idx].to(device)


def task_features(kind: str, tasks: Sequence) -> torch.Tensor:
    """Task keys (offset tuples with t0 = 0, or angles in degrees) -> the oracle's task input."""
    return torch.from_numpy(KINDS[kind].task.features(tasks))


def row_labels(kind: str, run_id: np.ndarray, step: np.ndarray, run_task: Mapping[int, Any],
               snapshot_steps: Sequence[int]) -> Labels:
    """Labels of rows given by their run ids and steps (``run_task``: run id -> task key)."""
    index = {int(s): i for i, s in enumerate(snapshot_steps)}
    return Labels(task=task_features(kind, [run_task[int(r)] for r in run_id]),
                  step=torch.tensor([index[int(s)] for s in step], dtype=torch.long))


@dataclass
class OracleRun:
    mode: str
    seed: int
    best_val_loss: float
    best_ood_loss: float
    best_step: int
    history: list[dict[str, float]]


def _eval_loss(model, data, labels: Labels, pairs, batch_size: int, device) -> float:
    """The loop's own evaluation sum, the labels in the place of the weights; its mean."""
    from ..train.loop import eval_loss_sum

    total = eval_loss_sum(model, data, pairs, batch_size, device, encoder_input=lambda r, _flat: labels.take(r, device))
    return float(total) / len(pairs[0])


def train_oracle(mode: str, splits: Mapping[str, Any], labels: Mapping[str, Labels], kind: str, n_steps: int,
                 train_cfg, device=None) -> OracleRun:
    """Train the emulator on one oracle's representations with ``train_cfg`` (a TrainSettings: its
    conditioning and clipping too) as :func:`rnnray.train.loop.run_loop` trains an encoder with one
    worker (its ``train_step``; the label embeddings are the encoder whose gradients clip on their own)."""
    from ..emulation.batches import RowSampler, eval_pairs, training_batch
    from ..emulation.emulator import EmulationModel, Emulator
    from ..train.loop import train_step
    from ..train.model import EMULATOR_LAYERS

    cfg = train_cfg
    train, val, ood = splits["train"], splits["val"], splits["ood"]
    sampler = RowSampler(len(train), cfg.batch_size, cfg.seed, 0)
    val_pairs = eval_pairs(len(val), val.n_sequences, cfg.eval_sequences)
    ood_pairs = eval_pairs(len(ood), ood.n_sequences, cfg.eval_sequences)
    torch.manual_seed(cfg.seed)
    device = torch.device(device or "cpu")
    model = EmulationModel(LabelRepresentation(mode, kind, n_steps),
                           Emulator(kind, hidden=cfg.emulator_hidden, num_layers=EMULATOR_LAYERS,
                                    conditioning=cfg.conditioning)).to(device)
    params = list(model.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    best = {"val_loss": math.inf, "ood_loss": math.inf, "step": 0}
    history = []
    for step in range(cfg.steps):
        model.train()
        _, inputs, targets = training_batch(train, sampler, step, cfg.seed, None, device)
        train_step(model, optimizer, params, labels["train"].take(sampler.rows(step), device), inputs, targets,
                   cfg.grad_clip, cfg.grad_clip_scope)
        done = step + 1
        if done % cfg.eval_every and done != cfg.steps:
            continue
        model.eval()
        m = {"step": done,
             "val_loss": _eval_loss(model, val, labels["val"], val_pairs, cfg.eval_batch_size, device),
             "ood_loss": _eval_loss(model, ood, labels["ood"], ood_pairs, cfg.eval_batch_size, device)}
        history.append(m)
        if m["val_loss"] < best["val_loss"]:
            best = {"val_loss": m["val_loss"], "ood_loss": m["ood_loss"], "step": done}
    return OracleRun(mode, cfg.seed, best["val_loss"], best["ood_loss"], best["step"], history)


def load_zoo(plan) -> tuple[dict[str, Any], dict[str, Labels], int]:
    """The plan's train/val/OOD rows (as the loop loads them) and their oracle labels; the number
    of snapshot steps."""
    from ..emulation.batches import Snapshots
    from ..emulation.splits import zoo_splits
    from ..train.backends import split_tables

    cfg = plan.train
    tables = split_tables(plan)
    splits = {"train": Snapshots.from_table(plan.zoo_kind, tables["train"]),
              "val": Snapshots.from_table(plan.zoo_kind, tables["val"], cfg.eval_sequences),
              "ood": Snapshots.from_table(plan.zoo_kind, tables["ood"], cfg.eval_sequences)}
    run_task = zoo_splits(plan.zoo.root, seed=plan.zoo.split_seed, checksums=False, scheme=plan.zoo.split).run_task
    snapshot_steps = sorted({int(s) for d in splits.values() for s in np.unique(d.step)})
    labels = {s: row_labels(plan.zoo_kind, d.run_id, d.step, run_task, snapshot_steps) for s, d in splits.items()}
    return splits, labels, len(snapshot_steps)


def run_oracles(plan, seeds: Sequence[int], modes: Sequence[str] = MODES, progress=None) -> dict[str, Any]:
    """Every oracle mode under every seed, in this process (:func:`summarise` gives the result)."""
    splits, labels, n_steps = load_zoo(plan)
    runs: dict[str, list[dict]] = {}
    for mode in modes:
        for seed in seeds:
            cfg = plan.train.model_copy(update={"seed": int(seed)})
            run = train_oracle(mode, splits, labels, plan.zoo_kind, n_steps, cfg)
            runs.setdefault(mode, []).append(asdict(run))
            if progress:
                progress(f"oracle {mode:<10} seed {seed}: best val {run.best_val_loss:.4f} at step {run.best_step}")
    return summarise(plan, seeds, runs)


def summarise(plan, seeds: Sequence[int], runs: Mapping[str, Sequence[Mapping]]) -> dict[str, Any]:
    """The stored form (``oracles.json``): the settings, and per mode its runs and the intervals of
    their best validation losses and the OOD losses there."""
    from .statistics import mean_interval

    return {"zoo": plan.zoo.root, "zoo_kind": plan.zoo_kind, "train": plan.train.model_dump(mode="json"),
            "seeds": [int(s) for s in seeds],
            "modes": {mode: {"runs": list(rs),
                             "val_loss": mean_interval([r["best_val_loss"] for r in rs]).to_dict(),
                             "ood_loss": mean_interval([r["best_ood_loss"] for r in rs]).to_dict()}
                      for mode, rs in runs.items()}}


def oracle_conditioning(cfg) -> str:
    """The emulator conditioning the oracles of a sweep train with: the one value every encoder's
    trials share when ``search:`` fixes it, else the file's ``train.conditioning`` (an encoder whose
    best configuration used another is flagged in the report)."""
    values = [cfg.searched_conditioning(e) for e in cfg.encoders]
    values = [cfg.train.conditioning if v is None else v for v in values]
    if all(isinstance(v, str) for v in values) and len(set(values)) == 1:
        return values[0]
    return cfg.train.conditioning


def sweep_plan(cfg):
    """The run plan the oracles of a sweep train under: the sweep's zoo, split and train settings
    (its emulator conditioning: :func:`oracle_conditioning`)."""
    from ..train.plan import plan_run

    return plan_run("constant", cfg.train_config("constant", {}, {"conditioning": oracle_conditioning(cfg)},
                                                 storage_path="unused", name="label-oracle"))


def _oracle_task(plan, mode: str, seed: int) -> dict:
    """One oracle run as a Ray task or inside a Tune trial: on the GPU Ray assigned it, if any."""
    import ray

    device = "cuda" if torch.cuda.is_available() and ray.get_gpu_ids() else "cpu"
    splits, labels, n_steps = load_zoo(plan)
    cfg = plan.train.model_copy(update={"seed": int(seed)})
    return asdict(train_oracle(mode, splits, labels, plan.zoo_kind, n_steps, cfg, device))


def oracle_run(config: dict, plan) -> dict:
    """One oracle run of the sweep's one queue (:class:`rnnray.sweep.SideRuns`), in its Tune trial."""
    return _oracle_task(plan, config["oracle"]["mode"], int(config["oracle"]["seed"]))


def _settings(cfg) -> tuple[list[str], list[int]]:
    """The sweep's oracle modes and seeds (its final seeds)."""
    return list(cfg.oracles.modes), [cfg.final.first_seed + i for i in range(cfg.final.seeds)]


def oracles_current(folder, plan, modes: Sequence[str], seeds: Sequence[int]) -> bool:
    """``oracles.json`` holds these settings already (a resumed sweep keeps it)."""
    path = folder.oracles_json
    if not path.is_file():
        return False
    old = json.loads(path.read_text())
    return (old.get("train") == plan.train.model_dump(mode="json") and old.get("seeds") == list(seeds)
            and set(modes) <= set(old.get("modes", {})))


def write_oracles(folder, runs: Sequence[Mapping], plan, modes: Sequence[str], seeds: Sequence[int]) -> None:
    """``oracles.json`` from one run per (mode, seed), modes major, in the order of ``modes`` x ``seeds``."""
    from ..results.atomic import atomic_write_json

    by = {(r["mode"], int(r["seed"])): r for r in runs}
    atomic_write_json(folder.oracles_json, summarise(plan, seeds, {m: [by[(m, s)] for s in seeds] for m in modes}))


def queue_oracles(cfg):
    """The sweep's oracles as work for its one queue (run beside the trials, in idle slots), or None
    when the sweep asks for none or has no final seeds."""
    import functools

    from ..sweep import SideRuns

    modes, seeds = _settings(cfg)
    if not modes or not seeds:
        return None
    plan = sweep_plan(cfg)
    return SideRuns(phase="oracles", configs=[{"oracle": {"mode": m, "seed": s}} for m in modes for s in seeds],
                    run=oracle_run, payload=plan,
                    finish=functools.partial(write_oracles, plan=plan, modes=modes, seeds=seeds),
                    done=functools.partial(oracles_current, plan=plan, modes=modes, seeds=seeds))


def sweep_oracles(sweep_dir, cfg, progress: bool = True):
    """The sweep's ``oracles.modes`` under its final seeds, as Ray tasks with one trial worker's
    resources (at most ``tune.max_concurrent_trials`` at once; each task trains the sweep's global
    batch in one process, however many workers a trial has), into ``oracles.json``. Kept when
    that file already holds these settings (a resumed sweep, or the one queue ran them); returns
    its path, or None when the sweep asks for no oracles or has no final seeds."""
    import ray

    from ..results.folder import SweepFolder

    modes, seeds = _settings(cfg)
    if not modes or not seeds:
        return None
    folder = SweepFolder(sweep_dir)
    plan = sweep_plan(cfg)
    if oracles_current(folder, plan, modes, seeds):
        job_progress.phase_done("oracles")
        return folder.oracles_json
    job_progress.start("oracles")
    res = cfg.resources
    task = ray.remote(num_cpus=res.cpus_per_worker, num_gpus=res.gpus_per_worker, max_retries=1)(_oracle_task)
    jobs = [(m, s) for m in modes for s in seeds]
    limit = cfg.tune.max_concurrent_trials or len(jobs)
    pending, done = {}, []
    plan_ref = ray.put(plan)
    while jobs or pending:
        while jobs and len(pending) < limit:
            m, s = jobs.pop(0)
            pending[task.remote(plan_ref, m, s)] = (m, s)
        ready, _ = ray.wait(list(pending), num_returns=1)
        m, s = pending.pop(ready[0])
        done.append(run := ray.get(ready[0]))
        if progress:
            print(f"oracle {m:<10} seed {s}: best val {run['best_val_loss']:.4f} at step {run['best_step']}", flush=True)
        job_progress.run_done("oracles")
    write_oracles(folder, done, plan, modes, seeds)
    return folder.oracles_json


def against(values, oracle) -> dict[str, Any]:
    """An encoder's seeds against an oracle's (each seed -> value, or bare values), as data: the
    test the seeds allow (paired over shared seeds: seed s gives encoder and oracle the same
    batches; else Welch's), the difference of means, the two-sided p, and whether the encoder is
    significantly lower / higher at ``ALPHA``; ``test`` None when no test applies (fewer than 2
    seeds, or no spread)."""
    from .statistics import compare

    c = compare(values, oracle)
    if c is None:
        return {"test": None, "diff": None, "p": None, "n": None, "lower": False, "higher": False}
    sig = c.p < ALPHA
    return {"test": c.test, "diff": c.diff, "p": c.p, "n": c.n, "lower": sig and c.diff < 0, "higher": sig and c.diff > 0}


def oracle_comparisons(folder) -> dict[str, Any]:
    """Each encoder's best configuration (its final seeds' validation losses) against the ``step``
    and ``task+step`` oracles (paired over the seeds they share), and the reading that follows: ``{"alpha", "refs", "encoders": {enc:
    {"val_loss": [...], "vs": {mode: against(...)}, "reading": str}}}``; empty without
    ``oracles.json`` or ``final.json``."""
    from ..results.records import read_final, read_oracles
    from .statistics import by_seed

    oracles = read_oracles(folder)
    final = read_final(folder)
    refs = [m for m in ("step", "task+step") if m in oracles.modes]
    if not refs or not final:
        return {}
    seeds = {m: oracles.modes[m].by_seed() for m in refs}
    cond = oracles.train.get("conditioning", "bos")  # oracles.json from before the setting: bos
    out: dict[str, Any] = {"alpha": ALPHA, "refs": refs, "conditioning": cond, "encoders": {}}
    for enc, roles in final.items():
        best = roles.get("best")
        values = [v for v in (best.val_loss if best else []) if v is not None]
        keyed = by_seed(best.val_loss, best.seeds) if best else []
        vs = {m: against(keyed, seeds[m]) for m in refs}
        reading = ""
        for m in refs:
            if m == "step":
                reading = "more than training progress" if vs[m]["lower"] else "no sign of more than training progress"
            elif vs[m]["lower"]:
                reading += "; below the task+step oracle"
            elif not vs[m]["higher"]:
                reading += "; not distinguishable from the task+step oracle"
        theirs = best.conditioning if best else None
        if theirs and theirs != cond:
            reading += f"; not like for like: its emulator conditioned `{theirs}`, the oracles' `{cond}`"
        out["encoders"][enc] = {"val_loss": values, "vs": vs, "reading": reading.lstrip("; ")}
    return out
