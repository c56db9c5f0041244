"""``load_best``: a trained encoder back from the results store, ready to embed RNN weights.

Where a sweep's files lie is :mod:`rnnray.results.folder`'s business; its names are re-exported here.
"""

from __future__ import annotations

import json
from pathlib import Path

from .folder import DEFAULT_RESULTS, ResultsError, SweepFolder, latest_pointer, resolve_sweep, write_latest

__all__ = ["DEFAULT_RESULTS", "LoadedEncoder", "ResultsError", "SweepFolder", "latest_pointer", "load_best", "resolve_sweep",
           "write_latest"]


class LoadedEncoder:
    """A trained encoder, ready to embed RNN weights: ``embed(flat_params) -> (B, 16)``, unit norm.
    ``conditioning``: how the emulator it was trained with read its representations (``bos`` or
    ``every_step``, from the checkpoint)."""

    def __init__(self, name: str, module, config: dict, metrics: dict, layout, zoo_kind: str, checkpoint: str, device,
                 conditioning: str = "bos"):
        self.name, self.module, self.config, self.metrics = name, module, config, metrics
        self.layout, self.zoo_kind, self.checkpoint = layout, zoo_kind, checkpoint
        self.device, self.conditioning = device, conditioning

    def to(self, device) -> "LoadedEncoder":
        import torch

        self.device = torch.device(device)
        self.module.to(self.device)
        return self

    def embed(self, flat_params, batch_size: int = 1024):
        """(B, P) parameter vectors (numpy or torch) -> (B, 16) float32 torch tensor, L2-normalised."""
        import torch
        import torch.nn.functional as F

        x = torch.as_tensor(flat_params, dtype=torch.float32)
        if x.dim() == 1:
            x = x.unsqueeze(0)
        if x.shape[-1] != self.layout.num_params:
            raise ValueError(f"expected parameter vectors of length {self.layout.num_params} ({self.zoo_kind}), got {x.shape[-1]}")
        self.module.eval()
        outs = []
        with torch.no_grad():
            for a in range(0, x.shape[0], batch_size):
                outs.append(F.normalize(self.module(x[a : a + batch_size].to(self.device)), dim=-1).cpu())
        return torch.cat(outs)

    def __repr__(self) -> str:
        return (f"LoadedEncoder({self.name!r}, params={self.metrics.get('n_params')}, val_loss={self.metrics.get('best_val_loss')}, "
                f"conditioning={self.conditioning!r}, device={self.device})")


def _named_in_sweep(folder: SweepFolder, name: str) -> str:
    """The name the sweep gave the encoder ``name`` names: a plug-in the sweep listed by its
    registered name may be asked for by its import path, and the other way round (``sweep.json``
    records where each encoder's class lives). ``name`` itself when nothing matches."""
    from ..encoders.catalog import PluginError, reference_of

    try:
        record = json.loads(folder.sweep_json.read_text()).get("encoders") or {}
        wanted = reference_of(name)
    except (OSError, ValueError, AttributeError, PluginError):
        return name
    return next((n for n, r in record.items() if isinstance(r, dict) and r.get("reference") == wanted), name)


def load_best(name: str, results: str | Path | None = None, device=None) -> LoadedEncoder:
    """The best trained encoder of that name from the latest sweep (or the given results / sweep): a
    built-in's name, a plug-in's import path (``"mylab.encoders:GatedProbe"``) or its registered name.

    With final runs (``final.seeds``), the best configuration's seed with the lowest validation loss:
    the one checkpoint that is best on the split the search already selects on (the seeds' spread is
    in ``final.json``); without them, the search's best trial."""
    import torch

    from ..train import checkpoint_conditioning, load_checkpoint

    sweep = resolve_sweep(results)
    best_file = SweepFolder(sweep).best_json
    try:
        best = json.loads(best_file.read_text()) if best_file.is_file() else {}
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ResultsError(f"{best_file}: not readable as JSON ({e.__class__.__name__}); re-run the sweep with --resume "
                           "to write it again") from None
    if isinstance(best, dict) and name not in best:
        name = _named_in_sweep(SweepFolder(sweep), name)
    if not isinstance(best, dict) or name not in best or not isinstance(best[name], dict):
        avail = ", ".join(sorted(best)) if isinstance(best, dict) else "none (best.json is not an object)"
        raise ResultsError(f"no trained {name!r} encoder in {sweep} (available: {avail or 'none'})")
    entry = best[name]
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ckpt = entry.get("checkpoint")
    if not ckpt or not Path(ckpt).is_dir():
        raise ResultsError(f"{name}: its best checkpoint {ckpt!r} (named in {best_file}) is missing")
    try:
        model, meta = load_checkpoint(ckpt, device=dev)
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file in the checkpoint: one line naming it
        raise ResultsError(f"{name}: its best checkpoint {ckpt} cannot be loaded ({e.__class__.__name__}: "
                           f"{str(e).splitlines()[0][:200] if str(e) else 'no detail'})") from None
    from ..weights import Layout

    stored = meta.get("layout")
    layout = Layout.from_json(stored) if isinstance(stored, str) else Layout.from_dict(stored) if isinstance(stored, dict) else stored
    metrics = {k: entry.get(k) for k in ("best_val_loss", "best_ood_loss", "n_params", "trial_id", "seed")}
    return LoadedEncoder(name, model.encoder.eval(), entry.get("config") or {}, metrics, layout, meta.get("zoo_kind"),
                         entry["checkpoint"], dev, conditioning=checkpoint_conditioning(meta))
