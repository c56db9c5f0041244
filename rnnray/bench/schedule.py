"""``python -m rnnray.bench schedule``: how busy a sweep keeps a node's slots, per-encoder
experiments against the one queue, side by side in one run, on a simulated 8-GPU node.

What is measured is the schedule, not the arithmetic: a ``ray.cluster_utils.Cluster`` head node
declares ``--gpus`` logical GPUs (and CPUs enough for every slot), the trials are tiny encoders
trained a few steps on a tiny zoo, on the CPU. Each case is a real sweep (``run_sweep``: Tune,
Optuna, ASHA, final seeds, Ray Train workers asking for ``gpus_per_worker``); the slots are the
GPUs over one trial's GPUs (``tune.max_concurrent_trials``), and the utilisation is the sweep's
own (:mod:`rnnray.sweep.timeline`: busy slot-seconds over slots x first start to last end). A
fractional ``gpus_per_worker`` (0.25: four trials per GPU) is measured the same way.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from ..encoders.catalog import ENCODER_NAMES, PAPER_PARAMS, check_name

SCHEDULES = ("per_encoder", "one_queue")
# a case's schedule may carry a modifier: "one_queue+nice" (training workers at nice 19)
MODIFIERS = {"nice": ("resources", "worker_nice", 19)}
PAPER_SIX = tuple(n for n in ENCODER_NAMES if n in PAPER_PARAMS)  # the default: the paper's six (not dlpg)
TINY_ZOO = dict(kind="formal_languages", runs=8, steps=100, seed=3, snapshot_steps=[0, 50, 100], accuracy_samples=100,
                stored_sequences=8, resources=dict(actors=1, chunk=8))
TINY_TRAIN = dict(steps=40, eval_every=10, batch_size=8, emulator_hidden=16, eval_sequences=2)


def sweep_config(out: Path, zoo: str, schedule: str, encoders, samples: int, seeds: int, gpus: float,
                 gpus_per_worker: float, train: dict | None = None):
    """One case: a sweep of ``encoders`` with ASHA and final seeds, as many slots as the GPUs hold."""
    from ..sweep import SweepConfig

    slots = max(1, int(round(gpus / gpus_per_worker)))
    base, *modifiers = schedule.split("+")
    data = {
        "name": f"{schedule.replace('+', '-')}-{gpus_per_worker:g}", "results": str(out / "results"), "zoo": zoo,
        "encoders": list(encoders), "budget": 20000, "train": dict(train or TINY_TRAIN),
        "tune": {"samples_per_encoder": samples, "max_concurrent_trials": slots, "scheduler": "asha", "grace_period": 1,
                 "schedule": base},
        "final": {"seeds": seeds}, "oracles": {"modes": []}, "downstream": {"enabled": False},
        "resources": {"workers": 1, "gpus_per_worker": gpus_per_worker, "cpus_per_worker": 1,
                      "process_group_backend": "gloo"}}
    for m in modifiers:
        section, key, value = MODIFIERS[m]
        data[section][key] = value
    return SweepConfig.model_validate(data)


def check_schedule(label: str) -> str:
    """A schedule (``one_queue``) with modifiers (``+nice``), or ValueError naming what is unknown."""
    base, *modifiers = label.split("+")
    if base not in SCHEDULES:
        raise ValueError(f"unknown schedule {base!r} in {label!r}; choose from {', '.join(SCHEDULES)}")
    for m in modifiers:
        if m not in MODIFIERS:
            raise ValueError(f"unknown modifier {m!r} in {label!r}; choose from {', '.join(MODIFIERS)}")
    return label


def measure(cfg, label: str) -> dict:
    """Run one case's sweep; its slots, trials, wall time and utilisation."""
    from ..results.folder import SweepFolder
    from ..sweep import run_sweep
    from ..sweep.timeline import schedule_summary

    t0 = time.time()
    folder = SweepFolder(run_sweep(cfg, progress=False, verbose=0))
    s = schedule_summary(folder)
    return {"schedule": label, "gpus_per_worker": cfg.resources.gpus_per_worker,
            "slots": s["slots"], "trials": s["runs"], "wall_s": time.time() - t0,
            "utilisation": s["utilisation"], "busy_slot_s": s["busy_slot_s"], "available_slot_s": s["available_slot_s"],
            "idle_before_last_start_slot_s": s["idle_before_last_start_slot_s"], "idle_tail_slot_s": s["idle_tail_slot_s"],
            "handover_slot_s": s["handover_slot_s"], "handover_median_s": s["handover_median_s"], "sweep": str(folder.path)}


def bench_schedule(out: Path, encoders, samples: int, seeds: int, gpus: int, fractions, schedules=SCHEDULES,
                   train: dict | None = None, log=print) -> dict:
    """Every (fraction, schedule) case on one simulated node; the cluster is started and stopped here."""
    import ray
    from ray.cluster_utils import Cluster

    from ..config import parse_zoo
    from ..runtime.connect import free_loopback_port, init_ray
    from ..zoo import build

    slots = max(int(round(gpus / f)) for f in fractions)
    ray.shutdown()
    port = free_loopback_port()  # the dashboard: another Ray on this machine may hold 8265
    # Ray Train's placement-group cleaner removes a run's worker group when its controller dies (a
    # trial ASHA stopped): it asks the state API, so the node serves one, and the job's workers are
    # told which cluster to ask (with other Ray instances on the machine it would guess). Without
    # it the stopped trials' GPU shares stayed reserved and the next trials waited for ever.
    cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=slots + 2, num_gpus=gpus, include_dashboard=True,
                                                                dashboard_host="127.0.0.1", dashboard_port=port))
    try:
        job_env = {"env_vars": {"RAY_ADDRESS": cluster.address}}
        init_ray(cluster.address, log_to_driver=False, runtime_env=job_env)
        zoo = parse_zoo({**TINY_ZOO, "path": str(out / "zoo")})
        build(zoo, progress=False)
        cases = []
        for f in fractions:
            for schedule in schedules:
                log(f"{schedule}, gpus_per_worker {f:g}: {len(encoders)} encoders x {samples} trials, {seeds} final seeds ...")
                cfg = sweep_config(out, zoo.path, schedule, encoders, samples, seeds, gpus, f, train)
                ray.shutdown()  # each case its own job on the node: its workers' environment is the case's
                init_ray(cluster.address, log_to_driver=False, runtime_env=job_env, worker_nice=cfg.resources.worker_nice)
                cases.append(measure(cfg, schedule))
                log(f"  utilisation {cases[-1]['utilisation']:.1%} over {cases[-1]['slots']} slots, {cases[-1]['wall_s']:.0f} s")
    finally:
        ray.shutdown()
        cluster.shutdown()
    return {"gpus": gpus, "encoders": list(encoders), "samples_per_encoder": samples, "final_seeds": seeds,
            "cases": cases, "target": 0.9}


def format_schedule(r: dict) -> str:
    lines = [f"Simulated node: {r['gpus']} GPUs; {len(r['encoders'])} encoders x {r['samples_per_encoder']} trials "
             f"(ASHA) + {r['final_seeds']} final seeds per configuration", "",
             f"{'GPUs/trial':>10} {'slots':>5} {'schedule':<20} {'trials':>6} {'wall s':>8} {'utilisation':>11} "
             f"{'idle: work ahead':>16} {'idle: tail':>10} {'hand-over s':>11}"]
    for c in r["cases"]:
        avail = c["available_slot_s"] or 1.0
        handover = "-" if c.get("handover_median_s") is None else f"{c['handover_median_s']:.1f}"
        lines.append(f"{c['gpus_per_worker']:>10g} {c['slots']:>5} {c['schedule']:<20} {c['trials']:>6} "
                     f"{c['wall_s']:>8.0f} {c['utilisation']:>11.1%} {c['idle_before_last_start_slot_s'] / avail:>16.1%} "
                     f"{c['idle_tail_slot_s'] / avail:>10.1%} {handover:>11}")
    lines += ["", f"target: one queue at least {r['target']:.0%}; +nice: training workers at nice 19 "
              "(resources.worker_nice)",
              "idle: work ahead = slots idle before the last trial started (hand-overs, final seeds waiting for their "
              "search); tail = after it; hand-over = median wait of a freed slot for its next trial"]
    return "\n".join(lines)


def add_parser(sub) -> None:
    p = sub.add_parser("schedule", help="slot utilisation: per-encoder experiments vs the one queue, on a simulated GPU node")
    p.add_argument("--encoders", nargs="+", default=list(PAPER_SIX),
                   help="built-in names, plug-in import paths (package.module:Class) or entry points; default: the paper's six")
    p.add_argument("--samples", type=int, default=16, help="search trials per encoder")
    p.add_argument("--seeds", type=int, default=2, help="final seeds per configuration")
    p.add_argument("--gpus", type=int, default=8, help="logical GPUs of the simulated node")
    p.add_argument("--fractions", type=float, nargs="+", default=[1.0, 0.25], help="gpus_per_worker of each case")
    p.add_argument("--schedules", nargs="+", default=list(SCHEDULES),
                   help="the cases' schedules, each per_encoder or one_queue, optionally with +nice "
                        "(one_queue+nice: training workers at nice 19); default: per_encoder one_queue")
    p.add_argument("--steps", type=int, default=TINY_TRAIN["steps"], help="training steps of every trial")
    p.add_argument("--out", default=None, help="folder for the zoo and the sweeps (default: a temporary one)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.set_defaults(func=_run_schedule)


def check_args(args) -> None:
    """One line naming the option, before a cluster starts."""
    from ..cli import UsageError

    for e in args.encoders:
        try:
            check_name(e)  # the config's check: a built-in, an import path or a registered plug-in; imports nothing
        except ValueError as err:
            raise UsageError(f"--encoders: {err}") from None
    for name, value, low in (("--samples", args.samples, 1), ("--seeds", args.seeds, 0), ("--gpus", args.gpus, 1),
                             ("--steps", args.steps, 1)):
        if value < low:
            raise UsageError(f"{name}: must be at least {low}, got {value}")
    for label in args.schedules:
        try:
            check_schedule(label)
        except ValueError as err:
            raise UsageError(f"--schedules: {err}") from None
    if any(not 0 < f <= args.gpus for f in args.fractions):
        raise UsageError(f"--fractions: each must be above 0 and at most --gpus ({args.gpus}), got {args.fractions}")
    if args.out:
        from ..paths import check_not_inside, check_writable

        # the zoo is written to OUT/zoo: the zoo build refuses a folder inside a results, zoo or sweep
        # folder, which it would only find out after the cluster had started
        check_not_inside(Path(args.out) / "zoo", "--out", ("zoo", "sweep", "results"))
        check_writable(args.out, "--out")


def _run_schedule(args) -> int:
    from ..cli import friendly_errors

    with friendly_errors():
        check_args(args)
        out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="rnnray-bench-schedule-"))
        log = (lambda s: print(s, file=sys.stderr, flush=True))
        train = {**TINY_TRAIN, "steps": args.steps, "eval_every": max(1, args.steps // 4)}
        r = bench_schedule(out, args.encoders, args.samples, args.seeds, args.gpus, args.fractions, args.schedules,
                           train=train, log=log)
    print(json.dumps(r) if args.json else format_schedule(r))
    return 0
