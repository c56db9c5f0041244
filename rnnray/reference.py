"""``python -m rnnray.reference``: the YAML reference, generated from the pydantic models.

The README's reference section is this command's output, and a test checks they agree, so the
documentation cannot drift from the fields the code actually accepts.
"""

from __future__ import annotations

import json
import sys
import typing

from pydantic import BaseModel


def _default(field) -> str:
    if field.is_required():
        return "**required**"
    d = field.get_default(call_default_factory=True)
    if isinstance(d, BaseModel):
        return "(section)"
    if isinstance(d, tuple):
        d = list(d)
        if d and isinstance(d[0], tuple):
            d = [list(x) for x in d]
    return f"`{json.dumps(d)}`"


def _type(field) -> str:
    t = field.annotation
    name = getattr(t, "__name__", None) or str(t)
    return name.replace("typing.", "").replace("Literal", "one of ").replace("|", " or ")


def model_table(model: type[BaseModel], prefix: str = "") -> list[str]:
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        desc = (field.description or "").replace("|", "/")
        rows.append(f"| `{key}` | {_default(field)} | {desc} |")
        ann = field.annotation
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(ann)) == 2:  # an optional section: `Model | None`
            ann = args[0]
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            rows.extend(model_table(ann, prefix=f"{key}."))
    return rows


def reference() -> str:
    from .config import FormalLanguagesZoo, MnistZoo, TrainConfig
    from .sweep import SweepConfig

    out = []
    for title, model, note in [
        ("Zoo file, `kind: formal_languages`", FormalLanguagesZoo, "`python -m rnnray.zoo build FILE`; also the `zoo:` section of a sweep file."),
        ("Zoo file, `kind: mnist`", MnistZoo, "Fields as above, plus the MNIST ones."),
        ("Training file", TrainConfig, "`python -m rnnray.train FILE --encoder NAME`. A sweep file's `train:` section takes the optimisation settings among these (the `train.` keys of the sweep file below); the rest the sweep sets itself, per trial."),
        ("Sweep file", SweepConfig, "`python -m rnnray.sweep FILE`."),
    ]:
        out += [f"#### {title}", "", note, "", "| key | default | meaning |", "| --- | --- | --- |"]
        rows = model_table(model)
        if model is MnistZoo:
            base = set(FormalLanguagesZoo.model_fields)
            rows = [r for r in rows if r.split("`")[1].split(".")[0] not in base or r.split("`")[1] == "kind"]
        out += rows + [""]
    return "\n".join(out)


if __name__ == "__main__":
    sys.stdout.write(reference())
