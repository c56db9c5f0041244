"""The flat parameter vector of a zoo RNN: names, shapes, slicing, and hidden-neuron permutations.

Every zoo RNN is ``torch.nn.LSTM(input, 32, num_layers=2, batch_first=True)`` followed by
``torch.nn.Linear(32, output)``. Its flat vector concatenates, in this order and each flattened
row-major, the tensors named in :data:`TENSOR_ORDER` (SPEC.md section 1). Everything that reads or
writes weights (the zoo trainer, the encoders, the tests) goes through :class:`Layout` so the order
lives in one place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import torch

HIDDEN = 32
NUM_LAYERS = 2
GATES = 4  # PyTorch order: input, forget, cell, output

TENSOR_ORDER = (
    "weight_ih_l0",
    "weight_hh_l0",
    "bias_ih_l0",
    "bias_hh_l0",
    "weight_ih_l1",
    "weight_hh_l1",
    "bias_ih_l1",
    "bias_hh_l1",
    "linear.weight",
    "linear.bias",
)


@dataclass(frozen=True)
class Layout:
    """Shapes and offsets of every tensor in the flat vector of an LSTM(input, hidden, 2) + Linear."""

    input_size: int
    output_size: int
    hidden: int = HIDDEN
    num_layers: int = NUM_LAYERS
    shapes: dict = field(init=False, repr=False, compare=False)
    offsets: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        shapes = {}
        h4 = GATES * self.hidden
        for layer in range(self.num_layers):
            inp = self.input_size if layer == 0 else self.hidden
            shapes[f"weight_ih_l{layer}"] = (h4, inp)
            shapes[f"weight_hh_l{layer}"] = (h4, self.hidden)
            shapes[f"bias_ih_l{layer}"] = (h4,)
            shapes[f"bias_hh_l{layer}"] = (h4,)
        shapes["linear.weight"] = (self.output_size, self.hidden)
        shapes["linear.bias"] = (self.output_size,)
        offsets, start = {}, 0
        for name in self.names:
            n = int(np.prod(shapes[name]))
            offsets[name] = (start, start + n)
            start += n
        object.__setattr__(self, "shapes", shapes)
        object.__setattr__(self, "offsets", offsets)

    @property
    def names(self) -> tuple[str, ...]:
        layers = tuple(
            f"{kind}_l{layer}"
            for layer in range(self.num_layers)
            for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        )
        return layers + ("linear.weight", "linear.bias")

    @property
    def num_params(self) -> int:
        return self.offsets["linear.bias"][1]

    # -- conversions ---------------------------------------------------------------------------
    def split(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """(..., P) -> {name: (..., *shape)} as views."""
        lead = flat.shape[:-1]
        out = {}
        for name in self.names:
            a, b = self.offsets[name]
            out[name] = flat[..., a:b].reshape(*lead, *self.shapes[name])
        return out

    def join(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """{name: (..., *shape)} -> (..., P)."""
        parts = []
        for name in self.names:
            t = tensors[name]
            lead = t.shape[: t.dim() - len(self.shapes[name])]
            parts.append(t.reshape(*lead, -1))
        return torch.cat(parts, dim=-1)

    def to_modules(self, flat: torch.Tensor) -> tuple[torch.nn.LSTM, torch.nn.Linear]:
        """Load one flat vector (P,) into fresh ``torch.nn.LSTM`` + ``torch.nn.Linear`` modules."""
        lstm = torch.nn.LSTM(self.input_size, self.hidden, num_layers=self.num_layers, batch_first=True)
        linear = torch.nn.Linear(self.hidden, self.output_size)
        parts = self.split(flat.detach().to(torch.float32).cpu())
        with torch.no_grad():
            for name, t in parts.items():
                if name.startswith("linear."):
                    getattr(linear, name.split(".")[1]).copy_(t)
                else:
                    getattr(lstm, name).copy_(t)
        return lstm, linear

    def from_modules(self, lstm: torch.nn.LSTM, linear: torch.nn.Linear) -> torch.Tensor:
        tensors = {name: getattr(lstm, name).detach() for name in self.names if not name.startswith("linear.")}
        tensors["linear.weight"] = linear.weight.detach()
        tensors["linear.bias"] = linear.bias.detach()
        return self.join(tensors)

    def to_json(self) -> str:
        return json.dumps(
            {
                "input_size": self.input_size,
                "output_size": self.output_size,
                "hidden": self.hidden,
                "num_layers": self.num_layers,
                "order": list(self.names),
                "shapes": {k: list(v) for k, v in self.shapes.items()},
                "num_params": self.num_params,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> "Layout":
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_dict(cls, d: dict) -> "Layout":
        """From the dict a manifest or checkpoint stores (``json.loads(layout.to_json())``)."""
        return cls(d["input_size"], d["output_size"], d["hidden"], d["num_layers"])

    # -- symmetry ------------------------------------------------------------------------------
    def permute(self, flat: torch.Tensor, perms: list[torch.Tensor]) -> torch.Tensor:
        """Apply one hidden-neuron permutation per layer; the function the RNN computes is unchanged.

        ``flat`` is (P,) or (B, P); each ``perms[l]`` is (H,) or (B, H) (one permutation per RNN).
        For layer l, the permutation reorders the rows of every gate block of ``weight_ih_l``,
        ``weight_hh_l``, ``bias_ih_l``, ``bias_hh_l``; the columns of ``weight_hh_l``; and the columns
        of the next layer's ``weight_ih`` (or of ``linear.weight`` after the last layer).
        """
        squeeze = flat.dim() == 1
        if squeeze:
            flat = flat.unsqueeze(0)
            perms = [p.unsqueeze(0) for p in perms]
        b = flat.shape[0]
        perms = [p.expand(b, -1) if p.dim() == 2 else p.unsqueeze(0).expand(b, -1) for p in perms]
        t = {k: v.clone() for k, v in self.split(flat).items()}
        h = self.hidden
        for layer, p in enumerate(perms):
            # row index in the 4H dimension: gate g, neuron p[j] -> position g*H + j
            rows = (torch.arange(GATES, device=p.device).view(1, GATES, 1) * h + p.view(b, 1, h)).reshape(b, GATES * h)
            for name in (f"weight_ih_l{layer}", f"weight_hh_l{layer}"):
                w = t[name]
                t[name] = torch.gather(w, 1, rows.unsqueeze(-1).expand(-1, -1, w.shape[-1]))
            for name in (f"bias_ih_l{layer}", f"bias_hh_l{layer}"):
                t[name] = torch.gather(t[name], 1, rows)
            w = t[f"weight_hh_l{layer}"]
            t[f"weight_hh_l{layer}"] = torch.gather(w, 2, p.view(b, 1, h).expand(-1, w.shape[1], -1))
            nxt = f"weight_ih_l{layer + 1}" if layer + 1 < self.num_layers else "linear.weight"
            w = t[nxt]
            t[nxt] = torch.gather(w, 2, p.view(b, 1, h).expand(-1, w.shape[1], -1))
        out = self.join(t)
        return out[0] if squeeze else out

    def random_permutations(self, batch: int, generator: torch.Generator | None = None, device=None) -> list[torch.Tensor]:
        """A fresh random hidden permutation per layer per RNN: list of (batch, H) index tensors."""
        return [
            torch.argsort(torch.rand(batch, self.hidden, generator=generator), dim=1).to(device)
            for _ in range(self.num_layers)
        ]


FORMAL_LANGUAGES = Layout(input_size=6, output_size=6)
MNIST = Layout(input_size=16, output_size=10)
assert FORMAL_LANGUAGES.num_params == 13_766 and MNIST.num_params == 15_178
