"""``dws``: deep-weight-space (neural-functional) layers adapted to the LSTM; exactly invariant to
permutations of the hidden neurons of each layer.

Data layout. Each weight tensor becomes a feature map whose channels are the four gates (the gate
blocks of a 4H-row tensor share the neuron index, so the gate is a channel, not an axis):

* ``A{l}`` = ``weight_ih_l``: axes (neuron of layer l, neuron of layer l-1 | input position)
* ``R{l}`` = ``weight_hh_l``: axes (neuron of layer l, neuron of layer l)
* ``b{l}`` = ``bias_ih_l`` and ``bias_hh_l`` stacked: 8 channels on the neuron axis of layer l
* ``L`` = ``linear.weight``: axes (output position, neuron of the last layer); one channel
* ``c`` = ``linear.bias``: axis (output position); one channel

Input and output positions are not permuted; learned position embeddings (``pos_in`` on ``A0``,
``pos_out`` on ``L`` and ``c``) are added after the first linear lift so features of different
input/output positions can differ.

Equivariant layer. Per neuron axis l a *hub* collects what every tensor knows about neuron n:
the row mean of ``A{l}``, the row and column means and the diagonal of ``R{l}`` (self-recurrence
is its own orbit under the permutation), ``b{l}``, and the column mean of the next layer's input
weights (``A{l+1}`` or ``L``). The input axis gets the column mean of ``A0``, the output axis the
row mean of ``L`` and ``c``; a global vector holds the means of all of these. Each output tensor is
``self-map(tensor) + map(hub of its row axis) + map(hub of its column axis) + map(global)``, the
maps being learned linear maps over channels broadcast along the other axes. Means (not sums) keep
the scale independent of the axis length. The transpose of ``R{l}`` is not used as a separate term
(it would add a full per-entry product for information the hubs mostly carry).

Stack: lift -> ``depth`` x ``f + layer(ReLU(f))`` (a pre-activation residual: depth can grow
without the signal fading, and updates can take either sign) -> invariant pooling (means of the
hubs over their neurons; the input- and output-axis features, which need no pooling, flattened)
-> head (the shared read-out). All products are batched over (B, rows, cols, channels) tensors;
no loops over RNNs or neurons. ReLU instead of the GELU used elsewhere.

Where the time goes: the 48-channel products are thin, and around them every matrix tensor takes
per-entry passes (ReLU, the broadcast row/column terms, the residual, the hub sums, and in the
backward their gradients). The matrices' per-entry work therefore runs through the autograd nodes
of ``dws_entries.py`` (one new full-size tensor per matrix and layer each way, updates in place);
the vector tensors and the hubs, which are small, stay plain ops. ``reference=True`` runs the same
layer in plain autograd ops (:meth:`EquivariantLayer.forward`): the tests compare the two, and
``python -m rnnray.bench train --reference`` times them side by side. ``torch.compile`` of the layer
was measured and is not used (docs/BENCHMARKS.md, "dws at its bound").

Paper preset: 4 layers of 48 channels and a read-out of one hidden layer of 128 units. Our layer
has about 193 ``width``^2 parameters (the hub maps 60, the map of the global vector to every
tensor's offset 120, the self-maps 13), where the paper's figure (1.22 M in four layers of 48)
implies about 132; and our pooled vector (30 x 48 numbers: every hub part, and the unpooled
input/output axes) makes the read-out's first layer 1,440 x 128 where the paper's 64 k implies
about 500 inputs. The authors' exact layer is not specified beyond SPEC.md section 5, so we keep
this complete one: the preset has about 1.97 M parameters on zoo A (the paper counts 1.28 M), and
under an equal budget it gets fewer channels than 48 (about 37 at 1.2 M).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..weights import GATES, Layout
from .common import DEFAULT_INPUT_SCALE, head
from .contract import encoder
from .dws_entries import Enter, Step

HUB_PARTS = 6  # row mean A, row mean R, column mean R, diagonal R, bias, column mean of next weights
HUB_USES = 5  # row of A, row of R, column of R, bias, column of next weights


def _keys(num_layers: int) -> list[str]:
    return [f"{k}{layer}" for layer in range(num_layers) for k in ("A", "R", "b")] + ["L", "c"]


def _matrices(num_layers: int) -> list[str]:
    """The (B, rows, cols, d) tensors (the rest, ``b{l}`` and ``c``, are (B, n, d) vectors)."""
    return [k for k in _keys(num_layers) if k[0] in "ARL"]


def _mean(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Mean as sum times 1/n: the backward then broadcasts the small gradient instead of
    materialising a full-size divided copy, which dominated the layer's cost."""
    return x.sum(dim) * (1.0 / x.shape[dim])


def _parts(f: dict[str, torch.Tensor], num_layers: int):
    """Row means, column means and diagonals (B, H, d) of every matrix-shaped tensor of ``f``."""
    rows, cols, diags = {}, {}, {}
    for k in _matrices(num_layers):
        rows[k], cols[k] = _mean(f[k], 2), _mean(f[k], 1)
        if k[0] == "R":
            diags[k] = torch.diagonal(f[k], dim1=1, dim2=2).transpose(1, 2)
    return rows, cols, diags


def _means(f: dict[str, torch.Tensor], state: dict):
    """:func:`_parts` from the sums the fused nodes returned (``state``: per matrix, x or None and
    the sums)."""
    rows, cols, diags = {}, {}, {}
    for k, (_, sums) in state.items():
        rows[k], cols[k] = sums[0] * (1.0 / f[k].shape[2]), sums[1] * (1.0 / f[k].shape[1])
        if k[0] == "R":
            diags[k] = sums[2]
    return rows, cols, diags


def _state(outputs: tuple, relu: bool) -> tuple:
    return (outputs[0], outputs[1:]) if relu else (None, outputs)


def _enter(f: dict[str, torch.Tensor], num_layers: int, relu: bool) -> dict:
    """The fused path's first state: per matrix, x = relu(f) (or None) and x's sums."""
    return {k: _state(Enter.apply(f[k], relu, k[0] == "R"), relu) for k in _matrices(num_layers)}


def _assemble(rows, cols, diags, f: dict[str, torch.Tensor], num_layers: int):
    """Per-neuron hubs (B, H, 6d), input-axis (B, I, d), output-axis (B, O, 2d) and global features
    from the matrices' row and column means and diagonals and the vector tensors of ``f``."""
    hubs = []
    for layer in range(num_layers):
        a, r = f"A{layer}", f"R{layer}"
        nxt = f"A{layer + 1}" if layer + 1 < num_layers else "L"
        hubs.append(torch.cat([rows[a], rows[r], cols[r], diags[r], f[f"b{layer}"], cols[nxt]], dim=-1))
    in_axis = cols["A0"]
    out_axis = torch.cat([rows["L"], f["c"]], dim=-1)
    glob = torch.cat([_mean(h, 1) for h in hubs] + [_mean(in_axis, 1), _mean(out_axis, 1)], dim=-1)
    return hubs, in_axis, out_axis, glob


def _summaries(f: dict[str, torch.Tensor], num_layers: int):
    """Hubs, input-axis, output-axis and global features of ``f`` (see :func:`_assemble`)."""
    return _assemble(*_parts(f, num_layers), f, num_layers)


class EquivariantLayer(nn.Module):
    """One residual step ``f + layer(ReLU(f))``, the layer permutation-equivariant and linear over
    all tensors of the LSTM."""

    def __init__(self, num_layers: int, width: int):
        super().__init__()
        d = width
        self.num_layers = num_layers
        self.keys = _keys(num_layers)
        self.matrices = _matrices(num_layers)
        self.self_maps = nn.ModuleDict({k: nn.Linear(d, d, bias=False) for k in self.keys})
        self.hub_maps = nn.ModuleList(nn.Linear(HUB_PARTS * d, HUB_USES * d, bias=False) for _ in range(num_layers))
        self.in_map = nn.Linear(d, d, bias=False)
        self.out_map = nn.Linear(2 * d, 2 * d, bias=False)
        self.global_map = nn.Linear((HUB_PARTS * num_layers + 3) * d, len(self.keys) * d)  # holds every bias

    def _terms(self, hubs, in_axis, out_axis, glob) -> dict:
        """What each tensor gets besides its self-map: (row term with the global one joined, column
        term) per matrix, one term per vector tensor. Small tensors only."""
        g = dict(zip(self.keys, self.global_map(glob).chunk(len(self.keys), dim=-1)))
        uses = [m(h).chunk(HUB_USES, dim=-1) for m, h in zip(self.hub_maps, hubs)]  # each (B, H, d)
        col_in = self.in_map(in_axis)  # (B, I, d)
        row_out, c_out = self.out_map(out_axis).chunk(2, dim=-1)  # (B, O, d) each
        terms = {}
        for layer in range(self.num_layers):
            a_row, r_row, r_col, b_use, _ = uses[layer]
            a_col = col_in if layer == 0 else uses[layer - 1][4]
            terms[f"A{layer}"] = (a_row + g[f"A{layer}"][:, None], a_col)
            terms[f"R{layer}"] = (r_row + g[f"R{layer}"][:, None], r_col)
            terms[f"b{layer}"] = b_use + g[f"b{layer}"][:, None]
        terms["L"] = (row_out + g["L"][:, None], uses[-1][4])
        terms["c"] = c_out + g["c"][:, None]
        return terms

    def forward(self, f: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The step in plain autograd ops: the reference :meth:`fused` is tested against."""
        x = {k: F.relu(v) for k, v in f.items()}
        terms = self._terms(*_summaries(x, self.num_layers))
        out = {}
        for k in self.keys:
            if k in self.matrices:
                row, col = terms[k]
                o = self.self_maps[k](x[k])
                o += row[:, :, None]
                o += col[:, None]
            else:
                o = self.self_maps[k](x[k]) + terms[k]
            out[k] = o.add_(f[k])
        return out

    def fused(self, f: dict[str, torch.Tensor], state: dict, relu_next: bool) -> tuple[dict, dict]:
        """The same step through the nodes of ``dws_entries``: ``state`` holds each matrix's relu(f)
        and its sums (from :func:`_enter` or the previous layer); the matrices of ``f`` are updated
        in place. Returns the new ``f`` and the next state (of relu(f'), or of f' itself when not
        ``relu_next``: the pooling's)."""
        x = {k: state[k][0] for k in self.matrices}
        x.update({k: F.relu(f[k]) for k in self.keys if k not in self.matrices})
        terms = self._terms(*_assemble(*_means(f, state), x, self.num_layers))
        out, new_state = {}, {}
        for k in self.keys:
            if k in self.matrices:
                res = Step.apply(f[k], x[k], self.self_maps[k].weight, *terms[k], relu_next, k[0] == "R")
                out[k], new_state[k] = res[0], _state(res[1:], relu_next)
            else:
                out[k] = (self.self_maps[k](x[k]) + terms[k]).add_(f[k])
        return out, new_state


@encoder(kind="mechanistic", invariant=True, takes_zoo_kind=False, head_ratio=128 / 48,
         defaults={"width": 48, "head_width": None, "head_depth": 1, "depth": 4, "input_scale": DEFAULT_INPUT_SCALE},
         space={"depth": [2, 3, 4]})
class DWSEncoder(nn.Module):
    """Lift, equivariant layers, invariant pooling, head."""

    def __init__(self, layout: Layout, width: int, head_width: int, depth: int, input_scale: float,
                 head_depth: int = 1, reference: bool = False):
        super().__init__()
        self.layout = layout
        self.reference = reference  # plain autograd ops instead of the fused nodes (tests, benchmarks)
        self.input_scale = input_scale
        d, n = width, layout.num_layers
        self.lift = nn.ModuleDict()
        for layer in range(n):
            self.lift[f"A{layer}"] = nn.Linear(GATES, d)
            self.lift[f"R{layer}"] = nn.Linear(GATES, d)
            self.lift[f"b{layer}"] = nn.Linear(2 * GATES, d)
        self.lift["L"] = nn.Linear(1, d)
        self.lift["c"] = nn.Linear(1, d)
        self.pos_in = nn.Parameter(torch.randn(layout.input_size, d) * 0.1)
        self.pos_out = nn.Parameter(torch.randn(layout.output_size, d) * 0.1)
        self.layers = nn.ModuleList(EquivariantLayer(n, d) for _ in range(depth))
        pooled = (HUB_PARTS * n + layout.input_size + 2 * layout.output_size) * d
        self.head = head(pooled, head_width, head_depth)

    def features(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, P) -> channels-last feature maps with gates (and both biases) as input channels."""
        b, h = flat.shape[0], self.layout.hidden
        t = self.layout.split(flat * self.input_scale)
        f = {}
        for layer in range(self.layout.num_layers):
            w_ih = t[f"weight_ih_l{layer}"]
            f[f"A{layer}"] = w_ih.view(b, GATES, h, w_ih.shape[-1]).permute(0, 2, 3, 1)
            f[f"R{layer}"] = t[f"weight_hh_l{layer}"].view(b, GATES, h, h).permute(0, 2, 3, 1)
            biases = torch.cat([t[f"bias_ih_l{layer}"], t[f"bias_hh_l{layer}"]], dim=-1)
            f[f"b{layer}"] = biases.view(b, 2 * GATES, h).transpose(1, 2)
        f["L"] = t["linear.weight"].unsqueeze(-1)
        f["c"] = t["linear.bias"].unsqueeze(-1)
        f = {k: self.lift[k](v) for k, v in f.items()}
        f["A0"] = f["A0"] + self.pos_in[None, None]
        f["L"] = f["L"] + self.pos_out[None, :, None]
        f["c"] = f["c"] + self.pos_out[None]
        return {k: v.contiguous() for k, v in f.items()}  # the fused nodes view them flat

    def forward(self, flat: torch.Tensor) -> torch.Tensor:
        f, n = self.features(flat), self.layout.num_layers
        if self.reference:
            for layer in self.layers:
                f = layer(f)
            hubs, in_axis, out_axis, _ = _summaries(f, n)
        else:
            state = _enter(f, n, relu=len(self.layers) > 0)
            for i, layer in enumerate(self.layers):
                f, state = layer.fused(f, state, relu_next=i + 1 < len(self.layers))
            hubs, in_axis, out_axis, _ = _assemble(*_means(f, state), f, n)
        pooled = torch.cat([_mean(h, 1) for h in hubs] + [in_axis.flatten(1), out_axis.flatten(1)], dim=-1)
        return self.head(pooled)
