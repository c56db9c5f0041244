"""Deep linear probe generators (``dlpg``; Kahana et al., 2024, "Deep Linear Probe Generators for
Weight Space Learning", ProbeGen): non-interactive probing whose probes come from a shared deep
*linear* generator applied to learned per-probe codes, instead of being free parameters.

Why: free probes overfit; factoring every probe as ``generator(code)`` with one generator shared by
all probes, and that generator a stack of linear maps with no nonlinearity between them, adds no
expressive power (the stack is one affine map) but changes the gradient dynamics: deep linear
parametrisations are implicitly biased towards low-rank, structured solutions, the paper's
regulariser. Everything after the probes is :class:`~.probing.NonInteractiveProbing` unchanged
(``_FixedProbes`` in ``probing.py``), so ``dlpg`` against ``noninteractive`` isolates the source of
the probes. The original probes image classifiers and INRs; every choice it leaves open for
recurrent networks is stated here.

* Generator. ``generator_depth`` ``nn.Linear`` layers, no activation between them:
  ``code_dim -> generator_width -> ... -> probe_length * input_size``; the last output is reshaped
  to one (T, input) probe per code. Each layer has a bias (the original's generator layers do), so
  the generator is affine: ``g(c) = A c + b`` with ``A`` the product of the weights and ``b`` the
  biases carried through; ``generate`` is linear in the codes up to that constant offset
  (``g(a c1 + (1 - a) c2) = a g(c1) + (1 - a) g(c2)``, and ``g(c) - g(0)`` is linear). Fully
  connected over the whole probe, not temporally convolutional: the original's generator is
  transposed convolutions (a spatial bias for images); a probe of any ``probe_length`` (searched)
  needs no stride arithmetic this way, and no temporal prior is claimed for RNN inputs.
* Codes: ``num_probes`` learned vectors of ``code_dim``, drawn N(0, 1) as in the original.
* Probe values: the generator's output is the same unconstrained value the free probes hold, put
  through the same input map (``_Probing.activate``): formal languages (zoo A), a softmax over the
  6 tokens at every step, fed as a soft one-hot input; MNIST (zoo B), a sigmoid per pixel of each
  4x4 tile, the pixel range (the original's tanh matches images normalised to [-1, 1], not these).
* Initialisation, so that at step 0 a generated probe is distributed like a free one (each raw
  value N(0, 1)): codes N(0, 1), every weight N(0, 1 / fan_in) (variance-preserving through a
  linear stack; PyTorch's default would shrink the output by about 3x per layer, starting every
  probe near a uniform token distribution / grey tile), biases zero, except that for token inputs
  the last layer's bias holds +3 on the BOS logit of the first step, as the free probes start
  (every zoo sequence starts with BOS). The generated probes are correlated through the shared
  generator from the start; their rank is at most ``min(num_probes, code_dim, generator_width)``.
* Read-out: as ``noninteractive``. The RNNs given by the flat vectors run on the M probes in one
  batched call (``rnnray.rnn.run``, the M probes as each RNN's inner batch); per step the reader
  LSTM sees the concatenation over probes of ``[answer, probe]`` (answer: log-softmax of the RNN's
  outputs on zoo A, raw logits on zoo B); residual reader of ``width`` units and ``reader_layers``
  layers, its top state at the last step through the read-out head. Invariant to hidden-neuron
  permutations exactly, as all probing is: the encoder sees only input-output behaviour.

Paper preset: the probing encoders' reader (256 units, 2 residual layers, read-out of 128, probe
length 22 / 50) and their one probe (M = 1), so that at the preset the only difference from
``noninteractive`` is the probe's parametrisation; a generator of depth 3 (two hidden layers: the
least depth whose parametrisation is deep beyond a factorisation into two matrices) of width 32
over codes of 32 (the original's latent size; hidden layers as wide as the code, as in its fully
connected variant). The generator is a fixed cost that ``width`` does not scale: 6.5 k parameters
on zoo A, 28.5 k on zoo B (its last layer writes all 50 x 16 values of a probe), so the smallest
budget it fits is about 12 k parameters on zoo A and 36 k on zoo B. The sweep searches
``generator_depth`` in {2, 3, 4}, ``code_dim`` in {16, 32, 64} and the probing knobs (M in
{1, 2, 4, 8}, probe length, reader layers); with M > 1 the generator is shared across probes, the
setting the original studies.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..kinds import KINDS
from ..weights import Layout
from .contract import encoder
from .probing import BOS, PAPER, SPACE, _FixedProbes


# the probing reader and probe; a depth-3 linear generator over 32-d codes (module docstring)
@encoder(kind="functionalist", invariant=True, head_ratio=0.5,
         defaults={**PAPER, "generator_depth": 3, "code_dim": 32, "generator_width": 32},
         space={**SPACE, "generator_depth": [2, 3, 4], "code_dim": [16, 32, 64]})
class DeepLinearProbeGenerators(_FixedProbes):
    """Probes = activate(deep linear generator(learned codes)); the non-interactive reader."""

    def __init__(self, layout: Layout, zoo_kind: str, width: int, head_width: int, num_probes: int,
                 probe_length: int | None, reader_layers: int, generator_depth: int, code_dim: int,
                 generator_width: int, head_depth: int = 1, residual: bool = True):
        super().__init__(layout, zoo_kind, width, head_width, head_depth, num_probes, probe_length)
        if generator_depth < 1:
            raise ValueError(f"generator_depth must be at least 1, got {generator_depth}")
        self.codes = nn.Parameter(torch.randn(num_probes, code_dim))
        sizes = [code_dim] + [generator_width] * (generator_depth - 1) + [self.probe_length * layout.input_size]
        self.generator = nn.Sequential(*(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:])))  # no activations
        with torch.no_grad():
            for layer in self.generator:
                layer.weight.normal_(0.0, 1.0 / math.sqrt(layer.in_features))
                layer.bias.zero_()
            if KINDS[zoo_kind].token_inputs:  # the first step starts near BOS, like the free probes
                self.generator[-1].bias.view(self.probe_length, layout.input_size)[0, BOS] = 3.0
        self._reader(width, reader_layers, residual)

    def generate(self, codes: torch.Tensor) -> torch.Tensor:
        """(N, code_dim) codes -> (N, T, input) unconstrained probe values (an affine map of the codes)."""
        return self.generator(codes).view(codes.shape[0], self.probe_length, self.layout.input_size)

    def probes(self) -> torch.Tensor:
        """(M, T, input) probe inputs."""
        return self.activate(self.generate(self.codes))
