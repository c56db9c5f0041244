"""The checkpoint format: what a run writes at each evaluation and how a model is rebuilt from it."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..results.atomic import atomic_write_bytes, atomic_write_text
from ..emulation.emulator import EmulationModel
from ..weights import Layout
from .model import build_model

FORMAT = "rnnray-emulation/1"
META_FILE, MODEL_FILE, STATE_FILE, HISTORY_FILE = "meta.json", "model.pt", "train_state.pt", "history.json"


def save_checkpoint(directory: str | Path, payload: Mapping[str, Any]) -> None:
    """Write a checkpoint: ``meta.json`` (how to rebuild the model), ``model.pt`` (encoder and
    emulator state dicts), ``train_state.pt`` (optimiser, step, best so far), ``history.json``.
    Every file is written whole (atomically), ``meta.json`` last: a checkpoint with its meta is complete."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    for name, obj in ((MODEL_FILE, payload["model"]), (STATE_FILE, payload["train_state"])):
        buf = io.BytesIO()
        torch.save(obj, buf)
        atomic_write_bytes(d / name, buf.getvalue())
    atomic_write_text(d / HISTORY_FILE, json.dumps(payload["history"]))
    atomic_write_text(d / META_FILE, json.dumps(payload["meta"], indent=1))


def read_checkpoint(directory: str | Path, map_location="cpu") -> dict[str, Any]:
    d = Path(directory)
    meta = json.loads((d / META_FILE).read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{d}: not an emulation checkpoint (format {meta.get('format')!r})")
    return {
        "meta": meta,
        "model": torch.load(d / MODEL_FILE, map_location=map_location, weights_only=True),
        "train_state": torch.load(d / STATE_FILE, map_location=map_location, weights_only=True),
        "history": json.loads((d / HISTORY_FILE).read_text()) if (d / HISTORY_FILE).exists() else [],
    }


def load_checkpoint(directory: str | Path, device="cpu") -> tuple[EmulationModel, dict[str, Any]]:
    """The trained model (in eval mode) and its metadata (encoder name, hparams, layout, zoo kind,
    the emulator's size and conditioning, parameter count, step and metrics at the checkpoint)."""
    d = Path(directory)
    meta = json.loads((d / META_FILE).read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{d}: not an emulation checkpoint (format {meta.get('format')!r})")
    layout = Layout.from_dict(meta["layout"])
    model = build_model(meta["encoder"], meta["hparams"], layout, meta["zoo_kind"], meta["emulator"]["hidden"],
                        checkpoint_conditioning(meta))
    state = torch.load(d / MODEL_FILE, map_location=device, weights_only=True)
    model.encoder.load_state_dict(state["encoder"])
    model.emulator.load_state_dict(state["emulator"])
    return model.to(device).eval(), meta


def checkpoint_conditioning(meta: Mapping[str, Any]) -> str:
    """How the checkpoint's emulator is conditioned (``meta["emulator"]["conditioning"]``); a
    checkpoint written before the setting existed is ``bos``, the only emulator there was then."""
    return (meta.get("emulator") or {}).get("conditioning", "bos")


def checkpoint_dir_name(step: int) -> str:
    return f"checkpoint_{step:09d}"
