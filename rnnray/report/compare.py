"""One table across sweep folders: the settings in which they differ, and each encoder's final seeds
against the label oracles of its own sweep.

A study that changes one setting (the emulator's conditioning, the number of steps) runs one sweep
per value; this puts their stored results side by side, so the comparison a researcher quotes is
computed from ``sweep.json``, ``final.json``, ``oracles.json`` and ``downstream.json``, never copied by
hand. Each row is one encoder of one sweep: its validation loss over the final seeds (95 % interval),
every oracle of that sweep under the same seeds, the paired test against the step oracle, the
effective dimension of its representations, and its downstream scores beside their chance levels.

    python -m rnnray.report.compare results/conditioning-every_step-* results/conditioning-bos-*

Below it, each encoder of every later sweep against the same encoder in the first sweep: a paired
t-test over their shared final seeds when the two sweeps drew the same batches for a seed (same zoo
recipe and batch size), Welch's test otherwise.

``--verdict`` adds the paper's claims computed over the sweeps together, one sweep per zoo (a study
on zoo A and one on zoo B answer claims (a)-(e) on both zoos in one table).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..analysis.oracles import against
from ..analysis.statistics import LEVEL, by_seed, compare, mean_interval
from ..errors import UserError, WriteFailed
from ..results.folder import ResultsError, SweepFolder, resolve_sweep
from ..results.records import read_final, read_oracles

# Settings that name or place a sweep rather than change what it computes.
_NOT_SETTINGS = ("name", "results", "zoo.path", "zoo.resources", "resources", "tune.max_concurrent_trials", "trackers")


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def differing_settings(configs: list[dict]) -> list[str]:
    """Dotted keys whose values are not the same in every config (placement and naming left out)."""
    flat = [_flatten(c) for c in configs]
    keys = sorted(set().union(*flat)) if flat else []
    keep = [k for k in keys if not any(k == n or k.startswith(n + ".") for n in _NOT_SETTINGS)]
    return [k for k in keep if len({json.dumps(f.get(k), sort_keys=True) for f in flat}) > 1]


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ResultsError(f"{path}: not readable as JSON ({e.__class__.__name__})") from None


def _interval(values) -> str:
    values = [float(v) for v in values if v is not None]
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.4f} (1 seed)"
    iv = mean_interval(values)
    return f"{iv.mean:.4f} ({iv.low:.4f}, {iv.high:.4f})"


def sweep_rows(folder: SweepFolder) -> dict[str, Any]:
    """The numbers of one sweep: config, oracle modes, and per encoder its row's values."""
    if not folder.sweep_json.is_file():
        raise ResultsError(f"{folder.path}: no sweep.json; not a sweep folder")
    stored = _read_json(folder.sweep_json)
    config = stored.get("config") or {}
    final = read_final(folder)
    if not final:
        raise ResultsError(f"{folder.path}: no final.json; the sweep has no final seeds to compare")
    oracles = read_oracles(folder)
    downstream = _read_json(folder.downstream_json) if folder.downstream_json.is_file() else {}
    chance = downstream.get("chance") or {}
    rows = {}
    for enc, roles in final.items():
        best = roles.get("best")
        if best is None:
            continue
        keyed = by_seed(best.val_loss, best.seeds)
        vs_step = against(keyed, oracles.modes["step"].by_seed()) if "step" in oracles.modes else None
        fin = (downstream.get("final") or {}).get(enc) or {}
        scores = {}
        for metric in chance:
            seeds = ((fin.get("values") or {}).get(metric) or {}).get("val") or []
            scores[metric] = seeds
        rows[enc] = {"val_loss": best.val_loss, "seeds": best.seeds, "vs_step": vs_step,
                     "effective_dim": fin.get("effective_dim") or [], "scores": scores}
    modes = {m: o.val_losses for m, o in oracles.modes.items()}
    return {"folder": folder.path, "config": config, "zoo_kind": stored.get("zoo_kind"), "oracles": modes, "chance": chance, "rows": rows}


def _vs_text(vs: dict | None) -> str:
    if not vs or vs.get("test") is None:
        return "not applicable"
    side = "lower" if vs["diff"] < 0 else "higher"
    return f"{side} by {abs(vs['diff']):.4f}, p = {vs['p']:.2g} ({vs['test']}, n = {vs['n']})"


def _mean(values) -> str:
    values = [float(v) for v in values if v is not None]
    return f"{sum(values) / len(values):.3g}" if values else "—"


def compare_table(sweeps: list[dict]) -> str:
    """The Markdown table of :func:`sweep_rows` results, one row per (sweep, encoder)."""
    settings = differing_settings([s["config"] for s in sweeps])
    modes = sorted({m for s in sweeps for m in s["oracles"]}, key=lambda m: ("constant", "step", "task", "task+step").index(m)
                   if m in ("constant", "step", "task", "task+step") else 9)
    metrics: list[str] = []
    for s in sweeps:
        metrics += [m for m in s["chance"] if m not in metrics]
    chance = {m: next(s["chance"][m] for s in sweeps if m in s["chance"]) for m in metrics}
    head = (["sweep"] + [f"`{k}`" for k in settings] + ["encoder", "val loss (95 % interval)"]
            + [f"oracle {m}" for m in modes] + ["against the step oracle (same seeds)", "effective dimension"]
            + [f"{m} (val; chance {chance[m]:.3g})" for m in metrics])
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    unrecorded = False
    for s in sweeps:
        flat = _flatten(s["config"])
        unrecorded |= any(k not in flat for k in settings)
        for enc, r in s["rows"].items():
            cells = ([s["config"].get("name") or Path(s["folder"]).name]
                     + [f"{flat[k]}" if k in flat else "not recorded" for k in settings]
                     + [enc, _interval(r["val_loss"])] + [_interval(s["oracles"][m]) if m in s["oracles"] else "—" for m in modes]
                     + [_vs_text(r["vs_step"]), _mean(r["effective_dim"])] + [_mean(r["scores"].get(m, [])) for m in metrics])
            lines.append("| " + " | ".join(cells) + " |")
    seeds = sorted({len([v for v in r["val_loss"] if v is not None]) for s in sweeps for r in s["rows"].values()})
    lines += ["", f"Seeds per row: {', '.join(map(str, seeds))}. Intervals are 95 % Student-t over the final seeds; "
              "the test against the step oracle is paired over the seeds both share (encoder seed s and oracle "
              "seed s see the same batches), Welch's where they do not pair. Downstream scores are means over "
              "the final seeds on the validation split."]
    if unrecorded:
        lines[-1] += (" \"not recorded\": the sweep's stored configuration has no such setting (it was stored "
                      "before the setting existed), so what it ran with is not known from its folder.")
    return "\n".join(lines)


def _same_batches(a: dict, b: dict) -> bool:
    """Seed s draws the same batches in both sweeps: the same zoo recipe (where it is stored and how
    many actors built it aside) and the same batch size."""
    za, zb = ({k: v for k, v in (c.get("zoo") or {}).items() if k not in ("path", "resources")} for c in (a, b))
    return za == zb and (a.get("train") or {}).get("batch_size") == (b.get("train") or {}).get("batch_size")


def across_table(sweeps: list[dict]) -> str:
    """Each encoder of every later sweep against the same encoder in the first (validation loss of
    the best configuration's final seeds): paired over seeds when the sweeps drew the same batches,
    Welch's test otherwise; sweeps on another kind of zoo are left out. Empty with a single sweep or
    no encoder in common."""
    if len(sweeps) < 2:
        return ""
    ref = sweeps[0]
    name = lambda s: s["config"].get("name") or Path(s["folder"]).name  # noqa: E731
    lines = [f"Each encoder against itself in `{name(ref)}` (validation loss, best configuration's final seeds; "
             f"two-sided, p < {1 - LEVEL:.2g}; paired over shared seeds where both sweeps drew the same batches for a "
             "seed, Welch's t-test otherwise):", "",
             "| encoder | sweep | mean difference | test | reading |", "| --- | --- | --- | --- | --- |"]
    rows = 0
    for s in sweeps[1:]:
        if s.get("zoo_kind") != ref.get("zoo_kind"):  # another kind of zoo: its losses are on another scale
            continue
        pairs = _same_batches(ref["config"], s["config"])
        for enc, r in s["rows"].items():
            if enc not in ref["rows"]:
                continue
            a, b = r, ref["rows"][enc]
            c = (compare(by_seed(a["val_loss"], a["seeds"]), by_seed(b["val_loss"], b["seeds"])) if pairs
                 else compare([v for v in a["val_loss"] if v is not None], [v for v in b["val_loss"] if v is not None]))
            if c is None:
                test, reading, diff = "not applicable", "not applicable", "—"
            else:
                test, diff = f"{c.test}, n = {c.n}, p = {c.p:.2g}", f"{c.diff:+.4f}"
                reading = (f"lower in `{name(s)}`" if c.diff < 0 else f"higher in `{name(s)}`") if c.significant() \
                    else "not distinguishable at this power"
            lines.append(f"| `{enc}` | {name(s)} | {diff} | {test} | {reading} |")
            rows += 1
    return "\n".join(lines) if rows else ""


def joint_verdict(folders: list[SweepFolder]) -> str:
    """The verdict table (:func:`rnnray.analysis.verdict.verdict_rows`) over sweeps on different zoos:
    each zoo's claims from its one sweep's final seeds and downstream results."""
    from ..analysis.verdict import study_from_sweep, verdict_rows
    from .sections import verdict_table

    results: dict[str, Any] = {}
    source: dict[str, Path] = {}
    for folder in folders:
        for kind, study in study_from_sweep(folder).items():
            if kind in results:
                raise UserError(f"--verdict: {source[kind]} and {folder.path} are both on a {kind} zoo; give one sweep per zoo")
            results[kind], source[kind] = study, folder.path
    if not results:
        raise UserError("--verdict: none of these sweeps has final seeds (final.json), so no claim can be tested")
    rows = [r.to_dict() for r in verdict_rows(results)]
    return "\n".join(verdict_table(rows) + ["", "Sweeps: " + "; ".join(f"{k}: {v.name}" for k, v in source.items())])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rnnray.report.compare", description=__doc__.split("\n\n")[0])
    p.add_argument("sweeps", nargs="+", help="sweep folders (or results directories: their latest sweep)")
    p.add_argument("--out", default=None, help="also write the table to this Markdown file")
    p.add_argument("--verdict", action="store_true",
                   help="also the paper's claims over these sweeps together (one sweep per zoo)")
    args = p.parse_args(argv)
    try:
        if args.out:
            from ..paths import check_output_file

            check_output_file(args.out, "--out")
        folders = [SweepFolder(resolve_sweep(s)) for s in args.sweeps]
        sweeps = [sweep_rows(f) for f in folders]
        table = compare_table(sweeps)
        across = across_table(sweeps)
        if across:
            table += "\n\n" + across
        if args.verdict:
            table += "\n\n" + joint_verdict(folders)
        if args.out:
            from ..results.atomic import atomic_write_text

            atomic_write_text(Path(args.out), table + "\n")
    except (UserError, OSError) as e:
        print(f"error: {str(e).splitlines()[0] if str(e) else e.__class__.__name__}", file=sys.stderr)
        return 2
    except WriteFailed as e:  # the disk filled up or turned read-only while writing --out
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
