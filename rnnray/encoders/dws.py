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
-> head (the shared read-out). All products are batched ``Linear`` calls over (B, rows, cols,
channels) tensors; no loops over RNNs or neurons. ReLU instead of the GELU used elsewhere.

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

HUB_PARTS = 6  # row mean A, row mean R, column mean R, diagonal R, bias, column mean of next weights
HUB_USES = 5  # row of A, row of R, column of R, bias, column of next weights


def _keys(num_layers: int) -> list[str]:
    return [f"{k}{layer}" for layer in range(num_layers) for k in ("A", "R", "b")] + ["L", "c"]


def _mean(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Mean as sum times 1/n: the backward then broadcasts the small gradient instead of
    materialising a full-size divided copy, which dominated the layer's cost."""
    return x.sum(dim) * (1.0 / x.shape[dim])


def _summaries(f: dict[str, torch.Tensor], num_layers: int):
    """Per-neuron hubs (B, H, 6d), input-axis (B, I, d), output-axis (B, O, 2d) and global features."""
    hubs = []
    for layer in range(num_layers):
        a, r = f[f"A{layer}"], f[f"R{layer}"]
        nxt = f[f"A{layer + 1}"] if layer + 1 < num_layers else f["L"]
        diag = torch.diagonal(r, dim1=1, dim2=2).transpose(1, 2)
        hubs.append(torch.cat([_mean(a, 2), _mean(r, 2), _mean(r, 1), diag, f[f"b{layer}"], _mean(nxt, 1)], dim=-1))
    in_axis = _mean(f["A0"], 1)
    out_axis = torch.cat([_mean(f["L"], 2), f["c"]], dim=-1)
    glob = torch.cat([_mean(h, 1) for h in hubs] + [_mean(in_axis, 1), _mean(out_axis, 1)], dim=-1)
    return hubs, in_axis, out_axis, glob


class EquivariantLayer(nn.Module):
    """One permutation-equivariant linear layer over all tensors of the LSTM."""

    def __init__(self, num_layers: int, width: int):
        super().__init__()
        d = width
        self.num_layers = num_layers
        self.keys = _keys(num_layers)
        self.self_maps = nn.ModuleDict({k: nn.Linear(d, d, bias=False) for k in self.keys})
        self.hub_maps = nn.ModuleList(nn.Linear(HUB_PARTS * d, HUB_USES * d, bias=False) for _ in range(num_layers))
        self.in_map = nn.Linear(d, d, bias=False)
        self.out_map = nn.Linear(2 * d, 2 * d, bias=False)
        self.global_map = nn.Linear((HUB_PARTS * num_layers + 3) * d, len(self.keys) * d)  # holds every bias

    def _combine(self, key, f, row: torch.Tensor, col: torch.Tensor, g: dict[str, torch.Tensor]) -> torch.Tensor:
        """self-map(matrix) + row term broadcast along columns + column term along rows + global.

        The global term joins the small row term before broadcasting, and the broadcasts are added in
        place into the fresh product: two full-size passes instead of four new full-size tensors."""
        out = self.self_maps[key](f[key])
        out += (row + g[key][:, None])[:, :, None]
        out += col[:, None]
        return out

    def forward(self, f: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        hubs, in_axis, out_axis, glob = _summaries(f, self.num_layers)
        g = dict(zip(self.keys, self.global_map(glob).chunk(len(self.keys), dim=-1)))
        uses = [m(h).chunk(HUB_USES, dim=-1) for m, h in zip(self.hub_maps, hubs)]  # each (B, H, d)
        col_in = self.in_map(in_axis)  # (B, I, d)
        row_out, c_out = self.out_map(out_axis).chunk(2, dim=-1)  # (B, O, d) each
        out = {}
        for layer in range(self.num_layers):
            a_row, r_row, r_col, b_use, _ = uses[layer]
            a_col = col_in if layer == 0 else uses[layer - 1][4]
            a, r, b = f"A{layer}", f"R{layer}", f"b{layer}"
            out[a] = self._combine(a, f, a_row, a_col, g)
            out[r] = self._combine(r, f, r_row, r_col, g)
            out[b] = self.self_maps[b](f[b]) + b_use + g[b][:, None]
        l_col = uses[-1][4]
        out["L"] = self._combine("L", f, row_out, l_col, g)
        out["c"] = self.self_maps["c"](f["c"]) + c_out + g["c"][:, None]
        return out


@encoder(kind="mechanistic", invariant=True, takes_zoo_kind=False, head_ratio=128 / 48,
         defaults={"width": 48, "head_width": None, "head_depth": 1, "depth": 4, "input_scale": DEFAULT_INPUT_SCALE},
         space={"depth": [2, 3, 4]})
class DWSEncoder(nn.Module):
    """Lift, equivariant layers, invariant pooling, head."""

    def __init__(self, layout: Layout, width: int, head_width: int, depth: int, input_scale: float,
                 head_depth: int = 1):
        super().__init__()
        self.layout = layout
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
        return f

    def forward(self, flat: torch.Tensor) -> torch.Tensor:
        f = self.features(flat)
        for layer in self.layers:
            update = layer({k: F.relu(v) for k, v in f.items()})
            f = {k: update[k].add_(v) for k, v in f.items()}  # the residual, into the fresh update
        hubs, in_axis, out_axis, _ = _summaries(f, self.layout.num_layers)
        pooled = torch.cat([_mean(h, 1) for h in hubs] + [in_axis.flatten(1), out_axis.flatten(1)], dim=-1)
        return self.head(pooled)
