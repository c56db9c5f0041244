"""Emulation training (SPEC.md section 6) on Ray Train, and the same loop in-process for tests.

An encoder and an emulator train together: the encoder turns each snapshot's weights into a
16-number representation, the emulator must reproduce the snapshot's stored output distributions
on one of its stored sequences from that representation alone; the loss is total variation.

Entry points:

* :func:`fit` — a ``ray.train.torch.TorchTrainer`` run (data-parallel DDP workers, gloo on CPU,
  NCCL on GPU); works on its own or from inside a Ray Tune function trainable (``tune_trial=True``).
* :func:`train_local` — the identical loop in this process, no Ray at all; fast unit tests.
* :func:`load_checkpoint` — rebuild the trained encoder + emulator from a checkpoint directory.
* ``python -m rnnray.train CONFIG.yaml --encoder NAME [--set key=value ...]``.

Choices made here (beyond SPEC.md):

* One loop (:func:`run_loop`) serves both entry points through a small backend object (rank,
  world size, device, data, collectives, reporting), so the unit-tested loop *is* the distributed one.
* The three splits are lazy Ray Datasets filtered to their runs (:mod:`rnnray.emulation.splits`; the
  filter is pushed into the Parquet read). Each worker reads its share once into memory at start
  (a zoo is about 1 GB at paper scale) and samples batches from there, so there are no per-epoch
  ``streaming_split`` barriers that could deadlock against DDP's collectives. The read tasks need
  a free CPU each: leave one (e.g. ``cpus_per_worker: 0.5`` on a 2-CPU machine). They are not
  materialised on the driver, because inside a Tune trial that would run in the trial's placement
  group. Ray Data splits only ``train`` across workers (``streaming_split(equal=True)``, which drops at
  most ``workers - 1`` rows so every worker holds the same number); every worker receives the
  whole validation and OOD sets and evaluates a fixed round-robin share of them.
* Batches, sequence choice and augmentation: see :mod:`rnnray.emulation.batches` (randomness keyed on the row,
  so results do not depend on which worker holds which row). The global batch is divided evenly
  among workers; DDP averages the gradients, so the step equals a one-worker step on the whole batch.
* Evaluation every ``eval_every`` steps and at the last step (none at step 0): mean total variation
  over every (snapshot, first-k sequence) pair of the validation and OOD splits, summed across
  workers with ``all_reduce``. ``train_loss`` is the mean training loss since the previous report.
* Every evaluation is reported by every worker (``ray.train.report`` is a barrier) with a
  checkpoint written by rank 0; ``CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=
  "val_loss", mode min)`` keeps the best-validation checkpoint, and Ray Train additionally keeps
  the latest one, which is what a restart (``FailureConfig``) resumes from.
* Resuming restores model, optimiser, step, metric history and best-so-far; because batches are a
  function of the step, the continued run sees the batches it would have seen (given the same
  shards). Re-running :func:`fit` with the same ``storage_path`` and ``name`` resumes too; the
  default name hashes the settings, so a changed config starts a fresh run.
* The emulator's conditioning (``conditioning``: ``bos``, the paper's, or ``every_step``) is part of
  the config and of the checkpoint's ``meta["emulator"]``, so a checkpoint rebuilds the emulator it
  was trained with (one without the field is ``bos``). Gradients are clipped to ``grad_clip`` on the
  encoder's and on the emulator's norm separately (``grad_clip_scope: separate``, the authors' code),
  or on one global norm (``global``).
* ``encoder_name="constant"`` trains the emulator with the ``constant`` baseline of the encoder
  registry (:mod:`rnnray.encoders.baseline`): the loss a real representation must beat.
* A run is resolved once, on the driver, into a :class:`RunPlan` (:func:`plan_run`: the manifest
  read, the split computed, the budget solved, the config validated); the plan travels to the
  workers as it is.

The package, one job per module: :mod:`.model` (encoder + emulator, encoder checks), :mod:`.plan`
(what a run needs, resolved once),
:mod:`.checkpoint` (the format), :mod:`.backends` (in-process or Ray Train worker), :mod:`.loop`
(the loop), :mod:`.drivers` (:func:`fit`, :func:`train_local`), :mod:`.command` (the CLI).
"""

from .checkpoint import FORMAT, checkpoint_conditioning, checkpoint_dir_name, load_checkpoint, read_checkpoint, save_checkpoint
from .drivers import TrainResult, default_run_name, fit, train_local
from .backends import split_tables, worker_share
from .loop import run_loop, train_loop_per_worker, train_step
from .model import (BASELINE, EMULATOR_LAYERS, SPLIT_NAMES, build_model, check_encoder_name, clip_gradients,
                    resolve_encoder)
from .plan import RunPlan, ZooPlan, plan_run

__all__ = ["BASELINE", "EMULATOR_LAYERS", "FORMAT", "SPLIT_NAMES", "RunPlan", "TrainResult", "ZooPlan", "build_model",
           "check_encoder_name", "checkpoint_conditioning", "checkpoint_dir_name", "clip_gradients", "default_run_name", "fit", "load_checkpoint", "plan_run",
           "read_checkpoint", "resolve_encoder", "run_loop", "save_checkpoint", "split_tables",
           "train_local", "train_loop_per_worker", "train_step", "worker_share"]
