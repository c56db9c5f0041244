"""The verdict logic on constructed results: a clear win, a clear loss, an overlap, and the rows
that follow from them."""

from __future__ import annotations

from pathlib import Path

from rnnray.analysis.verdict import FAILS, HOLDS, UNMEASURED, UNSURE, EncoderSeeds, group_beats, verdict_rows

LOW = [0.020, 0.021, 0.019]  # well apart from HIGH at 3 seeds
HIGH = [0.045, 0.046, 0.044]
MIDDLE_WIDE = [0.015, 0.050, 0.030]  # overlaps both


def test_group_beats_clear_win_clear_loss_overlap_and_missing():
    assert group_beats({"interactive": LOW}, {"dws": HIGH, "flat": HIGH}, higher_is_better=False) == HOLDS
    assert group_beats({"interactive": HIGH}, {"dws": LOW}, higher_is_better=False) == FAILS
    assert group_beats({"interactive": LOW}, {"dws": MIDDLE_WIDE}, higher_is_better=False) == UNSURE
    # one clear win and one overlap: not every pair is significant
    assert group_beats({"interactive": LOW}, {"dws": HIGH, "flat": MIDDLE_WIDE}, higher_is_better=False) == UNSURE
    # a single clear loss decides against the claim even beside wins
    assert group_beats({"interactive": LOW, "noninteractive": HIGH}, {"dws": LOW}, higher_is_better=False) == FAILS
    assert group_beats({"interactive": [0.01]}, {"dws": HIGH}, higher_is_better=False) == UNSURE  # one seed
    assert group_beats({}, {"dws": HIGH}, higher_is_better=False) == UNMEASURED
    # higher is better (accuracies): the same numbers read the other way
    assert group_beats({"interactive": HIGH}, {"dws": LOW}, higher_is_better=True) == HOLDS


def _study(**val):
    return {n: EncoderSeeds(val_loss=v, preset_val_loss=v) for n, v in val.items()}


def test_rows_for_a_study_where_the_paper_holds_on_zoo_a():
    a = _study(interactive=LOW, noninteractive=[0.030, 0.031, 0.029], dws=HIGH, flat=[0.050, 0.051, 0.049])
    for n, acc in (("interactive", [0.30, 0.31, 0.29]), ("noninteractive", [0.25, 0.26, 0.24]),
                   ("dws", [0.05, 0.06, 0.04]), ("flat", [0.02, 0.03, 0.01])):
        a[n].downstream = {"task.exact_acc": acc, "accuracy.r2": {"dws": [0.8, 0.81, 0.79]}.get(n, [0.5, 0.52, 0.48])}
    rows = {r.claim[:3]: r for r in verdict_rows({"formal_languages": a}) if r.zoo.startswith("A")}
    assert rows["(a)"].verdict == HOLDS and "interactive 0.0200 (0.0175, 0.0225)" in rows["(a)"].numbers
    assert rows["(c)"].verdict == HOLDS
    assert rows["(d)"].verdict == HOLDS
    assert rows["(e)"].verdict == HOLDS and "dws 0.800 (0.775, 0.825)" in rows["(e)"].numbers and "flat 0.500 (" in rows["(e)"].numbers
    (tuning,) = [r for r in verdict_rows({"formal_languages": a}) if r.claim.startswith("Does tuning") and r.zoo.startswith("A")]
    assert tuning.verdict == "no"  # presets and tuned configurations identical here
    (b,) = [r for r in verdict_rows({"formal_languages": a}) if r.claim.startswith("(b)")]
    assert b.verdict == UNMEASURED  # zoo B not in these results


def test_rows_for_a_study_where_it_does_not_hold_and_tuning_reorders():
    a = _study(interactive=HIGH, noninteractive=MIDDLE_WIDE, dws=LOW)
    a["dws"].preset_val_loss = [0.060, 0.061, 0.059]  # dws's preset was worst; tuned, it is best (significantly)
    rows = verdict_rows({"formal_languages": a})
    by = {r.claim[:3]: r for r in rows}
    assert by["(a)"].verdict == FAILS and by["(c)"].verdict == FAILS
    assert by["(d)"].verdict == UNMEASURED  # no downstream values given
    (tuning,) = [r for r in rows if r.claim.startswith("Does tuning") and r.zoo.startswith("A")]
    assert tuning.verdict == "yes" and tuning.numbers.startswith("tuned: dws < ")


def test_tuning_against_presets_is_not_measured_when_a_tuned_encoders_preset_was_not_retrained():
    """``final.paper_preset: false``: an encoder whose best configuration is not its preset has no
    preset seeds. Ranking the others alone (whose "presets" are the tuned runs themselves) would
    answer "no" by construction; the row says it is not measured, and why."""
    a = _study(interactive=HIGH, noninteractive=MIDDLE_WIDE, dws=LOW)
    a["dws"].preset_val_loss = []
    (tuning,) = [r for r in verdict_rows({"formal_languages": a}) if r.claim.startswith("Does tuning") and r.zoo.startswith("A")]
    assert tuning.verdict == UNMEASURED and tuning.numbers.startswith("paper preset not retrained for dws"), tuning.numbers


def test_tuning_that_kept_every_preset_answers_no_by_construction_and_says_so():
    """When tuning kept each encoder's paper preset, the preset seeds are the tuned runs: the row
    must not present the identical ranking as evidence. When one encoder moved away, only pairs
    involving it are evidence; two encoders that both kept their presets are left out."""
    a = _study(interactive=HIGH, noninteractive=MIDDLE_WIDE, dws=LOW)
    for s in a.values():
        s.preset_is_best = True
    (tuning,) = [r for r in verdict_rows({"formal_languages": a}) if r.claim.startswith("Does tuning") and r.zoo.startswith("A")]
    assert tuning.verdict == "no" and tuning.numbers.endswith("by construction: tuning kept every encoder's paper preset")
    a["dws"].preset_is_best = False
    a["dws"].preset_val_loss = [0.060, 0.061, 0.059]  # tuned away: best tuned, worst as preset
    (tuning,) = [r for r in verdict_rows({"formal_languages": a}) if r.claim.startswith("Does tuning") and r.zoo.startswith("A")]
    assert tuning.verdict == "yes" and "by construction" not in tuning.numbers
    a["dws"].preset_val_loss = list(a["dws"].val_loss)  # moved, but no better or worse: only the kept pair orders
    (tuning,) = [r for r in verdict_rows({"formal_languages": a}) if r.claim.startswith("Does tuning") and r.zoo.startswith("A")]
    assert tuning.verdict == "no"


def test_the_stored_study_reads_which_encoders_kept_their_presets():
    from rnnray.analysis.verdict import study_from_sweep
    from rnnray.results.folder import SweepFolder

    study = study_from_sweep(SweepFolder(Path(__file__).resolve().parents[1] / "docs/runs/study-2026-12-04"))["formal_languages"]
    assert {n for n, s in study.items() if s.preset_is_best} == {"interactive", "noninteractive", "dlpg", "dws", "stats", "flat"}
    assert not study["transformer"].preset_is_best


def test_a_collapsed_representation_is_named_in_its_row_and_the_table_renders():
    a = _study(interactive=LOW, dws=HIGH)
    a["dws"].effective_dim = 1.0
    rows = verdict_rows({"formal_languages": a})
    (first,) = [r for r in rows if r.claim.startswith("(a)")]
    assert "collapsed representations (effective dimension dws 1.00)" in first.numbers
    from rnnray.report.sections import verdict_table

    table = verdict_table([r.to_dict() for r in rows])
    assert table[0].startswith("| claim | zoo |") and len(table) == 2 + len(rows)
    assert f"**{first.verdict}**" in table[2]



def test_seeds_that_pair_are_compared_paired():
    """Seed s of every encoder sees the same batches: a difference that is small beside the spread
    over seeds but consistent seed by seed is found by the paired test, not by Welch's."""
    a, b = [0.050, 0.060, 0.070], [0.0512, 0.0609, 0.0711]
    assert group_beats({"interactive": a}, {"dws": b}, higher_is_better=False) == UNSURE  # Welch: nothing pairs
    assert group_beats({"interactive": dict(zip((1, 2, 3), a))}, {"dws": dict(zip((1, 2, 3), b))},
                       higher_is_better=False) == HOLDS
    study = {"interactive": EncoderSeeds(val_loss=a, seeds=[1, 2, 3]), "dws": EncoderSeeds(val_loss=b, seeds=[1, 2, 3])}
    (c,) = [r for r in verdict_rows({"formal_languages": study}) if r.claim.startswith("(c)")]
    assert c.verdict == HOLDS and "paired" in c.test
    # seeds that do not pair fall back to Welch's test
    study["dws"] = EncoderSeeds(val_loss=b, seeds=[4, 5, 6])
    (c,) = [r for r in verdict_rows({"formal_languages": study}) if r.claim.startswith("(c)")]
    assert c.verdict == UNSURE


def test_claim_e_is_decided_by_tests_not_by_the_order_of_means():
    """dws has the best mean on the simpler target but not significantly: inconclusive, not holds;
    a rival significantly better: does not hold."""
    def study(dws_r2, flat_r2):
        s = {"dws": EncoderSeeds(val_loss=LOW, seeds=[1, 2, 3]), "flat": EncoderSeeds(val_loss=HIGH, seeds=[1, 2, 3])}
        s["dws"].downstream, s["dws"].downstream_seeds = {"accuracy.r2": dws_r2}, [1, 2, 3]
        s["flat"].downstream, s["flat"].downstream_seeds = {"accuracy.r2": flat_r2}, [1, 2, 3]
        (e,) = [r for r in verdict_rows({"formal_languages": s}) if r.claim.startswith("(e)") and r.zoo.startswith("A")]
        return e.verdict
    assert study([0.60, 0.40, 0.80], [0.55, 0.45, 0.70]) == UNSURE  # higher mean, no significant difference
    assert study([0.80, 0.81, 0.79], [0.50, 0.52, 0.49]) == HOLDS
    assert study([0.50, 0.52, 0.49], [0.80, 0.81, 0.79]) == FAILS
