"""MLP encoders: ``flat`` (the raw vector) and ``stats`` (summary statistics of weight blocks).

``flat``: ``input_scale * w`` -> ``Linear(P, width)`` -> GELU -> (``depth - 1`` more
``Linear(width, width)`` -> GELU) -> head (paper preset: 3 hidden layers of 128 and the last
layer to 16, 1.80 M parameters on zoo A as in the paper). Not permutation invariant; trains with
augmentation.

``stats``: for every gate block of every LSTM tensor (each 4H-row tensor split into its four gate
blocks of H rows; ``linear.weight`` and ``linear.bias`` are one block each) seven numbers: mean,
standard deviation and the 0, .25, .5, .75, 1 quantiles -> 34 blocks x 7 = 238 features for both
zoos. Paper preset: 3 hidden layers of 768 and the last layer to 16. Choices:

* Statistics per gate block, as SPEC.md section 5 says: 238 features, where the authors' count of
  about 1.2 M parameters implies about 70 (seven statistics of each of the ten tensors). The
  first layer is therefore 238 x 768 rather than 70 x 768 and the preset has 1.38 M parameters on
  zoo A (15 % more than the paper's figure); the hidden layers are the paper's.

* The variance enters as its square root (std). It is a one-to-one map of the variance that gives
  all seven numbers the weights' unit, so one fixed scale suits them all.
* Normalisation is fixed, not learned: ``asinh(input_scale * feature)``. The scale brings
  initialisation-sized weights to order one; ``asinh`` is linear near zero and logarithmic for the
  large weights training can produce, and one-to-one, so nothing is lost. A LayerNorm over the
  feature vector was rejected because it erases the overall weight scale, which changes the
  function an RNN computes; batch statistics were rejected because a representation must not
  depend on the rest of the batch.
* Every statistic is symmetric in the block's entries, so ``stats`` is permutation invariant by
  construction and needs no augmentation.
"""

from __future__ import annotations

import torch
from torch import nn

from ..weights import GATES, Layout
from .common import DEFAULT_INPUT_SCALE, head
from .contract import encoder

_QUANTILES = (0.0, 0.25, 0.5, 0.75, 1.0)
STATS_PER_BLOCK = 2 + len(_QUANTILES)


def _body(in_features: int, width: int, depth: int) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Linear(in_features, width), nn.GELU()]
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), nn.GELU()]
    return layers


@encoder(kind="mechanistic", invariant=False, takes_zoo_kind=False,
         defaults={"width": 128, "head_width": None, "head_depth": 0, "depth": 3, "input_scale": DEFAULT_INPUT_SCALE},
         space={"depth": [1, 2, 3]})
class FlatEncoder(nn.Module):
    """The whole flat vector through an MLP: the least structured baseline."""

    def __init__(self, layout: Layout, width: int, head_width: int, depth: int, input_scale: float,
                 head_depth: int = 0):
        super().__init__()
        self.input_scale = input_scale
        self.body = nn.Sequential(*_body(layout.num_params, width, depth))
        self.head = head(width, head_width, head_depth)

    def forward(self, flat: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(flat * self.input_scale))


def num_blocks(layout: Layout) -> int:
    """Gate blocks of the LSTM tensors plus the linear weight and bias."""
    return GATES * 4 * layout.num_layers + 2


def block_statistics(layout: Layout, flat: torch.Tensor) -> torch.Tensor:
    """(B, P) -> (B, blocks * 7): mean, std and five quantiles of every block."""
    b = flat.shape[0]
    blocks = []
    for name, t in layout.split(flat).items():
        groups = 1 if name.startswith("linear.") else GATES
        blocks.append(t.reshape(b, groups, -1))
    feats = []
    for blk in blocks:  # blocks differ in size, so one tensor at a time (10 small ops)
        q = torch.quantile(blk, blk.new_tensor(_QUANTILES), dim=-1).permute(1, 2, 0)  # (B, groups, 5)
        mean = blk.mean(-1, keepdim=True)
        std = blk.var(-1, unbiased=False, keepdim=True).clamp_min(1e-12).sqrt()
        feats.append(torch.cat([mean, std, q], dim=-1).reshape(b, -1))
    return torch.cat(feats, dim=-1)


@encoder(kind="mechanistic", invariant=True, takes_zoo_kind=False,
         defaults={"width": 768, "head_width": None, "head_depth": 0, "depth": 3, "input_scale": DEFAULT_INPUT_SCALE},
         space={"depth": [1, 2, 3]})
class StatsEncoder(nn.Module):
    """Block statistics -> fixed asinh standardisation -> MLP."""

    def __init__(self, layout: Layout, width: int, head_width: int, depth: int, input_scale: float,
                 head_depth: int = 0):
        super().__init__()
        self.layout = layout
        self.input_scale = input_scale
        n_features = num_blocks(layout) * STATS_PER_BLOCK
        self.body = nn.Sequential(*_body(n_features, width, depth))
        self.head = head(width, head_width, head_depth)

    def forward(self, flat: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(torch.asinh(block_statistics(self.layout, flat * self.input_scale))))
