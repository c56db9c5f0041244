"""``transformer``: one token per neuron, a learned summary token, a Transformer encoder.

Tokenisation (the modelling choices):

* A *neuron* is an LSTM hidden unit j of layer l (the object the permutation symmetry moves), so
  it owns four gate rows in each of ``weight_ih_l`` and ``weight_hh_l``. Its token is the sum of two
  projections, one of its own per matrix: ``Linear_ih_l([4 gate rows of weight_ih_l, 4 entries of
  bias_ih_l])`` + ``Linear_hh_l([4 gate rows of weight_hh_l, 4 entries of bias_hh_l])``. Each bias
  is appended to the matrix it belongs to, so both biases are kept (the encoder can learn their
  sum, the only thing the function depends on) and nothing is discarded.
* Output unit o gets a token from ``Linear_out([row o of linear.weight, linear.bias[o]])``.
* One token per unit rather than per gate row or per matrix keeps the sequence at
  ``1 + 2 * 32 + outputs`` = 71 (formal languages) / 75 (MNIST) tokens; attention cost and the cost
  per parameter both grow with the token count.
* Learned position embeddings (one per token slot) tell the encoder which layer and unit a token
  is; a learned summary token sits at position 0 and its output feeds the head.
* ``torch.nn.TransformerEncoder``, pre-norm (``norm_first=True``, stabler without warm-up), GELU,
  feed-forward width ``ff_mult * width``, a final LayerNorm. ``width`` is ``d_model`` and must be a
  multiple of ``heads``.

Not permutation invariant; trains with augmentation.
"""

from __future__ import annotations

import torch
from torch import nn

from ..weights import GATES, Layout
from .common import head


class TransformerEncoder(nn.Module):
    def __init__(
        self,
        layout: Layout,
        width: int,
        head_width: int,
        depth: int,
        heads: int,
        ff_mult: int,
        dropout: float,
        input_scale: float,
    ):
        super().__init__()
        if width % heads:
            raise ValueError(f"transformer width {width} must be a multiple of heads={heads}")
        self.layout = layout
        self.input_scale = input_scale
        h = layout.hidden
        self.proj_ih = nn.ModuleList()
        self.proj_hh = nn.ModuleList()
        for layer in range(layout.num_layers):
            inp = layout.input_size if layer == 0 else h
            self.proj_ih.append(nn.Linear(GATES * (inp + 1), width))
            self.proj_hh.append(nn.Linear(GATES * (h + 1), width, bias=False))  # its bias would duplicate proj_ih's
        self.proj_out = nn.Linear(h + 1, width)
        n_tokens = 1 + layout.num_layers * h + layout.output_size
        self.summary = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        self.position = nn.Parameter(torch.randn(1, n_tokens, width) * 0.02)
        block = nn.TransformerEncoderLayer(
            width, heads, ff_mult * width, dropout=dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(block, depth, norm=nn.LayerNorm(width), enable_nested_tensor=False)
        self.head = head(width, head_width)

    def tokens(self, flat: torch.Tensor) -> torch.Tensor:
        """(B, P) -> (B, tokens, width), position embeddings included."""
        b = flat.shape[0]
        t = self.layout.split(flat * self.input_scale)
        h = self.layout.hidden

        def unit_rows(weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
            # (B, 4H, in), (B, 4H) -> (B, H, 4 * (in + 1)): the four gate rows of each unit, bias appended
            rows = torch.cat([weight, bias.unsqueeze(-1)], dim=-1).view(b, GATES, h, -1)
            return rows.transpose(1, 2).reshape(b, h, -1)

        toks = [self.summary.expand(b, -1, -1)]
        for layer in range(self.layout.num_layers):
            ih = unit_rows(t[f"weight_ih_l{layer}"], t[f"bias_ih_l{layer}"])
            hh = unit_rows(t[f"weight_hh_l{layer}"], t[f"bias_hh_l{layer}"])
            toks.append(self.proj_ih[layer](ih) + self.proj_hh[layer](hh))
        toks.append(self.proj_out(torch.cat([t["linear.weight"], t["linear.bias"].unsqueeze(-1)], dim=-1)))
        return torch.cat(toks, dim=1) + self.position

    def forward(self, flat: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.tokens(flat))[:, 0])
