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
* A pre-norm Transformer encoder (LayerNorm before attention and before the feed-forward block,
  stabler without warm-up), GELU, feed-forward width ``ff_mult * width``, a final LayerNorm.
  ``width`` is ``d_model`` and must be a multiple of ``heads``. The blocks are written out here
  rather than taken from ``torch.nn.TransformerEncoderLayer``: same parameters and computation,
  but attention runs through ``F.scaled_dot_product_attention`` on batch-first views, which
  avoids the sequence-first transposes and head-splitting copies of ``nn.MultiheadAttention`` in
  training (its fused fast path only applies without gradients); 15-20 % cheaper per step
  (``tests/test_encoders.py`` checks it against the torch layer).
* Read-out: the summary token's output (after the final LayerNorm) through a linear map to 16
  (``head_depth=0``).

Paper preset: ``d_model`` 128, 6 layers, 2 heads, feed-forward 512 (``ff_mult=4``): 1.26 M
parameters on zoo A (the paper counts 1.28 M).

Not permutation invariant; trains with augmentation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..weights import GATES, Layout
from .common import DEFAULT_INPUT_SCALE, head
from .contract import encoder


class Block(nn.Module):
    """Pre-norm Transformer encoder layer: x + attn(LN(x)), then x + FF(LN(x)); batch first."""

    def __init__(self, width: int, heads: int, ff_width: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.ff1 = nn.Linear(width, ff_width)
        self.ff2 = nn.Linear(ff_width, width)
        nn.init.xavier_uniform_(self.qkv.weight)  # as nn.MultiheadAttention initialises its projections
        nn.init.zeros_(self.qkv.bias)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        p = self.dropout if self.training else 0.0
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, dropout_p=p)  # (B, heads, T, d / heads)
        x = x + F.dropout(self.out(a.transpose(1, 2).reshape(b, t, d)), p, self.training)
        y = F.dropout(F.gelu(self.ff1(self.norm2(x))), p, self.training)
        return x + F.dropout(self.ff2(y), p, self.training)


@encoder(kind="mechanistic", invariant=False, takes_zoo_kind=False, width_multiple_of="heads",
         defaults={"width": 128, "head_width": None, "head_depth": 0, "depth": 6, "heads": 2, "ff_mult": 4,
                   "dropout": 0.0, "input_scale": DEFAULT_INPUT_SCALE},
         space={"depth": [2, 4, 6], "heads": [2, 4, 8], "ff_mult": [2, 4], "dropout": [0.0, 0.1]})
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
        head_depth: int = 0,
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
        self.blocks = nn.ModuleList(Block(width, heads, ff_mult * width, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.head = head(width, head_width, head_depth)

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
        x = self.tokens(flat)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, 0]))
