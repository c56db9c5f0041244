"""What a sweep changes relative to the paper's settings, for the report to state beside its numbers.

A CPU-sized sweep trains fewer steps, a smaller emulator, a smaller zoo; its numbers are only
comparable with the paper's once the reader knows which levers moved. The paper's settings are the
defaults of the config models (``TrainSettings``, the zoo models: SPEC.md sections 2, 3 and 6) and
the paper's budget, so the list is computed from the stored ``sweep.json``, never written by hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PAPER_BUDGET = 1_200_000  # SPEC.md section 5b: every encoder at about 1.2 M parameters

# fields that do not change the science (bookkeeping, resources, evaluation cadence, seeds)
_TRAIN_IGNORED = {"eval_every", "eval_batch_size", "seed", "split_seed", "max_failures"}
# what a sweep.json written before a training setting existed ran with (absent is not the default):
# clipping was one global norm until grad_clip_scope came (the emulator was conditioned at BOS, the default)
_TRAIN_BEFORE_THE_FIELD = {"grad_clip_scope": "global"}
_ZOO_IGNORED = {"path", "seed", "resources", "kind", "data_root", "download"}


def _text(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_text(x) for x in v) + "]"
    return str(v)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def departures(cfg: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """``(setting, this sweep, the paper)`` for every science-relevant setting of a sweep's config
    (``sweep.json``'s ``config``) that differs from the paper's."""
    from ..config import TrainSettings
    from ..config.zoo import ZOO_MODELS, FormalLanguagesZoo

    out: list[tuple[str, str, str]] = []
    if cfg.get("budget") is not None and cfg["budget"] != PAPER_BUDGET:
        out.append(("budget", f"{cfg['budget']:,}", f"{PAPER_BUDGET:,}"))
    train = cfg.get("train") or {}
    for name, field in TrainSettings.model_fields.items():
        if name in _TRAIN_IGNORED or (name not in train and name not in _TRAIN_BEFORE_THE_FIELD):
            continue
        value = train.get(name, _TRAIN_BEFORE_THE_FIELD.get(name))
        if not _same(value, field.default):
            out.append((f"train.{name}", _text(value), _text(field.default)))
    paper_conditioning = TrainSettings.model_fields["conditioning"].default
    for key, space in (cfg.get("search") or {}).items():  # a searched conditioning may leave the paper's
        value = (space or {}).get("conditioning")
        values = value if isinstance(value, list) else [value]
        if value is not None and any(v != paper_conditioning for v in values):
            out.append((f"search.{key}.conditioning", _text(value), paper_conditioning))
    zoo = cfg.get("zoo")
    if isinstance(zoo, Mapping):  # a zoo built by this sweep (a path: an existing zoo, its own recipe)
        model = ZOO_MODELS.get(zoo.get("kind"), FormalLanguagesZoo)
        for name, field in model.model_fields.items():
            if name in _ZOO_IGNORED or name not in zoo:
                continue
            paper = field.default
            if name == "source":  # the paper trains on torchvision's 60,000 digits; auto takes them when it can
                if zoo[name] in ("auto", "torchvision"):
                    continue
                paper = "torchvision (60,000 training digits)"
            if not _same(zoo[name], paper):
                out.append((f"zoo.{name}", _text(zoo[name]), _text(paper)))
    return out
