"""``python -m rnnray.report RESULTS_DIR``: ``report.md`` and PNG figures for one sweep.

Written into the sweep folder: ``report.md`` and ``figures/``:

* ``emulation_loss.png`` — best validation and OOD emulation loss of every trial of each encoder:
  bars are the mean over the encoder's finished trials, error bars their standard deviation, dots
  single trials, a black cross the selected (best-validation) trial;
* ``emulation_curves.png`` — validation emulation loss against training step of each best trial;
* ``downstream.png`` — every headline downstream metric, encoders and baselines, validation and
  OOD-test half: mean ± std over predictor seeds, dots single seeds (from ``downstream.json``; the
  evaluation runs first when that file is missing, unless told not to);
* ``performance_prediction.png`` — what the emulator says about an RNN's performance against the
  RNN's real performance, on validation and OOD snapshots (never seen in encoder training);
* ``pca.png`` — 2-D PCA of each encoder's representations, coloured by task and by accuracy.

Performance prediction, the choices:

* Zoo A: the emulator, conditioned on an RNN's representation, *samples* strings (BOS, then 41
  tokens drawn from its own softmax, fed back) exactly as the zoo sampled the RNN for its stored
  accuracy; the emulated accuracy is the fraction of its samples in the RNN's language
  (:func:`rnnray.zoo.languages.in_language`), compared with the stored ``accuracy``.
* Zoo B: the emulator runs on the snapshot's stored input sequences (held-out digits) and its
  last-step argmax is scored against the digits' labels. Labels are not stored in the zoo, so they
  are recovered by replaying the zoo's deterministic choice of stored digits (the trainer's
  per-(seed, run, step) generator over the held-out digits) and *verified* by re-rendering those
  digits and comparing them with the stored inputs; the emulated accuracy is compared with the
  stored held-out accuracy (measured on ``eval_digits`` held-out digits, so part of the scatter is
  the sampling noise of the stored 100 digits; the report gives the RNN's own accuracy on the same
  digits as the reference for that noise). When labels cannot be recovered (the digits are not on
  disk, or the check fails) the figure falls back to the emulator's last-step agreement with the
  RNN's stored predictions, and says so.
* Snapshots: the validation and OOD splits, at most ``max_snapshots`` of them (a fixed-seed
  sample), the same for every encoder.

Figures are drawn with matplotlib's object API on Agg canvases (no pyplot, no global backend
change) and, like every file here, written under a temporary name and renamed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .cli import UsageError, friendly_errors
from .evaluate import (
    DOWNSTREAM_FILE,
    check_device,
    column_label,
    default_device,
    downstream_table,
    evaluate_sweep,
    headline,
    load_encoders,
    read_json,
    resolve,
)
from .atomic import atomic_write_text, replacing

REPORT_FILE = "report.md"
FIGURES = "figures"
FORMAL_SAMPLE_LENGTH = 41  # tokens after BOS, as the zoo sampled its RNNs
PCA_MAX_ROWS = 4000
SNAPSHOT_SEED = 0


# ------------------------------------------------------------------------------------------------
# small numerics


def pearson(x, y) -> float:
    """Pearson correlation; NaN when either side is constant or fewer than 2 points."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


def pca_2d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project rows on the two leading principal axes: (N, 2) coordinates and the explained
    variance ratio of each axis."""
    x = np.asarray(x, dtype=np.float64)
    xc = x - x.mean(0, keepdims=True)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    total = float((s ** 2).sum())
    k = min(2, vt.shape[0])
    coords = xc @ vt[:k].T
    if k < 2:
        coords = np.concatenate([coords, np.zeros((len(x), 2 - k))], 1)
    ratio = (s[:2] ** 2) / total if total > 0 else np.zeros(2)
    return coords, np.pad(ratio, (0, 2 - len(ratio)))


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    v = [x for x in values if x is not None and math.isfinite(x)]
    if not v:
        return math.nan, math.nan
    return float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0


# ------------------------------------------------------------------------------------------------
# emulated performance


@torch.no_grad()
def sample_emulator(emulator, reps: torch.Tensor, n_samples: int, length: int = FORMAL_SAMPLE_LENGTH,
                    generator: torch.Generator | None = None, max_batch: int = 8192, return_logprobs: bool = False):
    """Strings sampled from a formal-language emulator conditioned on representations (K, 16):
    (K, n_samples, length) token ids after BOS (and, with ``return_logprobs``, the log-probability
    of each sampled token, same shape). The representation enters at the BOS step, as in
    :class:`rnnray.emulator.Emulator`'s forward; each sampled token is the next input, the LSTM
    state is carried, so a step costs one LSTM step rather than a pass over the prefix."""
    from .zoo.languages import BOS

    device = next(emulator.parameters()).device
    per = max(1, max_batch // n_samples)
    chunks = []
    for a in range(0, len(reps), per):
        r = reps[a:a + per].to(device).repeat_interleave(n_samples, 0)
        tok = torch.full((len(r), 1), BOS, dtype=torch.long, device=device)
        x = emulator.embed_inputs(tok) + emulator.rep_proj(F.normalize(r, dim=-1)).unsqueeze(1)
        state, out, lps = None, [], []
        for _ in range(length):
            h, state = emulator.lstm(x, state)
            logp = F.log_softmax(emulator.head(h[:, -1]).float(), dim=-1)
            tok = torch.multinomial(logp.exp().cpu(), 1, generator=generator).to(device)
            out.append(tok)
            lps.append(logp.gather(1, tok))
            x = emulator.embed_inputs(tok)
        chunks.append((torch.cat(out, 1).view(-1, n_samples, length).cpu(), torch.cat(lps, 1).view(-1, n_samples, length).cpu()))
    tokens = torch.cat([c[0] for c in chunks])
    return (tokens, torch.cat([c[1] for c in chunks])) if return_logprobs else tokens


@torch.no_grad()
def emulated_language_accuracy(model, params: np.ndarray, tasks: np.ndarray, n_samples: int = 100,
                               seed: int = 0, device=None) -> np.ndarray:
    """Zoo A: fraction of the emulator's samples in each RNN's language, (K,)."""
    from .zoo.languages import in_language

    device = torch.device(device or "cpu")
    model = model.to(device).eval()
    rep = model.encoder(torch.from_numpy(np.array(params, dtype=np.float32)).to(device)).float()
    gen = torch.Generator().manual_seed(seed)
    samples = sample_emulator(model.emulator, rep, n_samples, generator=gen)
    return in_language(samples, torch.as_tensor(np.asarray(tasks), dtype=torch.long)).float().mean(-1).numpy()


@torch.no_grad()
def emulated_last_step_predictions(model, params: np.ndarray, inputs: np.ndarray, device=None, max_batch: int = 2048) -> np.ndarray:
    """Zoo B: the emulator's last-step class for each stored input sequence, (K, N)."""
    device = torch.device(device or "cpu")
    model = model.to(device).eval()
    k, n = inputs.shape[:2]
    rep = model.encoder(torch.from_numpy(np.array(params, dtype=np.float32)).to(device)).float()
    x = torch.from_numpy(np.array(inputs, dtype=np.float32)).reshape(k * n, *inputs.shape[2:])
    r = rep.repeat_interleave(n, 0)
    out = [model.emulator(r[a:a + max_batch], x[a:a + max_batch].to(device))[:, -1].argmax(-1).cpu()
           for a in range(0, k * n, max_batch)]
    return torch.cat(out).view(k, n).numpy()


# ------------------------------------------------------------------------------------------------
# reading the sweep


def trial_records(sweep_dir: Path) -> dict[str, list[dict]]:
    """Finished trials per encoder (``trials/<encoder>/<trial>/trial.json``)."""
    out: dict[str, list[dict]] = {}
    for f in sorted((sweep_dir / "trials").glob("*/*/trial.json")):
        try:
            rec = json.loads(f.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        out.setdefault(rec.get("encoder") or f.parent.parent.name, []).append(rec)
    return out


def choose_rows(table, kind: str, split_seed: int, max_snapshots: int) -> tuple[np.ndarray, np.ndarray]:
    """Validation and OOD rows (a fixed-seed sample of at most ``max_snapshots``), and each one's
    split label ("val" / "ood")."""
    from .downstream import split_rows

    rows = split_rows(table, kind, split_seed)
    cand = np.concatenate([rows["val"], rows["ood_train"], rows["ood_test"]])
    label = np.array(["val"] * len(rows["val"]) + ["ood"] * (len(cand) - len(rows["val"])))
    if len(cand) > max_snapshots:
        pick = np.sort(np.random.default_rng(SNAPSHOT_SEED).choice(len(cand), max_snapshots, replace=False))
        cand, label = cand[pick], label[pick]
    order = np.argsort(cand)
    return cand[order], label[order]


def _read_rows(zoo: str, columns: list[str], run_ids: np.ndarray) -> dict[tuple[int, int], dict]:
    """Selected columns of the given runs' rows, keyed by (run_id, step), read shard by shard."""
    import pyarrow.parquet as pq

    from .zoo.storage import shard_paths

    _, files = shard_paths(zoo, checksums=False)
    want = sorted({int(r) for r in run_ids})
    out = {}
    for f in files:
        t = pq.read_table(f, columns=["run_id", "step", *columns], filters=[("run_id", "in", want)])
        if not len(t):
            continue
        cols = {c: _np(t, c) for c in ["run_id", "step", *columns]}
        for i in range(len(t)):
            out[(int(cols["run_id"][i]), int(cols["step"][i]))] = {c: cols[c][i] for c in columns}
    return out


def _np(table, name):
    col = table.column(name).combine_chunks()
    return col.to_numpy_ndarray() if hasattr(col, "to_numpy_ndarray") else col.to_numpy(zero_copy_only=False)


def performance_prediction(models: Mapping, table, manifest: Mapping, zoo: str, split_seed: int, *,
                           max_snapshots: int = 128, n_samples: int = 100, device=None) -> dict:
    """Emulated against real performance for every encoder on the same snapshots (see the module
    docstring). Returns ``{"quantity", "real", "split", "encoders": {name: {"emulated": [...],
    "pearson", "mae"}}, ...}``."""
    kind = manifest["kind"]
    rows, split = choose_rows(table, kind, split_seed, max_snapshots)
    run_ids, steps = _np(table, "run_id")[rows], _np(table, "step")[rows]
    params = _np(table, "params")[rows]
    real = _np(table, "accuracy")[rows].astype(np.float64)
    out: dict = {"rows": len(rows), "split": split.tolist(), "real": real.tolist(), "encoders": {}}
    if kind == "formal_languages":
        tasks = _np(table, "task")[rows]
        out.update(quantity="accuracy (fraction of samples in the language)",
                   method=f"{n_samples} strings sampled from the emulator per RNN, checked with in_language")
        for name, model in models.items():
            emu = emulated_language_accuracy(model, params, tasks, n_samples=n_samples, device=device)
            out["encoders"][name] = {"emulated": emu.tolist(), "pearson": pearson(real, emu), "mae": float(np.abs(emu - real).mean())}
        return out
    stored = _read_rows(zoo, ["inputs", "logits"], run_ids)
    inputs = np.stack([stored[(int(r), int(s))]["inputs"] for r, s in zip(run_ids, steps)])
    logits = np.stack([stored[(int(r), int(s))]["logits"] for r, s in zip(run_ids, steps)])
    rnn_pred = np.asarray(logits, dtype=np.float32)[:, :, -1].argmax(-1)
    from .zoo.trainer import stored_digit_labels

    labels = stored_digit_labels(manifest, run_ids, steps, _np(table, "angle")[rows], inputs)
    if labels is not None:
        ref = (rnn_pred == labels).mean(-1)
        out.update(quantity="held-out accuracy", labels="recovered and verified",
                   method="emulator's last-step accuracy on each snapshot's stored held-out digits",
                   rnn_same_digits=ref.tolist(), rnn_same_digits_pearson=pearson(real, ref))
    else:
        out.update(quantity="last-step agreement with the RNN (labels unavailable)", labels="unavailable",
                   method="fraction of stored inputs where the emulator's last-step class equals the RNN's")
    for name, model in models.items():
        pred = emulated_last_step_predictions(model, params, inputs, device=device)
        emu = (pred == labels).mean(-1) if labels is not None else (pred == rnn_pred).mean(-1)
        out["encoders"][name] = {"emulated": emu.tolist(), "pearson": pearson(real, emu), "mae": float(np.abs(emu - real).mean()),
                                 "agreement": float((pred == rnn_pred).mean())}
    return out


# ------------------------------------------------------------------------------------------------
# figures


def _figure(w: float, h: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=110, layout="constrained")


def save_figure(fig, path: Path) -> Path:
    with replacing(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def _grid(n: int, ncols: int = 3) -> tuple[int, int]:
    ncols = max(1, min(ncols, n))
    return math.ceil(n / ncols), ncols


def fig_emulation_loss(trials: Mapping[str, list[dict]], best: Mapping, encoders: Sequence[str], path: Path) -> Path:
    fig = _figure(max(5.0, 1.2 * len(encoders) + 2), 3.8)
    ax = fig.add_subplot(1, 1, 1)
    rng = np.random.default_rng(0)
    for j, (key, label, color) in enumerate((("best_val_loss", "validation", "tab:blue"), ("best_ood_loss", "OOD", "tab:orange"))):
        for i, enc in enumerate(encoders):
            vals = [r.get(key) for r in trials.get(enc, []) if r.get(key) is not None and math.isfinite(r[key])]
            if not vals and (best.get(enc) or {}).get(key) is not None:
                vals = [best[enc][key]]
            x = i + (j - 0.5) * 0.38
            if vals:
                m, s = _mean_std(vals)
                ax.bar(x, m, 0.36, yerr=s, color=color, alpha=0.55, capsize=3, label=label if i == 0 else None)
                ax.scatter(x + rng.uniform(-0.08, 0.08, len(vals)), vals, s=12, color=color, edgecolor="k", linewidth=0.4, zorder=3)
            sel = (best.get(enc) or {}).get(key)
            if sel is not None:
                ax.scatter([x], [sel], marker="x", color="k", s=40, zorder=4, label="selected trial" if i == 0 and j == 0 else None)
    ax.set_xticks(range(len(encoders)), encoders, rotation=20)
    ax.set_ylabel("emulation loss (total variation)")
    ax.set_title("Emulation loss per encoder\n(bars: mean ± std over trials; dots: trials)", fontsize=10)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def fig_emulation_curves(trials: Mapping[str, list[dict]], best: Mapping, path: Path) -> Path | None:
    curves = {}
    for enc, b in best.items():
        rec = next((r for r in trials.get(enc, []) if r.get("trial_id") == (b or {}).get("trial_id")), None)
        hist = (rec or {}).get("history") or []
        pts = [(h["step"], h["val_loss"]) for h in hist if "step" in h and h.get("val_loss") is not None]
        if pts:
            curves[enc] = pts
    if not curves:
        return None
    fig = _figure(6.0, 3.8)
    ax = fig.add_subplot(1, 1, 1)
    for enc, pts in curves.items():
        s, v = zip(*pts)
        ax.plot(s, v, marker="o", ms=3, label=enc)
    ax.set_xlabel("training step")
    ax.set_ylabel("validation emulation loss")
    ax.set_title("Best trial of each encoder")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def _downstream_entries(doc: Mapping) -> list[tuple[str, Mapping]]:
    ents = list(doc.get("encoders", {}).items())
    base = doc.get("baselines", {})
    if "random" in base:
        ents.append(("random", base["random"]))
    if "supervised" in base:
        ents.append((f"supervised\n({base['supervised'].get('encoder', '')})", base["supervised"]))
    return ents


def fig_downstream(doc: Mapping, path: Path) -> Path:
    pairs = headline(doc["zoo_kind"], doc.get("snapshot_steps"))
    ents = _downstream_entries(doc)
    nr, nc = _grid(len(pairs))
    fig = _figure(max(4.5, 0.9 * len(ents) + 1.5) * nc, 3.4 * nr)
    for k, (target, metric) in enumerate(pairs):
        ax = fig.add_subplot(nr, nc, k + 1)
        for j, (split, label, color) in enumerate((("val", "validation", "tab:blue"), ("ood_test", "OOD test", "tab:orange"))):
            for i, (_, res) in enumerate(ents):
                cell = (res.get("results", {}).get(target, {}).get(split, {}) or {}).get(metric)
                if not cell or cell.get("mean") is None:
                    continue
                x = i + (j - 0.5) * 0.38
                ax.bar(x, cell["mean"], 0.36, yerr=cell.get("std") or 0.0, color=color, alpha=0.55, capsize=3,
                       label=label if i == 0 else None)
                vals = [v for v in cell.get("values", []) if v is not None]
                ax.scatter([x] * len(vals), vals, s=10, color=color, edgecolor="k", linewidth=0.4, zorder=3)
        ax.set_xticks(range(len(ents)), [n for n, _ in ents], rotation=30, fontsize=8)
        ax.set_title(column_label(target, metric), fontsize=10)
        if metric == "r2":
            ax.axhline(0.0, color="grey", lw=0.8)
        if k == 0:
            ax.legend(fontsize=8)
    fig.suptitle(f"Downstream tasks: mean ± std over {len(doc.get('seeds', []))} predictor seeds (dots: seeds)")
    return save_figure(fig, path)


def fig_performance(pp: Mapping, path: Path) -> Path | None:
    encs = list(pp.get("encoders", {}))
    if not encs:
        return None
    nr, nc = _grid(len(encs))
    fig = _figure(3.6 * nc, 3.4 * nr)
    real = np.asarray(pp["real"])
    split = np.asarray(pp["split"])
    for k, enc in enumerate(encs):
        ax = fig.add_subplot(nr, nc, k + 1)
        e = pp["encoders"][enc]
        emu = np.asarray(e["emulated"])
        for s, color in (("val", "tab:blue"), ("ood", "tab:orange")):
            m = split == s
            ax.scatter(real[m], emu[m], s=12, color=color, alpha=0.75, label=s)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8)
        ax.set_xlim(-0.03, 1.03)
        ax.set_ylim(-0.03, 1.03)
        r = e["pearson"]
        ax.set_title(f"{enc}: r = {'—' if r is None or not math.isfinite(r) else f'{r:.2f}'}, MAE = {e['mae']:.3f}", fontsize=9)
        ax.set_xlabel(f"real {pp.get('quantity', 'accuracy').split(' (')[0]}", fontsize=8)
        ax.set_ylabel("emulated", fontsize=8)
        if k == 0:
            ax.legend(fontsize=7)
    fig.suptitle(f"Emulator's performance prediction ({pp.get('method', '')})", fontsize=9)
    return save_figure(fig, path)


def fig_pca(reps: Mapping[str, np.ndarray], colour_task: np.ndarray, task_label: str, task_cmap: str,
            accuracy: np.ndarray, path: Path) -> Path | None:
    if not reps:
        return None
    fig = _figure(8.0, 3.3 * len(reps))
    for k, (enc, z) in enumerate(reps.items()):
        xy, ratio = pca_2d(z)
        for j, (c, cmap, label) in enumerate(((colour_task, task_cmap, task_label), (accuracy, "viridis", "accuracy"))):
            ax = fig.add_subplot(len(reps), 2, 2 * k + j + 1)
            sc = ax.scatter(xy[:, 0], xy[:, 1], c=c, cmap=cmap, s=6, alpha=0.8)
            fig.colorbar(sc, ax=ax, label=label)
            ax.set_title(f"{enc}: coloured by {label}", fontsize=9)
            ax.set_xlabel(f"PC1 ({ratio[0]:.0%})", fontsize=8)
            ax.set_ylabel(f"PC2 ({ratio[1]:.0%})", fontsize=8)
    return save_figure(fig, path)


# ------------------------------------------------------------------------------------------------
# report.md


def _f(x, spec=".4f") -> str:
    return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def emulation_table(trials: Mapping[str, list[dict]], best: Mapping, encoders: Sequence[str]) -> list[str]:
    lines = ["| encoder | trials | selected: val loss | selected: OOD loss | paper preset (trial 0): val loss | tuning gain "
             "| val loss over trials | OOD loss over trials | parameters |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for enc in encoders:
        recs = trials.get(enc, [])
        b = best.get(enc) or {}
        cells = []
        for key in ("best_val_loss", "best_ood_loss"):
            m, s = _mean_std([r.get(key) for r in recs])
            cells.append("—" if not math.isfinite(m) else f"{m:.4f} ± {s:.4f}")
        paper = next((r for r in recs if r.get("paper_config") and r.get("status") != "failed"), None)
        pv, bv = (paper or {}).get("best_val_loss"), b.get("best_val_loss")
        gain = "—" if pv is None or bv is None else ("0 (selected = trial 0)" if b.get("paper_config") else f"{pv - bv:.4f}")
        n = b.get("n_params")
        lines.append(f"| {enc} | {len(recs)} | {_f(bv)} | {_f(b.get('best_ood_loss'))} | {_f(pv)} | {gain} | {cells[0]} | {cells[1]} "
                     f"| {'—' if n is None else f'{int(n):,}'} |")
    return lines


def write_report(
    sweep_dir: str | Path,
    *,
    device=None,
    max_snapshots: int = 128,
    n_samples: int = 100,
    evaluate_missing: bool = True,
    progress: bool = True,
) -> Path:
    """Write ``report.md`` and ``figures/*.png`` into the sweep folder; return the report's path.
    Runs the downstream evaluation first when ``downstream.json`` is missing (``evaluate_missing``)."""
    from .downstream import split_rows
    from .evaluate import zoo_and_seed
    from .zoo import load_table, read_manifest
    from .zoo.languages import ALL_TASKS

    t0 = time.time()
    sweep_dir = Path(sweep_dir)
    sweep = read_json(sweep_dir / "sweep.json", "not a sweep folder")
    best = read_json(sweep_dir / "best.json", "no best trials yet: has the sweep finished a trial?")
    device = torch.device(device) if device is not None else default_device()
    fig_dir = sweep_dir / FIGURES
    ds_path = sweep_dir / DOWNSTREAM_FILE
    doc = json.loads(ds_path.read_text()) if ds_path.is_file() else None
    if doc is None and evaluate_missing:
        if progress:
            print(f"{ds_path.name} missing: running the downstream evaluation first", flush=True)
        doc = evaluate_sweep(sweep_dir, device=device, progress=progress)
    trials = trial_records(sweep_dir)
    encoders = list((sweep.get("config") or {}).get("encoders") or []) or list(best)
    encoders += [e for e in best if e not in encoders]
    models, metas, skipped = load_encoders(best, device)
    zoo, split_seed = zoo_and_seed(sweep, metas, sweep_dir)
    manifest = read_manifest(zoo)
    kind = manifest["kind"]
    cols = ["run_id", "step", "params", "accuracy", "task" if kind == "formal_languages" else "angle"]
    table = load_table(zoo, columns=cols, checksums=False)
    figures: dict[str, Path | None] = {}

    if progress:
        print(f"report: {len(models)} encoder(s), zoo {zoo} ({kind}, {len(table)} snapshots)", flush=True)
    figures["emulation_loss"] = fig_emulation_loss(trials, best, encoders, fig_dir / "emulation_loss.png")
    figures["emulation_curves"] = fig_emulation_curves(trials, best, fig_dir / "emulation_curves.png")
    figures["downstream"] = fig_downstream(doc, fig_dir / "downstream.png") if doc else None

    pp = performance_prediction(models, table, manifest, zoo, split_seed, max_snapshots=max_snapshots,
                                n_samples=n_samples, device=device)
    figures["performance_prediction"] = fig_performance(pp, fig_dir / "performance_prediction.png")
    if progress:
        print(f"  performance prediction on {pp['rows']} snapshots done ({time.time() - t0:.0f} s)", flush=True)

    from .downstream import representations

    n = len(table)
    pick = np.arange(n) if n <= PCA_MAX_ROWS else np.sort(np.random.default_rng(SNAPSHOT_SEED).choice(n, PCA_MAX_ROWS, replace=False))
    params = _np(table, "params")[pick]
    reps = {name: representations(m.encoder, params, device=device) for name, m in models.items()}
    acc = _np(table, "accuracy")[pick]
    if kind == "formal_languages":
        index = {tuple(int(v) for v in t): i for i, t in enumerate(ALL_TASKS)}
        colour = np.array([index[tuple(int(v) for v in t)] for t in _np(table, "task")[pick]])
        task_label, cmap = "task (index of t1 t2 t3, base 6)", "turbo"
    else:
        colour, task_label, cmap = _np(table, "angle")[pick], "angle (degrees)", "twilight"
    figures["pca"] = fig_pca(reps, colour, task_label, cmap, acc, fig_dir / "pca.png")

    for name, made in figures.items():  # a figure not drawn this time must not linger from an earlier report
        if made is None:
            (fig_dir / f"{name}.png").unlink(missing_ok=True)
    rows = split_rows(table, kind, split_seed)
    cfg = sweep.get("config") or {}
    lines = [
        f"# Report: sweep `{sweep_dir.name}`",
        "",
        f"Zoo `{zoo}` ({kind}): {len(table)} snapshots; split seed {split_seed}: "
        + ", ".join(f"{s} {len(rows[s])}" for s in ("train", "val", "ood_train", "ood_test")) + " snapshots. "
        + (f"Budget {cfg['budget']:,} parameters ± {cfg.get('tolerance', 0):.0%}." if cfg.get("budget") else ""),
        "",
        "## Emulation loss",
        "",
        "Total variation between the RNN's and the emulator's next-step distributions (lower is better). "
        "'Selected' is each encoder's best-validation trial (its OOD loss at that same checkpoint); the spread is "
        "over the encoder's finished trials.",
        "",
        *emulation_table(trials, best, encoders),
        "",
        f"![emulation loss]({FIGURES}/emulation_loss.png)",
    ]
    if figures["emulation_curves"]:
        lines += ["", f"![emulation curves]({FIGURES}/emulation_curves.png)"]
    lines += ["", "## Downstream tasks", ""]
    if doc:
        sup = doc.get("baselines", {}).get("supervised", {})
        ents = list(doc.get("encoders", {}).items()) + [
            ("baseline: random", doc.get("baselines", {}).get("random", {})),
            (f"baseline: supervised {sup.get('encoder', '')} (end to end)", sup)]
        lines += [
            f"A small MLP on frozen, L2-normalised representations, trained on the train split plus half of the OOD "
            f"tasks ({doc['rows'].get('fit')} snapshots), tested on the other OOD half ({doc['rows'].get('ood_test')}) "
            f"and on validation ({doc['rows'].get('val')}); mean ± std over predictor seeds {doc.get('seeds')}. "
            "Baselines: random unit vectors (chance), and an encoder trained end to end on each target.",
            "",
            "OOD-test half:",
            "",
            *downstream_table(doc, ents),
            "",
            "Validation:",
            "",
            *downstream_table(doc, ents, split="val"),
            "",
            f"![downstream]({FIGURES}/downstream.png)",
        ]
    else:
        lines.append(f"No `{DOWNSTREAM_FILE}` yet: run `python -m rnnray.evaluate {sweep_dir}`.")
    lines += ["", "## Performance prediction by the emulator", ""]
    if pp["encoders"]:
        lines += [f"Real {pp['quantity']} against the emulator's, on {pp['rows']} validation/OOD snapshots: "
                  f"{pp['method']}.", ""]
        head = "| encoder | Pearson r | MAE |" + (" agreement with RNN |" if kind == "mnist" else "")
        lines += [head, "| --- | --- | --- |" + (" --- |" if kind == "mnist" else "")]
        for enc, e in pp["encoders"].items():
            lines.append(f"| {enc} | {_f(e['pearson'], '.3f')} | {_f(e['mae'], '.3f')} |"
                         + (f" {_f(e.get('agreement'), '.3f')} |" if kind == "mnist" else ""))
        if "rnn_same_digits_pearson" in pp:
            lines += ["", f"Reference: the RNN's own accuracy on the same stored digits correlates with its stored held-out "
                          f"accuracy at r = {_f(pp['rnn_same_digits_pearson'], '.3f')} (the ceiling set by 100 digits)."]
        lines += ["", f"![performance prediction]({FIGURES}/performance_prediction.png)"]
    else:
        lines.append("No loadable encoder checkpoints.")
    lines += ["", "## Representations", ""]
    if figures["pca"]:
        lines += [f"2-D PCA of each encoder's representations of {len(pick)} snapshots, coloured by task and by accuracy.",
                  "", f"![pca]({FIGURES}/pca.png)"]
    else:
        lines.append("No loadable encoder checkpoints.")
    if skipped:
        lines += ["", "Skipped encoders: " + "; ".join(f"{k} ({v})" for k, v in skipped.items())]
    path = sweep_dir / REPORT_FILE
    atomic_write_text(path, "\n".join(lines) + "\n")
    if progress:
        made = [p.name for p in figures.values() if p]
        print(f"report: {path} with {len(made)} figures ({', '.join(made)}) in {time.time() - t0:.0f} s", flush=True)
    return path


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m rnnray.report", description="Write report.md and PNG figures for a sweep.")
    p.add_argument("results", help="a sweep folder, or a results directory (its latest sweep)")
    p.add_argument("--max-snapshots", type=int, default=128, help="validation/OOD snapshots for performance prediction")
    p.add_argument("--samples", type=int, default=100, help="emulator samples per snapshot (formal languages)")
    p.add_argument("--no-evaluate", action="store_true", help="do not run the downstream evaluation when downstream.json is missing")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = p.parse_args(argv)
    with friendly_errors(args.debug):
        if args.max_snapshots < 1 or args.samples < 1:
            raise UsageError("--max-snapshots and --samples must be at least 1")
        check_device(args.device)
        sweep_dir = resolve(args.results)
        read_json(sweep_dir / "best.json", "no best trials yet: has the sweep finished a trial?")
        path = write_report(sweep_dir, device=args.device, max_snapshots=args.max_snapshots, n_samples=args.samples,
                            evaluate_missing=not args.no_evaluate)
    print(f"report: {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
