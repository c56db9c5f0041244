"""``python -m rnnray.encoders.presets``: every preset's parameter count per zoo beside the paper's.

The paper's figures (SPEC.md 5b) are zoo A counts as the authors give them; where ours differ by
more than 10 %, the encoder's module docstring says why. An encoder the paper does not have
(``dlpg``) has no figure to compare with ("—").
"""

from __future__ import annotations

import argparse
import json

import torch

from ..kinds import KINDS
from .budget import count_params
from .registry import ENCODERS, PAPER_PARAMS, PRESETS, build_encoder, resolve_hparams

LAYOUTS = {name: k.layout for name, k in KINDS.items()}


def preset_counts() -> list[dict]:
    """One row per (preset, encoder): parameters per zoo, the read-out's share, the paper's figure."""
    rows = []
    for preset in PRESETS:
        for name in ENCODERS:
            row = {"preset": preset, "encoder": name, "paper_params": PAPER_PARAMS.get(name)}
            for kind, layout in LAYOUTS.items():
                with torch.device("meta"):
                    enc = build_encoder(name, layout, kind, preset)
                n = count_params(enc)
                row[kind] = {"params": n, "read_out_share": count_params(enc.head) / n,
                             "hparams": resolve_hparams(name, layout, kind, preset)}
            paper = row["paper_params"]
            row["ratio_to_paper"] = None if paper is None else row["formal_languages"]["params"] / paper
            rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    lines = ["| preset | encoder | zoo A params | zoo B params | read-out share (A) | paper (zoo A) | ours / paper |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        a, b = r["formal_languages"], r["mnist"]
        if r["paper_params"] is None:
            paper = ratio = "—"
        else:
            flag = "" if abs(r["ratio_to_paper"] - 1) <= 0.10 else " (see docstring)"
            paper, ratio = f"{r['paper_params'] / 1e6:.2f} M", f"{r['ratio_to_paper']:.2f}{flag}"
        lines.append(f"| {r['preset']} | {r['encoder']} | {a['params']:,} | {b['params']:,} | {a['read_out_share']:.1%} | "
                     f"{paper} | {ratio} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m rnnray.encoders.presets", description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args(argv)
    rows = preset_counts()
    print(json.dumps(rows, indent=1) if args.json else format_table(rows))


if __name__ == "__main__":
    main()
