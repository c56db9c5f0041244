"""Benchmarks and the GPU check: ``python -m rnnray.bench zoo|train|profile|device|schedule``.

One module per subcommand, each with its ``add_parser``: :mod:`rnnray.bench.zoo` (zoo-training
throughput, batched vs one RNN at a time), :mod:`rnnray.bench.train` (the emulation-training step
of every encoder), :mod:`rnnray.bench.profile` (where a step's time goes) and
:mod:`rnnray.bench.device` (the GPU check, without Ray) and :mod:`rnnray.bench.schedule` (how busy a
sweep keeps a simulated 8-GPU node's slots, per-encoder experiments against the one queue).
"""

from __future__ import annotations

from ..cli import ArgumentParser
from . import device as bench_device, profile as bench_profile, schedule as bench_schedule, train as bench_train
from . import zoo as bench_zoo

SUBCOMMANDS = {"zoo": bench_zoo.add_parser, "train": bench_train.add_parser, "profile": bench_profile.add_parser,
               "device": bench_device.add_parser, "schedule": bench_schedule.add_parser}


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m rnnray.bench", description="rnnray benchmarks and the GPU check")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in SUBCOMMANDS.values():
        add(sub)
    args = parser.parse_args(argv)
    return args.func(args)

