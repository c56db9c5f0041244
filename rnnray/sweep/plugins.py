"""A sweep's plug-in encoders tried before Ray starts (:mod:`rnnray.encoders.checks`), on a few of
the zoo's own RNNs: the zoo's first shard when the zoo exists, else weights drawn as every zoo RNN
is at step 0 (PyTorch's LSTM initialisation), since building the zoo needs Ray. Each at the
budget, preset and fixed knobs its trial 0 will have. Built-ins are left to the test suite."""

from __future__ import annotations

from pathlib import Path

from .settings import SweepConfig
from .space import fixed_knobs


def plugin_names(cfg: SweepConfig) -> list[str]:
    from ..encoders.registry import get_spec

    return [e for e in cfg.encoders if not get_spec(e).builtin]


def check_plugins(cfg: SweepConfig, rows: int = 4) -> None:
    """One line naming the plug-in and what it broke (exit code 2), or nothing."""
    names = plugin_names(cfg)
    if not names:
        return
    import torch

    from ..encoders.checks import check_encoder, init_like
    from ..kinds import zoo_kind as kind_entry
    from ..weights import Layout
    from ..zoo.storage import read_manifest, sample_params

    root = cfg.zoo_path
    if (Path(root).expanduser() / "manifest.json").is_file():
        manifest = read_manifest(root)
        kind, layout = manifest["kind"], Layout.from_dict(manifest["layout"])
        weights = torch.from_numpy(sample_params(root, rows))
    else:
        kind = cfg.zoo.kind
        layout = kind_entry(kind).layout
        weights = init_like(layout, rows)
    for name in names:
        check_encoder(name, layout, kind, weights, cfg.budget, cfg.tolerance, cfg.preset(name), fixed_knobs(cfg, name))
