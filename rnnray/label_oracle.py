"""``python -m rnnray.label_oracle SWEEP.yaml [--seeds N] [--steps N] [--modes ...] [--json] [--out FILE]``:
the label oracles of a sweep's zoo and settings, printed as a table (the work is
:mod:`rnnray.analysis.oracles`; this module is only the command)."""

from __future__ import annotations

import argparse
import json
import sys

import torch

from .analysis.oracles import MODES, run_oracles, sweep_plan
from .cli import UsageError, friendly_errors
from .paths import check_output_file
from .report.sections import oracle_result_text
from .results.atomic import atomic_write_text
from .sweep.settings import load_sweep

DESCRIPTION = ("What an encoder could reach on a sweep's zoo and settings: the emulator trained on learned "
               "embeddings of known labels instead of a representation.")


def check_sizes(plan, runs: int, memory: int | None = None) -> None:
    """Before any oracle trains: a batch the train split can fill, and this process's memory (the
    oracles train here one after another, each on the whole batch, keeping every run's history;
    ``memory`` default: this machine's)."""
    from .train.preflight import check_batch, check_worker, history_bytes, worker_needs, zoo_rows

    cfg = plan.train
    rows, held = zoo_rows(plan.zoo, cfg.eval_sequences)
    needs = worker_needs(plan.zoo_kind, cfg, 0, 1, held)  # an oracle's encoder is a few label embeddings
    needs["steps"] = history_bytes(cfg.steps, cfg.eval_every, runs)
    many = "--seeds" if runs > cfg.evaluations else "--steps"
    check_worker(needs, memory, prefix="train.", fields={"steps": many, "zoo": "zoo"})
    check_batch(cfg.batch_size, rows["train"], "train.batch_size")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rnnray.label_oracle", description=DESCRIPTION)
    p.add_argument("sweep", help="sweep YAML: its zoo (built) and its train settings are used")
    p.add_argument("--seeds", type=int, default=None, help="seeds per oracle, from final.first_seed on (default: the sweep's final.seeds)")
    p.add_argument("--steps", type=int, default=None, help="emulation steps (default: the sweep's train.steps)")
    p.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, from {', '.join(MODES)}")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--out", default=None, help="also write the JSON result to this file")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = p.parse_args(argv)
    with friendly_errors(args.debug):
        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        bad = [m for m in modes if m not in MODES]
        if bad or not modes:
            raise UsageError(f"--modes: {bad[0] if bad else args.modes!r} is not one of {', '.join(MODES)}")
        for name in ("seeds", "steps", "threads"):
            value = getattr(args, name)
            if value is not None and value < 1:
                raise UsageError(f"--{name}: must be at least 1 (got {value})")
        cfg = load_sweep(args.sweep)
        if args.out:  # proven before the oracles train, so their result is never lost to a path
            check_output_file(args.out, "--out")
        seeds = args.seeds or max(cfg.final.seeds, 1)
        if args.steps is not None:
            cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"steps": args.steps})})
        plan = sweep_plan(cfg)
        check_sizes(plan, seeds * len(modes))
        if args.threads:
            torch.set_num_threads(args.threads)
        first = cfg.final.first_seed  # the final runs' seeds, so oracle and encoder seeds pair up
        result = run_oracles(plan, [first + i for i in range(seeds)], modes,
                             progress=None if args.json else lambda line: print(line, flush=True))
        text = json.dumps(result)
        if args.out:
            atomic_write_text(args.out, text + "\n")
        print(text if args.json else oracle_result_text(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
