"""``python -m rnnray.train CONFIG.yaml --encoder NAME``.

A run that ends without a checkpoint (it diverged before its first evaluation) exits with code 1 and
one line saying why: a command that printed "best checkpoint: None" and exit code 0 would let a
script take a run that trained nothing for a finished one."""

from __future__ import annotations

import argparse
import json
import os

from ..encoders import ENCODERS
from ..errors import RunFailed
from ..runtime.connect import init_ray
from .drivers import fit
from .model import BASELINE, check_plugin
from .plan import ZooPlan, plan_run


def main(argv=None) -> None:
    from ..cli import friendly_errors
    from ..config import load_train_config

    p = argparse.ArgumentParser(prog="python -m rnnray.train", description="Train one encoder by emulation on Ray Train.")
    p.add_argument("config", help="train config YAML (see configs/train-tiny.yaml)")
    p.add_argument("--encoder", required=True, help=f"one of {', '.join(ENCODERS)} (or {BASELINE!r}, the baseline), a "
                                                    "plug-in's import path package.module:Class, or a registered plug-in's name")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    p.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or a local instance)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--verbose", action="store_true", help="also show Ray's routine output (otherwise kept in the Ray session's logs)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = p.parse_args(argv)
    with friendly_errors(args.debug):
        from ..paths import check_output_dir, shipped_file
        from .preflight import check_run

        cfg = load_train_config(shipped_file(args.config), args.set)
        zoo = ZooPlan.open(cfg.zoo, cfg.split_seed, split=cfg.split)
        check_plugin(args.encoder, cfg, zoo.root, zoo.weights_layout, zoo.kind)  # a plug-in tried on the zoo's RNNs
        plan = plan_run(args.encoder, cfg, zoo=zoo)  # every user error (the zoo's checksums too) surfaces here, before Ray starts
        # runs go to a folder of their own: not a zoo, a sweep or a results folder, nor inside a zoo or a sweep
        check_output_dir(cfg.storage_path, "storage_path:")
        remote = args.address or os.environ.get("RAY_ADDRESS")
        if not remote:
            check_run(plan)  # sizes and workers against this machine, before Ray starts
    import ray

    from ..runtime.console import quiet_console

    with quiet_console(not args.verbose):
        if not ray.is_initialized():
            init_ray(args.address, namespace="rnnray")
        if remote:
            with friendly_errors(args.debug):
                check_run(plan)  # the cluster's shape and largest node, before anything is scheduled
        print(f"training {args.encoder} ({plan.n_params:,} parameters, {plan.zoo_kind} zoo) for {cfg.steps} steps "
              f"on {cfg.workers} worker(s)", flush=True)
        res = fit(plan)
    if args.json:
        print(json.dumps(res.to_dict()))
    elif res.checkpoint_path is None:
        print(f"run directory: {res.path}")
    else:
        print(f"encoder: {res.encoder}  parameters: {res.n_params:,}  hparams: {json.dumps(res.hparams)}")
        print(f"best validation loss: {res.best_val_loss:.4f} at step {res.best_step}  (OOD loss there: {res.best_ood_loss:.4f})")
        if res.diverged:
            print(f"stopped early, {res.diverged}")
        print(f"best checkpoint: {res.checkpoint_path}")
        print(f"run directory: {res.path}")
    with friendly_errors(args.debug):
        if res.checkpoint_path is None:
            why = f"{res.diverged}; lower lr" if res.diverged else "no evaluation was reported"
            raise RunFailed(f"{args.encoder}: the run left no usable checkpoint ({why}); its folder: {res.path}")
