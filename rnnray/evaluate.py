"""``python -m rnnray.evaluate RESULTS_DIR``: the downstream evaluation of a sweep's best encoders.

The work is :mod:`rnnray.analysis.evaluate` (it writes ``downstream.json`` and the columns of
``summary.csv``); this command then writes ``summary.md`` (:mod:`rnnray.report.summary`) and prints
the OOD-test table."""

from __future__ import annotations

import argparse
import sys

from .analysis.downstream import PredictorConfig
from .analysis.evaluate import check_device, evaluate_sweep, read_json, resolve
from .cli import UsageError, friendly_errors
from .paths import check_writable
from .report.downstream import summary_lines
from .report.summary import write_summary_md
from .results.folder import SweepFolder


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m rnnray.evaluate",
                                description="Downstream evaluation of a sweep's best encoders (frozen representations) and baselines.")
    p.add_argument("results", help="a sweep folder, or a results directory (its latest sweep)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="predictor seeds (default 0 1 2)")
    p.add_argument("--steps", type=int, default=None, help=f"optimisation steps per predictor (default {PredictorConfig.steps})")
    p.add_argument("--supervised-encoder", default=None, help="encoder of the end-to-end supervised baseline (default stats)")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = p.parse_args(argv)
    with friendly_errors(args.debug):
        if args.steps is not None and args.steps < 1:
            raise UsageError("--steps must be at least 1")
        if args.seeds is not None:
            from .config import predictor_seeds

            try:
                predictor_seeds(args.seeds)
            except ValueError as e:
                raise UsageError(f"--seeds: {e}") from None
        from .encoders import ENCODERS

        if args.supervised_encoder is not None and args.supervised_encoder not in ENCODERS:
            raise UsageError(f"--supervised-encoder {args.supervised_encoder!r}: choose from {', '.join(ENCODERS)}")
        check_device(args.device)
        sweep_dir = resolve(args.results)
        read_json(SweepFolder(sweep_dir).best_json, "no best trials yet: has the sweep finished a trial?")
        check_writable(sweep_dir, "results")  # downstream.json, summary.csv and summary.md go into it
        print(f"sweep folder: {sweep_dir}", flush=True)
        doc = evaluate_sweep(sweep_dir, seeds=args.seeds, config=None if args.steps is None else PredictorConfig(steps=args.steps),
                             device=args.device, supervised_encoder=args.supervised_encoder)
        write_summary_md(sweep_dir)
    print("\n".join(summary_lines(doc)))
    print(f"\nwritten: {SweepFolder(sweep_dir).downstream_json}, summary.csv, summary.md  ({doc['seconds']:.0f} s)")


if __name__ == "__main__":
    main(sys.argv[1:])
