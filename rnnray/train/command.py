"""``python -m rnnray.train CONFIG.yaml --encoder NAME``."""

from __future__ import annotations

import argparse
import json

from ..encoders import ENCODERS
from .drivers import fit
from .model import BASELINE
from .plan import plan_run


def main(argv=None) -> None:
    from ..cli import friendly_errors
    from ..config import load_train_config

    p = argparse.ArgumentParser(prog="python -m rnnray.train", description="Train one encoder by emulation on Ray Train.")
    p.add_argument("config", help="train config YAML (see configs/train-tiny.yaml)")
    p.add_argument("--encoder", required=True, help=f"one of {', '.join(ENCODERS)} (or {BASELINE!r}, the baseline)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    p.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or a local instance)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--verbose", action="store_true", help="also show Ray's routine output (otherwise kept in the Ray session's logs)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = p.parse_args(argv)
    with friendly_errors(args.debug):
        from ..paths import check_output_dir, shipped_file

        cfg = load_train_config(shipped_file(args.config), args.set)
        plan = plan_run(args.encoder, cfg)  # every user error surfaces here, before Ray starts
        # runs go to a folder of their own: not a zoo, a sweep or a results folder, nor inside a zoo or a sweep
        check_output_dir(cfg.storage_path, "storage_path:")
    import ray

    from ..runtime.console import quiet_console

    with quiet_console(not args.verbose):
        if not ray.is_initialized():
            ray.init(address=args.address, namespace="rnnray")
        print(f"training {args.encoder} ({plan.n_params:,} parameters, {plan.zoo_kind} zoo) for {cfg.steps} steps "
              f"on {cfg.workers} worker(s)", flush=True)
        res = fit(plan)
    if args.json:
        print(json.dumps(res.to_dict()))
    else:
        print(f"encoder: {res.encoder}  parameters: {res.n_params:,}  hparams: {json.dumps(res.hparams)}")
        print(f"best validation loss: {res.best_val_loss:.4f} at step {res.best_step}  (OOD loss there: {res.best_ood_loss:.4f})")
        if res.diverged:
            print(f"stopped early, {res.diverged}")
        print(f"best checkpoint: {res.checkpoint_path}")
        print(f"run directory: {res.path}")
