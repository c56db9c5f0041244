"""``python -m rnnray.zoo build CONFIG.yaml [--set key=value ...]``, ``python -m rnnray.zoo info PATH``, and the
authors' NumPy release both ways: ``import-npy SRC_DIR --kind KIND --out ZOO_DIR``, ``export-npy ZOO_DIR --out OUT_DIR``."""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from ..cli import friendly_errors
from ..runtime.connect import init_ray
from ..config import load_zoo_config


def cmd_build(args) -> None:
    from ..paths import shipped_file
    from .builder import check_destination
    from .preflight import check_actor, check_output

    cluster = bool(args.address or os.environ.get("RAY_ADDRESS"))
    cfg = load_zoo_config(shipped_file(args.config), args.set)
    check_destination(cfg)  # before Ray starts: a path that cannot hold this zoo fails in one line
    check_output(cfg)  # the shards fit the disk, the run ids this driver's memory
    if not cluster:
        check_actor(cfg)  # a chunk fits this machine's memory (a cluster's largest node: once connected)
    import ray

    from ..runtime.console import quiet_console

    with quiet_console(not args.verbose):
        if not ray.is_initialized():
            init_ray(args.address, namespace="rnnray", log_to_driver=True)
        if cluster:
            check_actor(cfg)
        from . import build

        manifest = build(cfg, progress=not args.no_progress)
    print(f"zoo: {cfg.path}  ({manifest['kind']}, {manifest['runs']} runs, {manifest['rows']} rows, "
          f"{len(manifest['shards'])} shards, {manifest['build_seconds']} s)")


def cmd_import(args) -> None:
    from .authors import import_npy

    m = import_npy(args.src, args.kind, args.out, shard_runs=args.shard_runs)
    imp = m["imported"]
    print(f"zoo: {args.out}  ({m['kind']}, {m['runs']} runs, {m['rows']} rows, {len(m['shards'])} shards, "
          f"{m['build_seconds']} s) from {imp['source']}")
    print(f"steps: their {imp['step_mapping']['their_steps']} -> rnnray {m['snapshots']} (+{imp['step_mapping']['offset']}); "
          f"runs {'renumbered 0..' + str(m['runs'] - 1) + ' (their index kept as source_run)' if imp['runs_renumbered'] else 'kept'}")
    if imp["not_read"]:
        print(f"not read (no rnnray column): {', '.join(imp['not_read'])}")


def cmd_export(args) -> None:
    from .authors import export_npy

    export_npy(args.zoo, args.out)
    print(f"exported {args.zoo} in the authors' layout to {args.out}")


def summary(path: str) -> str:
    from .storage import load_table

    table = load_table(path, columns=None)
    import json

    manifest = json.loads(table.schema.metadata[b"rnnray.manifest"])
    kind = manifest["kind"]
    steps = table.column("step").to_numpy()
    acc = table.column("accuracy").to_numpy()
    runs = np.unique(table.column("run_id").to_numpy())
    if kind == "formal_languages":
        tasks = {tuple(t) for t in table.column("task").combine_chunks().to_numpy_ndarray().tolist()}
        task_line = f"tasks: {len(tasks)} distinct of 216"
    else:
        angles = table.column("angle").to_numpy()
        task_line = f"tasks: {len(np.unique(angles))} angles in [{angles.min():.1f}, {angles.max():.1f}] degrees"
    size = sum(s["bytes"] for s in manifest["shards"])
    lines = [
        f"zoo: {path}",
        f"kind: {kind}   source: {manifest.get('mnist_source') or '-'}"
        + (f"   imported from: {manifest['imported']['source']}" if manifest.get("imported") else ""),
        f"rows: {table.num_rows}   runs: {len(runs)}   shards: {len(manifest['shards'])}   size: {size / 2**20:.1f} MiB",
        task_line,
        f"parameters per RNN: {manifest['layout']['num_params']}",
        "accuracy per step:",
        f"  {'step':>6} {'mean':>7} {'median':>7} {'min':>7} {'max':>7}",
    ]
    for s in np.unique(steps):
        a = acc[steps == s]
        lines.append(f"  {s:>6d} {a.mean():7.3f} {np.median(a):7.3f} {a.min():7.3f} {a.max():7.3f}")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m rnnray.zoo", description=__doc__)
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="train a zoo with Ray Data and write it as Parquet")
    b.add_argument("config")
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    b.add_argument("--address", default=None, help="Ray cluster address (default: start or join a local one)")
    b.add_argument("--no-progress", action="store_true")
    b.add_argument("--verbose", action="store_true", help="also show Ray's routine output (otherwise kept in the Ray session's logs)")
    i = sub.add_parser("info", help="summarise a built zoo")
    i.add_argument("path")
    im = sub.add_parser("import-npy", help="import the authors' NumPy zoo folder (SPEC.md section 8) as an rnnray zoo")
    im.add_argument("src", metavar="SRC_DIR")
    im.add_argument("--kind", required=True, choices=("formal_languages", "mnist"))
    im.add_argument("--out", required=True, metavar="ZOO_DIR", help="a new or empty folder")
    im.add_argument("--shard-runs", type=int, default=64, help="runs per Parquet shard (default 64)")
    ex = sub.add_parser("export-npy", help="write an rnnray zoo in the authors' NumPy layout")
    ex.add_argument("zoo", metavar="ZOO_DIR")
    ex.add_argument("--out", required=True, metavar="OUT_DIR", help="a new or empty folder")
    args = p.parse_args(argv)
    with friendly_errors(args.debug):
        if args.cmd == "build":
            cmd_build(args)
        elif args.cmd == "import-npy":
            cmd_import(args)
        elif args.cmd == "export-npy":
            cmd_export(args)
        else:
            print(summary(args.path))


if __name__ == "__main__":
    main(sys.argv[1:])
