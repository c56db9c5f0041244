"""The verdict: the paper's claims tested on a study's per-seed results (SPEC.md sections 6 and 7).

Each claim is a comparison of encoders on one metric, and each comparison is made pair by pair by a
test over seeds (:func:`rnnray.analysis.statistics.compare`) at ``ALPHA`` = 0.05, two-sided: paired
over the seeds two encoders share (seed s fixes the batches for every encoder), Welch's t-test
where nothing pairs; a comparison without spread has no test ("not applicable"). No claim is
decided by an order of means.

* a claim that group F beats group M *holds* when every pair (f, m) differs significantly in F's
  favour (an intersection-union test: valid at level 0.05 without a multiplicity correction, and
  conservative); it *does not hold* when some pair differs significantly against F (no
  correction either, so with many pairs this verdict comes more easily than 0.05 would suggest);
  otherwise it is *inconclusive at this power* (including any pair with fewer than 2 seeds).
* "dws is the most consistent mechanistic encoder on the simpler targets" (zoo A: the RNN's
  accuracy; zoo B: angle, held-out accuracy, generalisation gap, training step): dws against each
  other mechanistic encoder on each simpler target; *holds* when dws is significantly better than
  every rival on at least one simpler target and significantly worse than none on any; *does not
  hold* when some rival is significantly better than dws on a simpler target and dws is
  significantly better than that rival on none; otherwise inconclusive.
* "Does tuning change the ranking?": each pair of encoders tested under their tuned
  configurations and under their paper presets; *yes* when some pair is significantly ordered one
  way tuned and significantly the other way as presets; *no* when at least one pair is
  significantly ordered under both and every such pair keeps its order, with no pair significant
  under one and reversed in mean under the other; otherwise inconclusive. A pair of encoders that
  both kept their paper presets is the same comparison twice and is left out; when every encoder
  kept its preset the answer is *no* by construction, and the row says so.

The groups are the encoders of a study by the kind each declares (:mod:`rnnray.encoders.contract`),
so a plug-in encoder counts among the mechanistic or the functionalist ones as it says; claim (c)
sets interactive probing against every other encoder of the study.

A claim involving a representation whose effective dimension is below
:data:`rnnray.analysis.downstream.COLLAPSED_BELOW` says so in its row. Encoders a sweep did not train are
left out of a claim and the row names the ones compared; a claim about a zoo the results do not
cover is *not measured*. Everything is computed from the stored per-seed values it is given.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..encoders.catalog import ENCODER_NAMES
from .statistics import by_seed, compare, mean_interval

ALPHA = 0.05
HOLDS, FAILS, UNSURE, UNMEASURED = "holds", "does not hold", "inconclusive at this power", "not measured"
TEST = "paired t-test over shared seeds (Welch's where seeds do not pair), two-sided, p < 0.05 for every pair"
ZOO_NAMES = {"formal_languages": "A (formal languages)", "mnist": "B (sequential MNIST)"}

# downstream metric keys "target.metric" (OOD test half) and whether higher is better
EXACT_TASK = ("task.exact_acc", True)
SIMPLER = {
    "formal_languages": (("accuracy.r2", True),),
    "mnist": (("angle.err_deg", False), ("accuracy.r2", True), ("gap.r2", True), ("step.acc", True)),
}


@dataclass
class EncoderSeeds:
    """One encoder's final seeds on one zoo: best validation emulation loss of its tuned
    configuration and of its paper preset (one value per seed), the OOD-test downstream metrics
    per seed (keys ``target.metric``), and its representations' effective dimension."""

    val_loss: Sequence[float] = ()
    preset_val_loss: Sequence[float] = ()
    downstream: Mapping[str, Sequence[float]] = field(default_factory=dict)
    effective_dim: float | None = None
    seeds: Sequence | None = None  # the seed of each val_loss (None: unknown, nothing pairs)
    preset_seeds: Sequence | None = None
    downstream_seeds: Sequence | None = None  # the encoder seed of each downstream value
    kind: str | None = None  # mechanistic | functionalist, as the encoder declared it (None: look it up)
    preset_is_best: bool = False  # tuning kept the paper preset: preset_val_loss are the same runs as val_loss

    def val(self):
        return by_seed(self.val_loss, self.seeds)

    def preset(self):
        return by_seed(self.preset_val_loss, self.preset_seeds)

    def metric(self, key: str):
        return by_seed(self.downstream.get(key, ()), self.downstream_seeds)


@dataclass(frozen=True)
class Row:
    claim: str
    zoo: str
    numbers: str
    test: str
    verdict: str

    def to_dict(self) -> dict:
        return {"claim": self.claim, "zoo": self.zoo, "numbers": self.numbers, "test": self.test, "verdict": self.verdict}


def _numbers(values: Mapping[str, Sequence[float]], digits: int) -> str:
    return "; ".join(f"{name} {mean_interval(v).text(digits)}" for name, v in values.items())


def _collapsed(study: Mapping[str, EncoderSeeds], names: Sequence[str]) -> str:
    from .downstream import COLLAPSED_BELOW

    low = [f"{n} {study[n].effective_dim:.2f}" for n in names
           if study[n].effective_dim is not None and math.isfinite(study[n].effective_dim) and study[n].effective_dim < COLLAPSED_BELOW]
    return f" Built on collapsed representations (effective dimension {', '.join(low)})." if low else ""


def group_beats(better: Mapping[str, Sequence[float] | Mapping], worse: Mapping[str, Sequence[float] | Mapping],
                higher_is_better: bool) -> str:
    """The verdict on "every encoder of ``better`` beats every one of ``worse``" (module docstring);
    values are per seed (seed -> value pairs where the seeds are known)."""
    if not better or not worse:
        return UNMEASURED
    against, unsure = False, False
    for a in better.values():
        for b in worse.values():
            w = compare(a, b)
            if w is None or w.p >= ALPHA:
                unsure = True
                continue
            favourable = (w.diff > 0) == higher_is_better
            against = against or not favourable
    if against:
        return FAILS
    return UNSURE if unsure else HOLDS


def _values(study: Mapping[str, EncoderSeeds], names: Sequence[str], metric: str | None) -> dict[str, Sequence[float]]:
    out = {}
    for n in names:
        if n not in study:
            continue
        v = study[n].val() if metric is None else study[n].metric(metric)
        if len(v):
            out[n] = v
    return out


def kind_of(name: str, seeds: EncoderSeeds) -> str:
    """The encoder's declared kind: as recorded with its results, else from its class (built-in or plug-in)."""
    if seeds.kind is not None:
        return seeds.kind
    from ..encoders.registry import get_spec

    return get_spec(name).kind


def group(study: Mapping[str, EncoderSeeds], kind: str) -> list[str]:
    """The study's encoders of one kind, plug-ins included: built-ins in the catalog's order, then the rest."""
    names = [n for n in study if kind_of(n, study[n]) == kind]
    return sorted(names, key=lambda n: ENCODER_NAMES.index(n) if n in ENCODER_NAMES else len(ENCODER_NAMES))


def _group_row(claim: str, study, kind: str, better_names, worse_names, metric: str | None, higher: bool, digits: int) -> Row:
    better, worse = _values(study, better_names, metric), _values(study, worse_names, metric)
    verdict = group_beats(better, worse, higher)
    plain = {n: list(v.values()) if isinstance(v, Mapping) else v for n, v in {**better, **worse}.items()}
    numbers = _numbers(plain, digits) if better or worse else "—"
    note = _collapsed(study, [*better, *worse]) if verdict != UNMEASURED else ""
    return Row(claim, ZOO_NAMES.get(kind, kind), numbers + note, TEST, verdict)


def dws_most_consistent(study: Mapping[str, EncoderSeeds], kind: str) -> tuple[str, str]:
    """(verdict, numbers) of claim (e): dws tested against each rival on each simpler target
    (module docstring); the numbers are each encoder's mean and 95 % interval, for reading, not for deciding."""
    mech = group(study, "mechanistic")
    targets = [(m, hi) for m, hi in SIMPLER[kind] if all(len(study[n].downstream.get(m, ())) for n in mech)]
    if "dws" not in mech or len(mech) < 2 or not targets:
        return UNMEASURED, "—"
    wins: dict[str, bool] = {}
    losses: dict[str, bool] = {}
    for n in mech:
        if n == "dws":
            continue
        wins[n] = losses[n] = False
        for metric, hi in targets:
            c = compare(study["dws"].metric(metric), study[n].metric(metric))
            if c is None or c.p >= ALPHA:
                continue
            if (c.diff > 0) == hi:
                wins[n] = True
            else:
                losses[n] = True
    numbers = "; ".join(f"{m}: " + ", ".join(f"{n} {mean_interval(study[n].downstream[m]).text(3)}" for n in mech)
                        for m, _ in targets)
    if all(wins[n] and not losses[n] for n in wins):
        return HOLDS, numbers
    if any(losses[n] and not wins[n] for n in wins):
        return FAILS, numbers
    return UNSURE, numbers


def tuning_changes_ranking(study: Mapping[str, EncoderSeeds]) -> tuple[str, str]:
    """("yes" | "no" | inconclusive | not measured, numbers): does tuning reorder the encoders?
    Decided pair by pair by tests under both (module docstring); the orders are for reading."""
    names = [n for n, s in study.items() if len(s.val_loss) and len(s.preset_val_loss)]
    unretrained = [n for n, s in study.items() if len(s.val_loss) and not len(s.preset_val_loss)]
    if unretrained:  # tuned away from its preset, which was not retrained: the ranking would leave it out
        return UNMEASURED, (f"paper preset not retrained for {', '.join(unretrained)} (`final.paper_preset: false`; "
                            "its best configuration is not the preset)")
    if len(names) < 2:
        return UNMEASURED, "—"
    tuned = sorted(names, key=lambda n: float(np.nanmean(study[n].val_loss)))
    preset = sorted(names, key=lambda n: float(np.nanmean(study[n].preset_val_loss)))
    numbers = f"tuned: {' < '.join(tuned)}; paper presets: {' < '.join(preset)}"
    if all(study[n].preset_is_best for n in names):  # the same runs on both sides: nothing could reorder
        return "no", numbers + "; by construction: tuning kept every encoder's paper preset"
    kept, contradicted = False, False
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if study[a].preset_is_best and study[b].preset_is_best:
                continue  # both kept their presets: the same comparison twice, no evidence either way
            ct, cp = compare(study[a].val(), study[b].val()), compare(study[a].preset(), study[b].preset())
            st, sp = ct is not None and ct.p < ALPHA, cp is not None and cp.p < ALPHA
            if st and sp:
                if (ct.diff > 0) != (cp.diff > 0):
                    return "yes", numbers
                kept = True
            elif st or sp:  # significant on one side only: reversed in mean on the other leaves it open
                sig, other = (ct, cp) if st else (cp, ct)
                if other is None or (sig.diff > 0) != (other.diff > 0):
                    contradicted = True
    return ("no", numbers) if kept and not contradicted else (UNSURE, numbers)


def verdict_rows(results: Mapping[str, Mapping[str, EncoderSeeds]]) -> list[Row]:
    """Every claim's row, for the zoos in ``results`` (zoo kind -> encoder -> seeds)."""
    a, b = results.get("formal_languages", {}), results.get("mnist", {})
    fa, ma, fb, mb = group(a, "functionalist"), group(a, "mechanistic"), group(b, "functionalist"), group(b, "mechanistic")
    rows = [
        _group_row("(a) functionalist encoders reach a lower validation emulation loss than every mechanistic one",
                   a, "formal_languages", fa, ma, None, False, 4),
        _group_row("(b) the same on zoo B", b, "mnist", fb, mb, None, False, 4),
        _group_row("(c) interactive probing is the best encoder (validation emulation loss)",
                   a, "formal_languages", ("interactive",), [n for n in (*ma, *fa) if n != "interactive"], None, False, 4),
        _group_row("(d) functionalist encoders predict the exact task of OOD RNNs better than mechanistic ones",
                   a, "formal_languages", fa, ma, EXACT_TASK[0], True, 3),
    ]
    for kind, study in (("formal_languages", a), ("mnist", b)):
        verdict, numbers = dws_most_consistent(study, kind) if study else (UNMEASURED, "—")
        mech = group(study, "mechanistic")
        note = _collapsed(study, mech) if verdict != UNMEASURED else ""
        rows.append(Row("(e) dws is the most consistent mechanistic encoder on the simpler targets", ZOO_NAMES[kind],
                        numbers + note, "dws against each rival on each simpler target: " + TEST.split(",")[0] + ", p < 0.05",
                        verdict))
    for kind, study in (("formal_languages", a), ("mnist", b)):
        verdict, numbers = tuning_changes_ranking(study) if study else (UNMEASURED, "—")
        rows.append(Row("Does tuning change the ranking relative to the paper presets?", ZOO_NAMES[kind], numbers,
                        "each pair tested tuned and as presets: " + TEST.split(",")[0] + ", p < 0.05", verdict))
    return rows


def study_from_sweep(folder) -> dict[str, dict[str, EncoderSeeds]]:
    """A sweep folder's stored results as the verdict's input: zoo kind -> encoder -> its final
    seeds (``final.json``) and its representations' effective dimension (``downstream.json``)."""
    import json

    from ..results.records import read_final

    finals = read_final(folder)
    if not finals:
        return {}
    sweep = json.loads(folder.sweep_json.read_text())
    kind, declared = sweep.get("zoo_kind"), sweep.get("encoders") or {}
    dims, downstream, ds_seeds = {}, {}, {}
    if folder.downstream_json.is_file():
        doc = json.loads(folder.downstream_json.read_text())
        dims = {n: r.get("effective_dim") for n, r in doc.get("encoders", {}).items()}
        for n, r in (doc.get("final") or {}).items():  # per final seed: the OOD-test half
            downstream[n] = {k: [math.nan if v is None else float(v) for v in per.get("ood_test", [])]
                             for k, per in r.get("values", {}).items()}
            ds_seeds[n] = r.get("seeds")
            seed_dims = [d for d in r.get("effective_dim", []) if d is not None]
            if seed_dims:
                dims[n] = float(np.mean(seed_dims))
    study = {}
    for enc, roles in finals.items():
        def values(role: str) -> list[float]:
            return [math.nan if v is None else float(v) for v in (roles[role].val_loss if role in roles else [])]

        study[enc] = EncoderSeeds(val_loss=values("best"), preset_val_loss=values("paper"),
                                  downstream=downstream.get(enc, {}), effective_dim=dims.get(enc),
                                  seeds=roles["best"].seeds if "best" in roles else None,
                                  preset_seeds=roles["paper"].seeds if "paper" in roles else None,
                                  downstream_seeds=ds_seeds.get(enc), kind=(declared.get(enc) or {}).get("kind"),
                                  preset_is_best="best" in roles and "paper" in roles
                                  and roles["best"].trial_ids == roles["paper"].trial_ids)
    return {kind: study}
