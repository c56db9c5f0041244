"""The table of `bench schedule` from its two stored sweeps (the run was stopped before its 0.5 case)."""
import sys
from pathlib import Path
from rnnray.bench.schedule import format_schedule
from rnnray.results.folder import SweepFolder
from rnnray.sweep.timeline import schedule_summary

cases = []
for d, wall in zip(sys.argv[1::2], sys.argv[2::2]):
    s = schedule_summary(SweepFolder(Path(d)))
    sched = "one_queue" if "one_queue" in d else "per_encoder"
    cases.append({"schedule": sched, "gpus_per_worker": 1.0, "slots": s["slots"], "trials": s["runs"], "wall_s": float(wall),
                  **{k: s[k] for k in ("utilisation", "busy_slot_s", "available_slot_s", "idle_before_last_start_slot_s",
                                       "idle_tail_slot_s", "handover_slot_s", "handover_median_s")}})
for c in cases:
    print(f"{c['schedule']}: freed slots waited {c['handover_slot_s']:.0f} of {c['idle_before_last_start_slot_s']:.0f} idle slot-seconds ahead of work; "
          f"busy over available less those waits: {c['busy_slot_s'] / (c['available_slot_s'] - c['handover_slot_s']):.1%}")
print(format_schedule({"gpus": 8, "encoders": ["flat", "stats", "transformer", "dws", "noninteractive", "interactive"],
                       "samples_per_encoder": 16, "final_seeds": 2, "cases": cases, "target": 0.9}))
