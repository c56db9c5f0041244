"""A plug-in encoder that lives outside rnnray, as a researcher's own would: named in a sweep file by
its import path ``gated_probe:GatedProbe`` (tests/conftest.py puts this folder on PYTHONPATH, so the
Ray workers of the test session import it too).

``GatedProbe`` is a small functionalist encoder: a few learned input sequences are fed to every RNN
of the batch, its outputs are averaged over time, and a gated linear unit of ``width`` units reads
them out to 16 numbers. It sees the RNN only through its function, so it is invariant to
permutations of the hidden neurons and declares so (the sweep then trains it without augmentation).
"""

from __future__ import annotations

import torch
from torch import nn

from rnnray import rnn
from rnnray.encoders import encoder


@encoder(kind="functionalist", invariant=True, defaults={"width": 32, "probes": 2, "steps": 6},
         space={"probes": [1, 2, 4]})
class GatedProbe(nn.Module):
    def __init__(self, layout, zoo_kind, width: int, probes: int, steps: int):
        super().__init__()
        self.layout = layout
        self.inputs = nn.Parameter(torch.randn(probes, steps, layout.input_size) * 0.5)
        answers = probes * layout.output_size
        self.value, self.gate = nn.Linear(answers, width), nn.Linear(answers, width)
        self.out = nn.Linear(width, 16)

    def forward(self, flat: torch.Tensor) -> torch.Tensor:
        b = flat.shape[0]
        outputs = rnn.run(self.layout, self.layout.split(flat), self.inputs.expand(b, -1, -1, -1))  # (B, M, T, out)
        y = outputs.mean(dim=2).reshape(b, -1)
        return self.out(torch.tanh(self.value(y)) * torch.sigmoid(self.gate(y)))
