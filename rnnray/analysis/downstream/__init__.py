"""Downstream tasks (SPEC.md section 7): what a frozen representation tells about its RNN.

A small MLP (the *predictor*) is trained on frozen, L2-normalised 16-d representations of zoo
snapshots and tested on RNNs whose tasks it never saw:

* **data**: the encoders' train split plus one half of the OOD tasks (``ood_train``) train the
  predictor; it is tested on the other half (``ood_test``) and on the validation split. The splits
  are :mod:`rnnray.emulation.splits`' (by distinct task, so no task crosses from training to testing);
* **targets** (per snapshot)

  ====== =============== ======================= ===============================
  zoo    target          output and loss         metrics
  ====== =============== ======================= ===============================
  A      ``task``        3 x 6-way, CE (mean)    ``exact_acc`` (all three right),
                                                 ``head_acc`` (mean per offset)
  A      ``accuracy``    scalar, MSE             ``r2``, ``mae``
  B      ``angle``       (cos, sin), MSE         ``err_deg`` (mean abs. wrapped)
  B      ``accuracy``    scalar, MSE             ``r2``, ``mae``  (held-out acc.)
  B      ``gap``         scalar, MSE             ``r2``, ``mae``  (held-out - train loss)
  B      ``step``        n_snapshots-way, CE     ``acc``
  ====== =============== ======================= ===============================

Modelling choices written down:

* **Predictor**: ``Linear(16, 64) -> GELU -> Linear(64, 64) -> GELU -> Linear(64, out)``, one per
  target and seed; AdamW (lr 3e-3, weight decay 1e-4), minibatches of 256 rows drawn with
  replacement, 2,000 steps with a cosine learning-rate decay to zero. A *fixed* number of steps
  and no early stopping: the test splits must never choose anything, and there is no third split
  to choose on. Fixed settings for every encoder, so differences come from the representations.
  The seeds' predictors of one target train side by side (stacked parameters, ``torch.func.vmap``),
  which gives exactly what training them one by one gives, at about the cost of one on a GPU.
* **Scalar targets are standardised** (mean and standard deviation of the training rows) for the
  loss, so one learning rate suits accuracies in [0, 1] and loss gaps alike; metrics are computed
  in the target's own units.
* **Angles** are regressed as (cos, sin) so 359 and 1 degrees are neighbours; the predicted angle
  is ``atan2(sin, cos)`` (the norm of the output is ignored).
* **Training step** classes are the zoo's snapshot steps from its manifest, in order, so the
  number of classes is the zoo's, not the 9 of the paper's schedule if a zoo was built otherwise.
* **Seeds**: every figure is repeated for predictor seeds (default 0, 1, 2): the seed sets the
  MLP's initialisation and its minibatch draws. Reported as mean, standard deviation across seeds
  (``ddof=1``; 0 with a single seed) and the per-seed values.
* **Per-offset accuracy can fall below chance, and that is not a defect.** A representation that
  carries no task information (collapsed, or an encoder's snapshots at initialisation) leaves the
  predictor one thing to learn: each offset's most frequent value in its training rows. The test
  splits hold *other* tasks, drawn without replacement from the same 216 (validation) or the most
  balanced ones (OOD test), so that value is rarer there than in training and ``head_acc`` lands
  below 1/6: about 0.14 (validation) and 0.09 (OOD) on average over 324-RNN zoos drawn like ours,
  exactly the majority value's test frequency (``tests/test_downstream.py`` checks this, and that
  representations which do encode the task score near 1, which a label or split mix-up would
  not). Random representations escape the trap because the predictor memorises their noise and
  guesses near uniformly. So ``head_acc`` under chance reads as "no per-offset information",
  the same verdict as at chance, not as a broken pipeline.
* **R^2** is ``1 - SS_res / SS_tot`` about the *test* set's own mean (a predictor that outputs the
  test mean scores 0; a constant training mean can score below 0 on a shifted OOD split); it is
  undefined (NaN, ``null`` in JSON) when the test targets are constant.

Baselines, on the same splits and predictor:

* **random**: a Gaussian 16-d vector per snapshot, unit-normalised, from a fixed seed (independent
  of the predictor seed): the chance level of every metric on these splits.
* **supervised**: an encoder (``stats`` by default, kept small: width 64, depth 1, about 27k
  parameters with the head) trained *end to end* on the downstream
  target with the same head, loss, data and steps (encoder -> L2 normalisation -> head): what the
  weights tell when the representation is shaped for the target rather than for emulation.
  ``stats``' block statistics have no parameters, so they are computed once for all rows and only
  its MLP trains, which is exactly end-to-end training of that encoder and far cheaper. No
  permutation augmentation (``stats`` is invariant; another encoder named here trains without it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from .evaluation import DEFAULT_SEEDS, evaluate_all, evaluate_representations, stats_features, supervised_baseline
from .metrics import COLLAPSED_BELOW, accuracy, angle_difference_deg, angle_error_deg, cos_sin_to_deg, exact_task_accuracy, mae, participation_ratio, r2
from .predictors import (RANDOM_SEED, Normalize, PredictorConfig, make_head, random_representations, representations,
                         summarise_seeds, train_predictor, train_predictors)
from .targets import (EVAL_SPLITS, TARGETS, TRAIN_SPLITS, Target, chance_levels, split_rows, target_columns, target_values,
                      targets_for)


__all__ = ["COLLAPSED_BELOW", "chance_levels", "participation_ratio", "DEFAULT_SEEDS", "EVAL_SPLITS", "RANDOM_SEED", "SPLIT_LABELS", "TRAIN_SPLITS", "Normalize", "PredictorConfig",
           "TARGETS", "Target", "target_columns", "accuracy", "angle_difference_deg", "angle_error_deg", "cos_sin_to_deg", "evaluate_all",
           "evaluate_representations", "exact_task_accuracy", "flat_metrics", "jsonable", "mae", "make_head",
           "metric_columns", "r2", "random_representations", "representations", "split_rows", "stats_features",
           "summarise_seeds", "supervised_baseline", "target_values", "targets_for", "train_predictor", "train_predictors"]

SPLIT_LABELS = {"ood_test": "ood", "val": "val"}


def metric_columns(zoo_kind: str, snapshot_steps: Sequence[int] | None = None) -> list[tuple[str, str, str, str]]:
    """(column name, target, split, metric) for every downstream figure, OOD test first."""
    cols = []
    for split in ("ood_test", "val"):
        for t in targets_for(zoo_kind, snapshot_steps):
            for m in t.metrics:
                cols.append((f"ds_{SPLIT_LABELS[split]}_{t.name}_{m}", t.name, split, m))
    return cols


def flat_metrics(result: Mapping, zoo_kind: str, snapshot_steps: Sequence[int] | None = None) -> dict[str, float | None]:
    """One result -> ``{ds_<split>_<target>_<metric>: mean, ..._std: std}`` (None where undefined)."""
    row: dict[str, float | None] = {}
    for col, target, split, metric in metric_columns(zoo_kind, snapshot_steps):
        cell = result.get("results", {}).get(target, {}).get(split, {}).get(metric)
        for suffix, key in (("", "mean"), ("_std", "std")):
            v = None if cell is None else cell.get(key)
            row[col + suffix] = v if v is not None and math.isfinite(v) else None
    return row


def jsonable(obj):
    """NaN and infinities -> None, numpy scalars -> Python, recursively (strict JSON)."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj
