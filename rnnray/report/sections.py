"""The report's sections as Markdown lines, each from stored data only (``analysis.json``,
``final.json``, ``oracles.json``, the Optuna studies): nothing here computes a number."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..analysis.statistics import interval_text, mean_interval
from ..results.folder import SweepFolder
from ..results.records import FinalConfig, Oracles

FIGURES = SweepFolder(Path(".")).figures.name  # figures are linked relative to report.md


def _f(x, spec=".4f") -> str:
    return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def _pm(mean, std) -> str:
    return "—" if mean is None else f"{mean:.4f} ± {std:.4f}"


def verdict_section(rows: Sequence[Mapping]) -> list[str]:
    """The opening of ``report.md``: the claims' table (``analysis.json``'s verdict rows), or why there is none."""
    from ..analysis.verdict import TEST

    lines = ["## Verdict: the paper's claims", ""]
    if not rows:
        return lines + ["No final seeds in this sweep (`final.seeds: 0`), so no claim can be tested: each encoder "
                        "was trained once per configuration. Set `final.seeds` (3 or more) in the sweep file.", ""]
    lines += ["Computed from this sweep's stored results (`final.json`: each encoder's best configuration and paper "
              "preset retrained with new seeds; `downstream.json`). " + TEST[0].upper() + TEST[1:] + " unless the row says "
              "otherwise; *not measured*: the sweep has no results for that zoo, encoder group or metric "
              "(downstream claims need the downstream evaluation of the final seeds).", ""]
    return lines + verdict_table(rows) + [""]


def verdict_table(rows: Sequence[Mapping]) -> list[str]:
    lines = ["| claim | zoo | our numbers: mean (95 % interval over seeds) | test | verdict |",
             "| --- | --- | --- | --- | --- |"]
    return lines + [f"| {r['claim']} | {r['zoo']} | {r['numbers']} | {r['test']} | **{r['verdict']}** |" for r in rows]


def departures_section(rows: Sequence[Sequence[str]]) -> list[str]:
    """The settings that differ from the paper's (``analysis.json``'s ``departures``)."""
    if not rows:
        return ["Settings: the paper's (SPEC.md), none changed.", ""]
    lines = ["Settings that differ from the paper's (SPEC.md sections 2, 3, 5b and 6); read every number below "
             "with them in mind:", "", "| setting | this sweep | the paper |", "| --- | --- | --- |"]
    lines += [f"| `{k}` | {ours} | {paper} |" for k, ours, paper in rows]
    return lines + [""]


def emulation_table(rows: Mapping[str, Mapping]) -> list[str]:
    lines = ["| encoder | trials | selected: val loss | selected: OOD loss | paper preset (trial 0): val loss | tuning gain "
             "| val loss over trials | OOD loss over trials | parameters |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for enc, r in rows.items():
        gain = ("—" if r["tuning_gain"] is None else "0 (selected = trial 0)" if r["selected_is_paper"]
                else f"{r['tuning_gain']:.4f}")
        n = r.get("n_params")
        lines.append(f"| {enc} | {r['trials']} | {_f(r['selected_val_loss'])} | {_f(r['selected_ood_loss'])} | "
                     f"{_f(r['paper_val_loss'])} | {gain} | {_pm(r['val_loss_mean'], r['val_loss_std'])} | "
                     f"{_pm(r['ood_loss_mean'], r['ood_loss_std'])} | {'—' if n is None else f'{int(n):,}'} |")
    return lines


def final_table(final: Mapping[str, Mapping[str, FinalConfig]], encoders: Sequence[str]) -> list[str]:
    """The final seeds' validation and OOD losses per configuration: mean (95 % interval), seeds."""
    if not final:
        return []
    lines = ["", "Final runs (`final.json`): the best configuration and the paper preset retrained from scratch with "
                 "new seeds; mean (95 % Student-t interval over seeds).", "",
             "| encoder | configuration | seeds | val loss | OOD loss |", "| --- | --- | --- | --- | --- |"]
    for enc in encoders:
        roles = dict(final.get(enc) or {})
        same = "best" in roles and "paper" in roles and bool(roles["best"].trial_ids) and roles["best"].trial_ids == roles["paper"].trial_ids
        if same:  # the best configuration is the paper preset: the same runs, one row
            roles.pop("paper")
        for role, entry in roles.items():
            what = f"best (search trial {entry.source_trial})" if role == "best" else "paper preset"
            if same:
                what = f"best = paper preset (search trial {entry.source_trial})"
            if entry.conditioning not in (None, "bos"):  # a searched conditioning that left the paper's
                what += f", emulator conditioned `{entry.conditioning}`"
            lines.append(f"| {enc} | {what} | {len(entry.seeds)} | {interval_text(entry.val_interval)} | "
                         f"{interval_text(entry.ood_interval)} |")
    return lines


def oracle_section(oracles: Oracles, comparisons: Mapping) -> list[str]:
    """The oracles' losses (``oracles.json``) and each encoder's final seeds against them (``analysis.json``)."""
    if not oracles.modes:
        return []
    meaning = {"constant": "`constant` one vector for all", "step": "`step` only how far training went",
               "task": "`task` only the task", "task+step": "`task+step` both"}
    given = ", ".join(meaning.get(m, f"`{m}`") for m in oracles.modes)
    lines = ["", "Label oracles (`oracles.json`, `python -m rnnray.label_oracle`): the same emulator, settings and "
             "seeds as the final runs, given learned embeddings of each snapshot's known labels instead of an "
             f"encoder's representation: {given}; emulator conditioned `{oracles.train.get('conditioning', 'bos')}`; "
             "mean (95 % Student-t interval over seeds).", "",
             "| representation | seeds | val loss | OOD loss |", "| --- | --- | --- | --- |"]
    for mode, r in oracles.modes.items():
        lines.append(f"| oracle: {mode} | {len(r.runs)} | {interval_text(r.val_loss)} | {interval_text(r.ood_loss)} |")
    if not comparisons:
        return lines
    refs, alpha = comparisons["refs"], comparisons["alpha"]
    lines += ["", "Each encoder's best configuration (its final seeds' validation losses) against the oracles: "
                  "a paired t-test over the seeds they share (seed s gives both the same batches; Welch's t-test "
                  f"where seeds do not pair), two-sided, p < {alpha}. Not significantly below `step`: no sign that the "
                  "representation carries more than how far training went.", "",
              "| encoder | val loss | " + " | ".join(f"vs `{m}`" for m in refs) + " | reading |",
              "| --- | --- |" + " --- |" * len(refs) + " --- |"]
    for enc, e in comparisons["encoders"].items():
        cells = []
        for m in refs:
            c = e["vs"][m]
            if c["p"] is None:
                cells.append("not applicable (fewer than 2 seeds, or no spread)")
            else:
                sig = c["lower"] or c["higher"]
                cells.append(f"{'lower' if c['diff'] < 0 else 'higher'} by {abs(c['diff']):.4f}, p = {c['p']:.2g}"
                             + f" ({c.get('test') or 'welch'}" + (")" if sig else ", n.s.)"))
        lines.append(f"| {enc} | {mean_interval(e['val_loss']).text()} | " + " | ".join(cells) + f" | {e['reading']} |")
    return lines


def pairs_section(pairs: Mapping | None) -> list[str]:
    """Each encoder's best configuration against each other's (``analysis.json``'s ``pairs``)."""
    if not pairs or not pairs.get("pairs"):
        return []
    lines = ["", "Encoders against each other: the best configurations' final seeds (validation loss), a paired "
                 "t-test over the seeds they share (seed s gives both the same batches; Welch's t-test where seeds "
                 f"do not pair), two-sided, p < {pairs['alpha']}, each pair on its own: with {len(pairs['pairs'])} pairs "
                 "and no correction for their number, about one pair in 20 without a real difference reads as "
                 "lower by chance.", "",
             "| encoder | against | difference of means | test | reading |", "| --- | --- | --- | --- | --- |"]
    for c in pairs["pairs"]:
        a, b = f"`{c['a']}`", f"`{c['b']}`"
        if c["p"] is None:
            diff, test, reading = "—", "not applicable (fewer than 2 seeds, or no spread)", "—"
        else:
            diff = f"{c['diff']:+.4f}"
            test = f"{c['test']}, n = {c['n']}, p = {c['p']:.2g}"
            reading = (f"{a} lower" if c["lower"] else f"{b} lower" if c["higher"]
                       else "not distinguishable at this power")
        lines.append(f"| {a} | {b} | {diff} | {test} | {reading} |")
    return lines


def oracle_result_text(result: Mapping) -> str:
    """``python -m rnnray.label_oracle``'s table: each oracle's losses over seeds."""
    t = result["train"]
    lines = [f"Label oracles on {result['zoo']} ({result['zoo_kind']}): {t['steps']} steps, lr {t['lr']:g}, "
             f"emulator {t['emulator_hidden']} conditioned {t.get('conditioning', 'bos')}; mean (95 % Student-t "
             f"interval over {len(result['seeds'])} seeds) "
             "of the best validation loss and the OOD loss there.", "",
             "| representation | val emulation loss | OOD emulation loss |", "| --- | --- | --- |"]
    for mode, r in result["modes"].items():
        lines.append(f"| {mode} | {interval_text(r['val_loss'])} | {interval_text(r['ood_loss'])} |")
    return "\n".join(lines)


def search_section(studies: Mapping[str, Mapping | None], folder: SweepFolder) -> list[str]:
    """Each encoder's Optuna study: finished trials and the hyperparameter importances (or why there are none)."""
    lines = ["## Hyperparameter search", ""]
    if not any(studies.values()):
        return lines + ["No Optuna study in this sweep folder (a sweep from before studies were stored)."]
    lines += [f"Optuna's studies are in `{folder.optuna_journal.name}` (`optuna-dashboard {folder.optuna_journal}`). "
              "Importances: Optuna's PED-ANOVA evaluator over the finished trials.", "",
              "| encoder | finished trials | best value | importances |", "| --- | --- | --- | --- |"]
    for enc, s in studies.items():
        if not s:
            lines.append(f"| {enc} | — | — | no study |")
            continue
        best = s["history"][-1]["best"] if s["history"] else None
        imp = (", ".join(f"{k} {v:.2f}" for k, v in s["importances"].items()) if s["importances"]
               else s.get("importance_note", "—"))
        lines.append(f"| {enc} | {s['finished']} of {s['trials']} | {_f(best, '.4f')} | {imp} |")
    if any(s and s["history"] for s in studies.values()):
        lines += ["", f"![search history]({FIGURES}/search_history.png)"]
    return lines


def performance_section(pp: Mapping | None, kind: str) -> list[str]:
    lines = ["## Performance prediction by the emulator", ""]
    if not pp or not pp.get("encoders"):
        return lines + ["No loadable encoder checkpoints."]
    lines += [f"Real {pp['quantity']} against the emulator's, on {pp['rows']} validation/OOD snapshots: {pp['method']}.", ""]
    agreement = any("agreement" in e for e in pp["encoders"].values())  # classifiers: the predicted class too
    lines += ["| encoder | Pearson r | MAE |" + (" agreement with RNN |" if agreement else ""),
              "| --- | --- | --- |" + (" --- |" if agreement else "")]
    for enc, e in pp["encoders"].items():
        lines.append(f"| {enc} | {_f(e['pearson'], '.3f')} | {_f(e['mae'], '.3f')} |"
                     + (f" {_f(e.get('agreement'), '.3f')} |" if agreement else ""))
    if pp.get("rnn_same_digits_pearson") is not None:
        lines += ["", f"Reference: the RNN's own accuracy on the same stored digits correlates with its stored held-out "
                      f"accuracy at r = {_f(pp['rnn_same_digits_pearson'], '.3f')} (the ceiling set by 100 digits)."]
    return lines + ["", f"![performance prediction]({FIGURES}/performance_prediction.png)"]


def _seconds(x: float) -> str:
    m, sec = divmod(int(round(x)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{sec:02d}s" if m else f"{sec}s")


def schedule_lines(s: Mapping | None) -> list[str]:
    """The slot utilisation and each phase's wall time (``analysis.json``'s ``schedule``), one paragraph."""
    if not s or s.get("utilisation") is None:
        return []
    phases = ", ".join(f"{p} {_seconds(v)}" for p, v in s["phase_seconds"].items())
    idle = ""
    if s.get("idle_tail_slot_s") is not None and s.get("handover_median_s") is not None:
        idle = (f" Idle: {s['idle_before_last_start_slot_s']:.0f} slot-seconds while work was still to start "
                f"({s['handover_slot_s']:.0f} of them freed slots waiting for their next trial, median "
                f"{s['handover_median_s']:.1f} s), {s['idle_tail_slot_s']:.0f} in the tail after the last start.")
    return [f"Schedule: slot utilisation {s['utilisation']:.0%} ({s['busy_slot_s']:.0f} busy of "
            f"{s['available_slot_s']:.0f} slot-seconds: {s['slots']} slots from the first trial's start to the last "
            f"one's end, {s['runs']} trial runs).{idle} Wall time per phase: {phases} (search, final and oracles: "
            "first start to last end of their trials, overlapping under the one-queue schedule).", ""]
