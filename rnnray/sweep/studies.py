"""Each encoder's Optuna study, kept in the sweep folder (an Optuna journal), and what it says.

Ray Tune's Optuna searcher keeps its study in memory unless it is given a storage; with the
journal file ``optuna.journal`` in the sweep folder (one study per encoder, named after it) the
studies outlive the sweep: ``optuna-dashboard results/SWEEP/optuna.journal`` browses them, and the
report shows each encoder's optimisation history and Optuna's hyperparameter importances.

On ``--resume`` Tune restores the searcher from its last checkpoint with the same journal, so
finished trials keep their values; a trial the interrupted run had started after that checkpoint
stays ``RUNNING`` in the journal (Optuna's own tools ignore unfinished trials).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..results.folder import SweepFolder

MIN_TRIALS_FOR_IMPORTANCE = 4  # finished trials with a value before importances mean anything


def journal_storage(folder: SweepFolder):
    """The sweep's Optuna storage (created on first use)."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    folder.path.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(folder.optuna_journal)))


def load_study(folder: SweepFolder, encoder: str):
    """The encoder's study, or None when the sweep has no journal or no study of that name."""
    import optuna

    if not folder.optuna_journal.is_file():
        return None
    try:
        return optuna.load_study(study_name=encoder, storage=journal_storage(folder))
    except KeyError:  # no study of that name in the journal
        return None


def study_summary(study, min_trials: int = MIN_TRIALS_FOR_IMPORTANCE) -> dict[str, Any]:
    """History (trial number, value, best so far) of the finished trials and, with enough of them,
    ``optuna.importance.get_param_importances``; ``importance_note`` says why there are none."""
    import optuna

    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None]
    history, best = [], None
    for t in sorted(done, key=lambda t: t.number):
        best = t.value if best is None else min(best, t.value)
        history.append({"number": t.number, "value": t.value, "best": best})
    out: dict[str, Any] = {"trials": len(study.trials), "finished": len(done), "history": history, "importances": None}
    varied = {k for t in done for k in t.params if len({repr(u.params.get(k)) for u in done}) > 1}
    if len(done) < min_trials:
        out["importance_note"] = f"not enough finished trials for importances ({len(done)} of {min_trials})"
    elif not varied:
        out["importance_note"] = "no hyperparameter varied among the finished trials"
    else:
        imp = optuna.importance.get_param_importances(study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())
        out["importances"] = {k: float(v) for k, v in imp.items()}
    return out


def sweep_studies(sweep_dir: Path, encoders) -> dict[str, dict[str, Any] | None]:
    """``study_summary`` of every encoder's study (None where there is none)."""
    folder = SweepFolder(Path(sweep_dir))
    return {enc: (None if (s := load_study(folder, enc)) is None else study_summary(s)) for enc in encoders}
