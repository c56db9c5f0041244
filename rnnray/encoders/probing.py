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
* Reader: an LSTM of ``width`` units (``reader_layers`` layers); its last hidden state of the top
  layer goes through the shared head to 16 numbers.
* ``interactive``: before each step, a linear head on the reader's top hidden state emits the next
  M probe steps (softmax / sigmoid as above), the RNNs take one step on them with
  ``rnnray.rnn.step``, and the reader digests the answers, so later questions depend on earlier
  answers. The reader starts from a zero state, so the first probe is the probe head's bias.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import rnn
from ..weights import Layout
from .common import head

BOS = 4
DEFAULT_PROBE_LENGTH = {"formal_languages": 22, "mnist": 50}


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
        return F.softmax(raw, dim=-1) if self.zoo_kind == "formal_languages" else torch.sigmoid(raw)

    def answer(self, outputs: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(outputs, dim=-1) if self.zoo_kind == "formal_languages" else outputs


class NonInteractiveProbing(_Probing):
    """Fixed learned probes for all RNNs; a reader LSTM over the answers."""

    def __init__(self, layout: Layout, zoo_kind: str, width: int, head_width: int, num_probes: int,
                 probe_length: int | None, reader_layers: int, head_depth: int = 1):
        super().__init__(layout, zoo_kind, width, head_width, head_depth, num_probes, probe_length)
        raw = torch.randn(num_probes, self.probe_length, layout.input_size)
        if zoo_kind == "formal_languages":
            raw[:, 0, BOS] += 3.0
        self.probe_raw = nn.Parameter(raw)
        self.reader = nn.LSTM(self.reader_input, width, num_layers=reader_layers, batch_first=True)

    def probes(self) -> torch.Tensor:
        """(M, T, input) probe inputs."""
        return self.activate(self.probe_raw)

    def forward(self, flat: torch.Tensor) -> torch.Tensor:
        b = flat.shape[0]
        probes = self.probes().expand(b, -1, -1, -1)  # (B, M, T, in)
        outputs = rnn.run(self.layout, self.layout.split(flat), probes)  # (B, M, T, out)
        seq = torch.cat([self.answer(outputs), probes], dim=-1)
        seq = seq.transpose(1, 2).reshape(b, self.probe_length, self.reader_input)
        hidden, _ = self.reader(seq)
        return self.head(hidden[:, -1])


class _LSTMStep(torch.autograd.Function):
    """One LSTM time step of K networks at once, each on its own M rows, as a single autograd node.

    xh = [input, h] (K, M, X); c (K, M, H); w (K, X, 4H): ``[weight_ih, weight_hh]`` transposed;
    bias (K or 1, 1, 4H) = ``bias_ih + bias_hh``. Returns the new (h, c). Gate order i, f, g, o as
    in ``torch.nn.LSTM``. Written out because the interactive loop runs 50 such steps for the probed
    RNNs' two layers and the reader, and autograd's dozen small nodes per step (two products, gate
    slices and activations, cell update) cost more than the arithmetic; stacking the input and
    recurrent weights also halves the number of batched products.
    """

    @staticmethod
    def forward(ctx, xh, c, w, bias):
        hs = c.shape[-1]
        gates = torch.baddbmm(bias, xh, w)
        gates[..., : 2 * hs].sigmoid_()
        gates[..., 2 * hs : 3 * hs].tanh_()
        gates[..., 3 * hs :].sigmoid_()
        i, f, g, o = gates.split(hs, dim=-1)
        c_new = torch.addcmul(i * g, f, c)
        tc = torch.tanh(c_new)
        ctx.save_for_backward(xh, c, w, gates, tc)
        ctx.bias_k = bias.shape[0]
        return o * tc, c_new

    @staticmethod
    def backward(ctx, dh, dc_new):
        xh, c, w, gates, tc = ctx.saved_tensors
        hs = c.shape[-1]
        i, f, g, o = gates.split(hs, dim=-1)
        dgates = torch.empty_like(gates)
        di, df, dg, do = dgates.split(hs, dim=-1)
        torch.mul(dh, tc, out=do)
        dc = (1 - tc * tc).mul_(o).mul_(dh)  # through h = o * tanh(c)
        if dc_new is not None:
            dc += dc_new
        torch.mul(dc, g, out=di)
        torch.mul(dc, i, out=dg)
        torch.mul(dc, c, out=df)
        dc_prev = dc.mul_(f)
        di.mul_(i * (1 - i))
        df.mul_(f * (1 - f))
        dg.mul_(1 - g * g)
        do.mul_(o * (1 - o))
        dxh = torch.bmm(dgates, w.transpose(1, 2))
        dw = torch.bmm(xh.transpose(1, 2), dgates)
        dbias = dgates.sum(1, keepdim=True)
        if ctx.bias_k == 1 and dbias.shape[0] > 1:
            dbias = dbias.sum(0, keepdim=True)
        return dxh, dc_prev, dw, dbias


def _stacked(w_ih: torch.Tensor, w_hh: torch.Tensor) -> torch.Tensor:
    """(..., 4H, I), (..., 4H, H) -> (..., I + H, 4H), contiguous, for ``_LSTMStep``."""
    return torch.cat([w_ih, w_hh], dim=-1).transpose(-1, -2).contiguous()


class InteractiveProbing(_Probing):
    """Probes generated step by step from the reader's state: an adaptive interrogation."""

    def __init__(self, layout: Layout, zoo_kind: str, width: int, head_width: int, num_probes: int,
                 probe_length: int | None, reader_layers: int, head_depth: int = 1):
        super().__init__(layout, zoo_kind, width, head_width, head_depth, num_probes, probe_length)
        self.cells = nn.ModuleList(
            nn.LSTMCell(self.reader_input if i == 0 else width, width) for i in range(reader_layers)
        )
        self.probe_head = nn.Linear(width, num_probes * layout.input_size)

    def forward(self, flat: torch.Tensor) -> torch.Tensor:
        b, m, hsz = flat.shape[0], self.num_probes, self.layout.hidden
        params = self.layout.split(flat)
        # the probed RNNs' weights (K = b networks) and the reader's (shared, K = 1), stacked once
        rnn_w = [_stacked(params[f"weight_ih_l{l}"], params[f"weight_hh_l{l}"]) for l in range(self.layout.num_layers)]
        rnn_b = [(params[f"bias_ih_l{l}"] + params[f"bias_hh_l{l}"]).unsqueeze(1) for l in range(self.layout.num_layers)]
        lin_w, lin_b = params["linear.weight"].transpose(1, 2), params["linear.bias"].unsqueeze(1)
        read_w = [_stacked(cell.weight_ih, cell.weight_hh).unsqueeze(0) for cell in self.cells]
        read_b = [(cell.bias_ih + cell.bias_hh).view(1, 1, -1) for cell in self.cells]
        zero = flat.new_zeros(b, m, hsz)
        state = [(zero, zero) for _ in rnn_w]
        zero = flat.new_zeros(1, b, self.cells[0].hidden_size)
        reader = [(zero, zero) for _ in self.cells]
        for _ in range(self.probe_length):
            probe = self.activate(self.probe_head(reader[-1][0][0]).view(b, m, -1))  # (B, M, in)
            x, new = probe, []
            for (h, c), w, bias in zip(state, rnn_w, rnn_b):
                h, c = _LSTMStep.apply(torch.cat([x, h], dim=-1), c, w, bias)
                new.append((h, c))
                x = h
            state = new
            outputs = torch.baddbmm(lin_b, x, lin_w)  # (B, M, out)
            x = torch.cat([self.answer(outputs), probe], dim=-1).reshape(1, b, self.reader_input)
            new = []
            for (h, c), w, bias in zip(reader, read_w, read_b):
                h, c = _LSTMStep.apply(torch.cat([x, h], dim=-1), c, w, bias)
                new.append((h, c))
                x = h
            reader = new
        return self.head(reader[-1][0][0])
