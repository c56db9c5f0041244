"""The report's figures, from stored results: matplotlib's object API on Agg canvases (no pyplot, no
global backend change), each written under a temporary name and renamed."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..results.atomic import replacing
from .downstream import column_label, headline

PCA_MAX_ROWS = 4000


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


def _once(used: set[str], label: str) -> str | None:
    if label in used:
        return None
    used.add(label)
    return label


def fig_emulation_loss(trials: Mapping[str, list[dict]], best: Mapping, encoders: Sequence[str], path: Path) -> Path:
    fig = _figure(max(5.0, 1.2 * len(encoders) + 2), 3.8)
    ax = fig.add_subplot(1, 1, 1)
    rng = np.random.default_rng(0)
    labelled: set[str] = set()  # each label once, on the first encoder that has the bar (the first may have failed)
    for j, (key, label, color) in enumerate((("best_val_loss", "validation", "tab:blue"), ("best_ood_loss", "OOD", "tab:orange"))):
        for i, enc in enumerate(encoders):
            vals = [r.get(key) for r in trials.get(enc, []) if r.get(key) is not None and math.isfinite(r[key])]
            if not vals and (best.get(enc) or {}).get(key) is not None:
                vals = [best[enc][key]]
            x = i + (j - 0.5) * 0.38
            if vals:
                m, s = _mean_std(vals)
                ax.bar(x, m, 0.36, yerr=s, color=color, alpha=0.55, capsize=3, label=_once(labelled, label))
                ax.scatter(x + rng.uniform(-0.08, 0.08, len(vals)), vals, s=12, color=color, edgecolor="k", linewidth=0.4, zorder=3)
            sel = (best.get(enc) or {}).get(key)
            if sel is not None:
                ax.scatter([x], [sel], marker="x", color="k", s=40, zorder=4, label=_once(labelled, "selected trial"))
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


def fig_search_history(studies: Mapping[str, Mapping | None], path: Path) -> Path | None:
    """Each encoder's Optuna optimisation history: every finished trial's value and the best so far."""
    shown = {enc: s["history"] for enc, s in studies.items() if s and s["history"]}
    if not shown:
        return None
    fig = _figure(6.0, 3.8)
    ax = fig.add_subplot(1, 1, 1)
    for enc, hist in shown.items():
        n = [h["number"] for h in hist]
        line = ax.plot(n, [h["best"] for h in hist], drawstyle="steps-post", label=enc)[0]
        ax.scatter(n, [h["value"] for h in hist], s=12, color=line.get_color(), edgecolor="k", linewidth=0.4, zorder=3)
    ax.set_xlabel("Optuna trial (0: the paper preset)")
    ax.set_ylabel("validation emulation loss at the trial's end")
    ax.set_title("Optimisation history (dots: trials; line: best so far)", fontsize=10)
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
