"""Functionalist encoders: interrogate every RNN of the batch with probe sequences, read the answers.

Both encoders only see input-output behaviour, so they are invariant to hidden-neuron permutations
by construction. The RNNs are evaluated functionally from their flat vectors with
``rnnray.rnn.run`` / ``rnnray.rnn.step`` (K = the batch of RNNs, the M probes as each network's
inner batch): one batched call, no loop over RNNs, and gradients flow back into the probes.

Modelling choices:

* Probe values. Formal languages: each step is a distribution over the 6 tokens (softmax of learned
  logits) fed as a soft one-hot vector. MNIST: each step is a 4x4 tile of values in (0, 1) (sigmoid
  of learned values), the pixel range.
* Initialisation (``noninteractive``, formal languages): the first step of every probe starts with
  a +3 logit on BOS (token 4), since every zoo sequence starts with BOS; it stays learnable. Other
  logits/values start as N(0, 1).
* Answers. Formal languages: log-softmax of the RNN's outputs (log-probabilities are what the zoo
  stores and are scale-free); MNIST: the raw logits. The reader gets, per step, the concatenation
  over the M probes of ``[answer, probe]``: the probe is a per-step constant for ``noninteractive``
  (a learned time code) and the question that was asked for ``interactive``.
* Reader: an LSTM of ``width`` units and ``reader_layers`` layers. With ``residual`` (the paper's
  reader) the per-step input is first projected to ``width`` by a linear map, and every layer adds
  its output to its input (``x + LSTM(x)``), so the layers refine one residual stream; the top of
  that stream at the last step goes through the read-out (one hidden layer of ``width / 2``
  units in the paper preset: 128 for a reader of 256). Without ``residual``: a plain stacked LSTM
  on the raw input, its top hidden state read out.
* ``interactive``: before each step, a linear head on the reader's top state emits the next M
  probe steps (softmax / sigmoid as above), the RNNs take one step on them with
  ``rnnray.rnn.step``, and the reader digests the answers, so later questions depend on earlier
  answers. The reader starts from a zero state, so the first probe is the probe head's bias.

Paper preset (both encoders): a 2-layer residual reader of 256 units, one probe sequence (M = 1)
of length 22 (zoo A) / 50 (zoo B), read-out of one hidden layer of 128: 1.09 M parameters on zoo
A (the paper counts 1.15 M; the input projection is our reading of "residual connections", which
need the input at the reader's width). The sweep covers M in {1, 2, 4, 8}, the probe length and
``reader_layers`` in {1, 2}.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import rnn
from ..weights import Layout
from .common import head
from .contract import encoder
from ..kinds import KINDS

BOS = 4
DEFAULT_PROBE_LENGTH = {"formal_languages": 22, "mnist": 50}
# the paper preset (SPEC.md 5b) and search space the probing encoders declare
PAPER = {"width": 256, "head_width": None, "head_depth": 1, "num_probes": 1, "probe_length": None, "reader_layers": 2,
         "residual": True}
SPACE = {"num_probes": [1, 2, 4, 8], "probe_length": {"formal_languages": [11, 22, 33], "mnist": [25, 50]},
         "reader_layers": [1, 2]}


class _Probing(nn.Module):
    """What both probing encoders share: probe activation, answer transform and read-out."""

    def __init__(self, layout: Layout, zoo_kind: str, width: int, head_width: int, head_depth: int, num_probes: int,
                 probe_length: int | None):
        super().__init__()
        self.layout = layout
        self.zoo_kind = zoo_kind
        self.num_probes = num_probes
        self.probe_length = DEFAULT_PROBE_LENGTH[zoo_kind] if probe_length is None else probe_length
        self.reader_input = num_probes * (layout.output_size + layout.input_size)
        self.head = head(width, head_width, head_depth)

    def activate(self, raw: torch.Tensor) -> torch.Tensor:
        """Learned unconstrained values -> valid probe inputs."""
        return F.softmax(raw, dim=-1) if KINDS[self.zoo_kind].token_inputs else torch.sigmoid(raw)

    def answer(self, outputs: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(outputs, dim=-1) if KINDS[self.zoo_kind].token_inputs else outputs


def initial_probe_values(zoo_kind: str, num_probes: int, probe_length: int, input_size: int) -> torch.Tensor:
    """(M, T, input) unconstrained probe values at initialisation: N(0, 1), and for token inputs a
    +3 logit on BOS at the first step (a probe starts near BOS, as the RNN's own inputs do)."""
    raw = torch.randn(num_probes, probe_length, input_size)
    if KINDS[zoo_kind].token_inputs:
        raw[:, 0, BOS] += 3.0
    return raw


class _FixedProbes(_Probing):
    """Non-interactive probing: the same probes for every RNN, a reader LSTM over the answers.
    Subclasses say where the probes come from (``probes()``) and build the reader with ``_reader``."""

    def _reader(self, width: int, reader_layers: int, residual: bool) -> None:
        self.residual = residual
        if residual:
            self.project = nn.Linear(self.reader_input, width)
            self.reader = nn.ModuleList(nn.LSTM(width, width, batch_first=True) for _ in range(reader_layers))
        else:
            self.reader = nn.LSTM(self.reader_input, width, num_layers=reader_layers, batch_first=True)

    def probes(self) -> torch.Tensor:
        """(M, T, input) probe inputs."""
        raise NotImplementedError

    def read(self, seq: torch.Tensor) -> torch.Tensor:
        """(B, T, reader input) -> (B, width): the reader's top state after the last step."""
        if not self.residual:
            return self.reader(seq)[0][:, -1]
        x = self.project(seq)
        for lstm in self.reader:
            x = x + lstm(x)[0]
        return x[:, -1]

    def forward(self, flat: torch.Tensor) -> torch.Tensor:
        b = flat.shape[0]
        probes = self.probes().expand(b, -1, -1, -1)  # (B, M, T, in)
        outputs = rnn.run(self.layout, self.layout.split(flat), probes)  # (B, M, T, out)
        seq = torch.cat([self.answer(outputs), probes], dim=-1)
        seq = seq.transpose(1, 2).reshape(b, self.probe_length, self.reader_input)
        return self.head(self.read(seq))


@encoder(kind="functionalist", invariant=True, head_ratio=0.5, defaults=PAPER, space=SPACE)
class NonInteractiveProbing(_FixedProbes):
    """Fixed learned probes for all RNNs, free parameters; a reader LSTM over the answers."""

    def __init__(self, layout: Layout, zoo_kind: str, width: int, head_width: int, num_probes: int,
                 probe_length: int | None, reader_layers: int, head_depth: int = 1, residual: bool = True):
        super().__init__(layout, zoo_kind, width, head_width, head_depth, num_probes, probe_length)
        self.probe_raw = nn.Parameter(initial_probe_values(zoo_kind, num_probes, self.probe_length, layout.input_size))
        self._reader(width, reader_layers, residual)

    def probes(self) -> torch.Tensor:
        """(M, T, input) probe inputs."""
        return self.activate(self.probe_raw)


@encoder(kind="functionalist", invariant=True, head_ratio=0.5, defaults=PAPER, space=SPACE)
class InteractiveProbing(_Probing):
    """Probes generated step by step from the reader's state: an adaptive interrogation."""

    def __init__(self, layout: Layout, zoo_kind: str, width: int, head_width: int, num_probes: int,
                 probe_length: int | None, reader_layers: int, head_depth: int = 1, residual: bool = True):
        super().__init__(layout, zoo_kind, width, head_width, head_depth, num_probes, probe_length)
        self.residual = residual
        self.project = nn.Linear(self.reader_input, width) if residual else None
        self.cells = nn.ModuleList(
            nn.LSTMCell(self.reader_input if i == 0 and not residual else width, width) for i in range(reader_layers)
        )
        self.probe_head = nn.Linear(width, num_probes * layout.input_size)

    def forward(self, flat: torch.Tensor) -> torch.Tensor:
        b, m = flat.shape[0], self.num_probes
        params = self.layout.split(flat)
        zero = flat.new_zeros(b, self.cells[0].hidden_size)
        reader = [(zero, zero) for _ in self.cells]
        top = zero  # the reader's top state: what the next probe and the read-out see
        state = rnn.init_state(self.layout, b, m, flat)
        for _ in range(self.probe_length):
            probe = self.activate(self.probe_head(top).view(b, m, -1))  # (B, M, in)
            outputs, state = rnn.step(self.layout, params, probe, state)  # (B, M, out)
            x = torch.cat([self.answer(outputs), probe], dim=-1).reshape(b, self.reader_input)
            if self.residual:
                x = self.project(x)
            new = []
            for cell, hc in zip(self.cells, reader):
                hc = cell(x, hc)
                new.append(hc)
                x = x + hc[0] if self.residual else hc[0]
            reader, top = new, x
        return self.head(top)
