"""``python -m rnnray.evaluate RESULTS_DIR``: downstream evaluation of a sweep's best encoders.

For every encoder in the sweep's ``best.json`` the best checkpoint is loaded, the whole zoo is
embedded with its (frozen) encoder, and the predictors of :mod:`rnnray.analysis.downstream` are trained
and tested; the random and supervised baselines run on the same splits. Written into the sweep
folder (each file under a temporary name, then renamed):

* ``downstream.json`` — everything, per encoder and baseline: ``results[target][split][metric] =
  {mean, std, values}`` (splits ``val`` and ``ood_test``; one value per predictor seed);
* ``summary.csv``, ``summary.md`` — written again, whole, by the sweep's summary writer
  (:func:`rnnray.sweep.store.write_summary`) from the trial records and these results: the CSV
  gains ``ds_<ood|val>_<target>_<metric>`` (mean over seeds) and ``..._std`` for every encoder
  row, the markdown table one ``ds ...`` column per headline OOD-test metric (mean ± std), and a
  section below it compares the baselines (:func:`summary_columns` renders them as data).

Choices: the zoo and split seed are read from the checkpoints' metadata (they record what the
encoder was trained on), falling back to ``sweep.json``; an encoder whose checkpoint is missing
or unreadable is skipped and named under ``skipped`` rather than sinking the others; when every one is
skipped the evaluation stops with one line (:func:`require_encoders`), since baselines alone compare nothing.
``evaluate_sweep(sweep_dir)`` is what the sweep calls at its end.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..cli import UsageError
from .downstream import DEFAULT_SEEDS, PredictorConfig, flat_metrics, jsonable, metric_columns, targets_for
from ..results.atomic import atomic_write_json
from ..config import SUPERVISED_ENCODER
from ..kinds import zoo_kind
from ..results.folder import TRIAL_RECORD, ResultsError, SweepFolder
from ..runtime.machine import check_device  # noqa: F401  (the report and evaluate commands take it from here)

FORMAT = "rnnray-downstream/1"
DOWNSTREAM_FILE = SweepFolder(Path(".")).downstream_json.name  # the file name, for messages


# ------------------------------------------------------------------------------------------------
# reading a sweep folder


def read_json(path: Path, what: str) -> dict:
    from ..paths import check_readable

    if not path.is_file():
        raise UsageError(f"{path}: missing ({what})")
    check_readable(path, "")  # one line naming it, not a traceback, when the disk refuses to read it
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: not valid JSON ({e.__class__.__name__})") from None


def resolve(results: str | Path) -> Path:
    """A sweep folder from a sweep folder or a results directory (its latest sweep)."""
    from ..results.loading import ResultsError, resolve_sweep

    p = Path(results).expanduser()
    if not p.exists():
        raise UsageError(f"{p}: no such results directory or sweep folder")
    try:
        return resolve_sweep(p)
    except ResultsError as e:
        raise UsageError(str(e)) from None


def sweep_zoo(sweep: Mapping) -> tuple[str | None, int]:
    """(zoo path, split seed) as the sweep file gave them."""
    cfg = sweep.get("config") or {}
    zoo = cfg.get("zoo")
    if isinstance(zoo, Mapping):
        zoo = zoo.get("path")
    return zoo, int((cfg.get("train") or {}).get("split_seed", 0))


def checkpoint_of(entry: Mapping) -> str | None:
    """The best checkpoint of a ``best.json`` entry: its ``checkpoint``, else the trial record's
    ``checkpoint`` / ``checkpoint_path`` (``TrainResult`` names it the latter)."""
    if entry.get("checkpoint"):
        return entry["checkpoint"]
    trial = Path(entry["trial_dir"]) / TRIAL_RECORD if entry.get("trial_dir") else None
    if trial is not None and trial.is_file():
        try:
            rec = json.loads(trial.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
        return rec.get("checkpoint") or rec.get("checkpoint_path")
    return None


def load_encoders(best: Mapping, device) -> tuple[dict, dict, dict]:
    """(models, metas, skipped) for every encoder of ``best.json`` with a loadable checkpoint."""
    from ..train import load_checkpoint

    models, metas, skipped = {}, {}, {}
    for name, entry in best.items():
        ckpt = checkpoint_of(entry or {})
        if not ckpt:
            skipped[name] = "no checkpoint recorded (best.json / trial.json)"
            continue
        if not Path(ckpt).is_dir():
            skipped[name] = f"checkpoint {ckpt} not found"
            continue
        try:
            models[name], metas[name] = load_checkpoint(ckpt, device=device)
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            skipped[name] = f"checkpoint {ckpt} unreadable: {str(e).splitlines()[0] if str(e) else e.__class__.__name__}"
    return models, metas, skipped


def require_encoders(models: Mapping, skipped: Mapping[str, str], folder: SweepFolder) -> None:
    """ResultsError (exit code 2) when no encoder is left to evaluate: every one of ``best.json`` was
    skipped (its checkpoint gone or unreadable) or it names none. A command that evaluated only the
    baselines, or drew a report of no encoder, must not end as if it had done its work."""
    if models:
        return
    if not skipped:
        raise ResultsError(f"{folder.best_json}: names no encoder (no trial of the sweep left a usable checkpoint)")
    why = "; ".join(f"{name}: {reason}" for name, reason in skipped.items())
    raise ResultsError(f"{folder.path}: every encoder of {folder.best_json.name} was skipped, none is left to evaluate ({why})")


def zoo_and_seed(sweep: Mapping, metas: Mapping, sweep_dir: Path) -> tuple[str, int]:
    zoos = {m.get("zoo") for m in metas.values() if m.get("zoo")}
    seeds = {int(m["split_seed"]) for m in metas.values() if m.get("split_seed") is not None}
    if len(zoos) > 1:
        raise UsageError(f"{sweep_dir}: the best checkpoints were trained on different zoos ({', '.join(sorted(zoos))})")
    if len(seeds) > 1:
        raise UsageError(f"{sweep_dir}: the best checkpoints used different split seeds ({sorted(seeds)})")
    zoo, seed = sweep_zoo(sweep)
    zoo = next(iter(zoos)) if zoos else zoo
    seed = next(iter(seeds)) if seeds else seed
    if not zoo:
        raise UsageError(f"{SweepFolder(sweep_dir).sweep_json}: names no zoo")
    return zoo, seed


def split_scheme(sweep: Mapping, metas: Mapping, sweep_dir: Path) -> str:
    """The split scheme the best checkpoints trained with (their meta), else the sweep file's ``train.split``."""
    schemes = {m["split"] for m in metas.values() if m.get("split")}
    if len(schemes) > 1:
        raise UsageError(f"{sweep_dir}: the best checkpoints used different splits ({sorted(schemes)})")
    return next(iter(schemes)) if schemes else str(((sweep.get("config") or {}).get("train") or {}).get("split", "ours"))


def default_device():
    """The driver's own GPU if this process sees one, else the CPU: evaluation and the report run on
    the driver, after training, and never borrow a GPU Ray assigned to an actor or worker."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# ------------------------------------------------------------------------------------------------
# the evaluation


def evaluate_sweep(
    sweep_dir: str | Path,
    *,
    seeds: Sequence[int] | None = None,
    config: PredictorConfig | None = None,
    device=None,
    supervised_encoder: str | None = None,
    progress: bool = True,
) -> dict:
    """Downstream evaluation of every encoder's best trial plus both baselines; writes
    ``downstream.json`` and the downstream columns of ``summary.csv`` / ``summary.md``; returns
    what ``downstream.json`` holds. Settings left as None come from an optional ``downstream``
    block of the sweep's config (``steps``, other :class:`PredictorConfig` fields, ``seeds``,
    ``supervised_encoder``: a quick sweep can ask for fewer steps), else the defaults (predictor
    seeds 0, 1, 2; ``stats``)."""
    from .downstream import chance_levels, evaluate_all, target_columns, participation_ratio, random_representations, representations
    from ..weights import Layout
    from ..zoo import load_table, read_manifest

    t_start = time.time()
    sweep_dir = Path(sweep_dir)
    folder = SweepFolder(sweep_dir)
    sweep = read_json(folder.sweep_json, "not a sweep folder")
    best = read_json(folder.best_json, "no best trials yet: has the sweep finished a trial?")
    device = device or default_device()
    settings = (sweep.get("config") or {}).get("downstream") or {}  # optional: steps, seeds, supervised_encoder
    cfg = config or PredictorConfig(**{k: v for k, v in settings.items() if k in PredictorConfig.__dataclass_fields__})
    if seeds is None:
        seeds = tuple(settings.get("seeds", DEFAULT_SEEDS))
    if supervised_encoder is None:
        supervised_encoder = settings.get("supervised_encoder", SUPERVISED_ENCODER)
    models, metas, skipped = load_encoders(best, device)
    zoo, split_seed = zoo_and_seed(sweep, metas, sweep_dir)
    scheme = split_scheme(sweep, metas, sweep_dir)
    manifest = read_manifest(zoo)
    kind, snapshots = manifest["kind"], [int(s) for s in manifest["snapshots"]]
    layout = Layout.from_dict(manifest["layout"])
    for name, meta in list(metas.items()):
        if meta.get("zoo_kind") not in (None, kind):
            skipped[name] = f"trained on a {meta['zoo_kind']} zoo, not {kind}"
            del models[name], metas[name]
    require_encoders(models, skipped, folder)
    columns = sorted({"run_id", "step", "params", zoo_kind(kind).task_column, *target_columns(kind)})
    table = load_table(zoo, columns=columns, checksums=False)
    if progress:
        print(f"downstream evaluation: {len(models)} encoder(s) + 2 baselines on {zoo} ({kind}, {len(table)} snapshots), "
              f"predictor seeds {list(seeds)}, {cfg.steps} steps each", flush=True)
        for name, why in skipped.items():
            print(f"  skipped {name}: {why}", flush=True)
    reps = {}
    for name, model in models.items():
        reps[name] = representations(model.encoder, table, device=device)
    out = evaluate_all(reps, table, kind, layout, split_seed, seeds, snapshot_steps=snapshots, config=cfg,
                       device=device, supervised_encoder=supervised_encoder, progress=progress, scheme=scheme)
    for name, res in out["encoders"].items():
        entry = best.get(name) or {}
        res.update({k: entry.get(k) for k in ("trial_id", "n_params", "best_val_loss", "best_ood_loss")})
        res["checkpoint"] = checkpoint_of(entry)
        res["effective_dim"] = participation_ratio(reps[name])  # over every snapshot of the zoo
    out["baselines"]["random"]["effective_dim"] = participation_ratio(random_representations(len(table)))
    final = evaluate_final_seeds(folder, table, kind, split_seed, seeds, cfg, device, scheme, snapshots, progress)
    doc = {
        "format": FORMAT,
        "sweep": sweep_dir.name,
        "created": dt.datetime.now().isoformat(timespec="seconds"),
        "zoo": str(zoo),
        "zoo_kind": kind,
        "split_seed": split_seed,
        "split": scheme,
        "snapshot_steps": snapshots,
        "seeds": [int(s) for s in seeds],
        "predictor": out["predictor"],
        "representation": "encoder output divided by its L2 norm (16-d), frozen",
        "train_splits": ["train", "ood_train"],
        "test_splits": ["val", "ood_test"],
        "targets": {t.name: {"kind": t.form, "outputs": t.n_out, "metrics": list(t.metrics), "description": t.description}
                    for t in targets_for(kind, snapshots)},
        "rows": next(iter(out["encoders"].values()), out["baselines"]["random"])["rows"],
        "encoders": out["encoders"],
        "baselines": out["baselines"],
        "skipped": skipped,
        "chance": chance_levels(kind, snapshots),
        "final": final,
        "seconds": round(time.time() - t_start, 1),
    }
    doc = jsonable(doc)
    atomic_write_json(folder.downstream_json, doc)
    update_summary(sweep_dir, doc)
    return doc


def evaluate_final_seeds(folder: SweepFolder, table, kind: str, split_seed: int, seeds: Sequence[int], cfg,
                         device, scheme: str, snapshots: Sequence[int], progress: bool = False) -> dict:
    """Downstream metrics for every final seed of every encoder's best configuration (``final.json``).

    Nested: for each encoder seed the predictors train with every predictor seed and the seed's
    figure is their mean; the spread that matters, over encoder seeds, is then a mean with its 95 %
    Student-t interval. Returns ``{encoder: {"seeds", "values": {target.metric: {split: [per
    encoder seed]}}, "intervals": {target.metric: {split: interval}}, "effective_dim": [...]}}``."""
    from .downstream import evaluate_representations, participation_ratio, representations
    from .statistics import mean_interval
    from ..results.records import read_final
    from ..train import load_checkpoint

    out = {}
    for enc, roles in read_final(folder).items():
        best = roles.get("best")
        if best is None:
            continue
        done, values, dims = [], {}, []
        t0 = time.time()
        for seed, trial_id, status in zip(best.seeds, best.trial_ids, best.status):
            rec_path = folder.final_record(enc, trial_id)
            ckpt = json.loads(rec_path.read_text()).get("checkpoint") if rec_path.is_file() else None
            if status == "failed" or not ckpt or not Path(ckpt).is_dir():
                continue
            model, _ = load_checkpoint(ckpt, device=device)
            reps = representations(model.encoder, table, device=device)
            res = evaluate_representations(reps, table, kind, split_seed, seeds, snapshot_steps=snapshots, config=cfg,
                                           device=device, scheme=scheme)
            done.append(seed)
            dims.append(participation_ratio(reps))
            for target, per_split in res["results"].items():
                for split, metrics in per_split.items():
                    for metric, cell in metrics.items():
                        values.setdefault(f"{target}.{metric}", {}).setdefault(split, []).append(cell["mean"])
        if not done:
            continue
        out[enc] = {"seeds": done, "values": values, "effective_dim": dims,
                    "intervals": {k: {s: mean_interval(v).to_dict() for s, v in per.items()} for k, per in values.items()}}
        if progress:
            print(f"  downstream {enc:<15} {len(done)} final seed(s) {time.time() - t0:6.1f} s", flush=True)
    return out


# ------------------------------------------------------------------------------------------------
# summary.csv


def _cell(v) -> str:
    return "" if v is None else repr(float(v)) if isinstance(v, float) else str(v)


def summary_csv_columns(doc: Mapping) -> dict:
    """The downstream columns of ``summary.csv``, as data: ``csv_fields`` and ``csv`` (encoder ->
    field -> value): every metric's mean and std over predictor seeds, and the effective dimension."""
    kind, snaps = doc["zoo_kind"], doc.get("snapshot_steps")
    encoders = doc.get("encoders", {})
    fields = [c + s for c, *_ in metric_columns(kind, snaps) for s in ("", "_std")]
    csv_rows = {}
    for name, res in encoders.items():
        flat = flat_metrics(res, kind, snaps)
        csv_rows[name] = {f: _cell(flat.get(f)) for f in fields}
        csv_rows[name]["effective_dim"] = _cell(res.get("effective_dim"))
    return {"csv_fields": fields + ["effective_dim"], "csv": csv_rows}


def update_summary(sweep_dir: Path, doc: Mapping) -> None:
    """Write ``summary.csv`` and ``best.json`` again, whole, from the trial records and ``doc``: the
    sweep's columns and the downstream ones (``summary.md`` is the report's: rnnray.report.summary)."""
    from ..sweep import collect_trials, summarise, write_summary

    folder = SweepFolder(Path(sweep_dir))
    cfg = sweep_config(folder)
    records = {enc: collect_trials(folder, enc) for enc in cfg.encoders}
    rows, best = summarise(sweep_dir, cfg, records)
    write_summary(sweep_dir, rows, best, cfg, downstream=summary_csv_columns(doc))


def sweep_config(folder: SweepFolder):
    """The sweep's validated config from ``sweep.json``; one line naming the file when it does not validate."""
    from ..sweep import SweepConfig

    sweep = read_json(folder.sweep_json, "not a sweep folder")
    try:
        return SweepConfig.model_validate(sweep["config"])
    except Exception as e:  # noqa: BLE001 - pydantic's ValidationError or a missing key: one line
        raise UsageError(f"{folder.sweep_json}: its sweep config does not validate ({e.__class__.__name__})") from None
