"""The emulator and its loss: how a representation is judged.

An emulator imitates a zoo RNN from its 16-number representation alone, on the RNN's own inputs;
the total variation between its next-step distributions and the RNN's is the training signal for
encoder and emulator together.

Modelling choices:

* Architecture (from the spec): input step -> ``Linear(input, hidden)``; a 2-layer
  ``torch.nn.LSTM(hidden, hidden, batch_first=True)``; ``Linear(hidden, outputs)`` at every step.
  Formal-language tokens arrive as integer ids and are one-hot encoded before the Linear, so the
  emulator sees the same kind of input as the zoo RNN.
* The representation is divided by its L2 norm (``F.normalize``) so only its direction carries
  information (an encoder cannot cheat by growing it), projected by ``Linear(16, hidden)`` and
  added to the first input step only (``conditioning="bos"``, the paper's): the emulator learns
  *which* RNN to imitate once, at BOS, and must carry it in its state, like a conditioning prompt.
  ``conditioning="every_step"`` (the authors' code's option, off in all their published
  configurations; a departure from the paper, SPEC.md section 6) adds the same projection to the
  input at every step instead.
* Loss: total variation ``0.5 * sum_c |p_c - q_c|`` (bounded in [0, 1], symmetric, insensitive to
  tiny probabilities), averaged over steps and RNNs.
* Zoo targets: formal languages store float16 log-probabilities; after ``exp`` they are
  renormalised to sum to one, removing float16 rounding. MNIST stores logits; targets are their
  softmax, computed in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config.base import CONDITIONINGS
from ..encoders.baseline import ConstantRepresentation  # noqa: F401  (re-exported: the baseline's old home)
from ..encoders.common import REPRESENTATION_DIM, ZOO_KINDS
from ..kinds import KINDS, MNIST_STEPS

SIZES = {name: (k.input_size, k.output_size) for name, k in KINDS.items()}  # (input, output)
FORMAL_INPUT_STEPS = 41  # a 42-token sequence predicts its last 41 tokens from its first 41


def inputs_from_sequences(sequences: torch.Tensor) -> torch.Tensor:
    """Formal languages: (B, 42) token ids -> the (B, 41) ids the RNN was given."""
    return sequences[:, :FORMAL_INPUT_STEPS]


def targets_from_logprobs(logprobs: torch.Tensor) -> torch.Tensor:
    """Stored (float16) log-probabilities -> float32 distributions that sum to one."""
    p = logprobs.float().exp()
    return p / p.sum(-1, keepdim=True)


def targets_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Stored RNN logits -> float32 distributions."""
    return F.softmax(logits.float(), dim=-1)


def total_variation(target_probs: torch.Tensor, emulator_logits: torch.Tensor) -> torch.Tensor:
    """0.5 * sum over classes of |p - softmax(logits)|, averaged over every other axis (steps, RNNs)."""
    q = F.softmax(emulator_logits.float(), dim=-1)
    return 0.5 * (target_probs - q).abs().sum(-1).mean()


def input_steps(zoo_kind: str) -> int:
    """Time steps of one emulated sequence: 41 tokens (zoo A), the BOS tile and 49 tiles (zoo B)."""
    return FORMAL_INPUT_STEPS if KINDS[zoo_kind].token_inputs else MNIST_STEPS


def emulator_params(zoo_kind: str, hidden: int, rep_dim: int = REPRESENTATION_DIM, num_layers: int = 2) -> int:
    """Parameters of :class:`Emulator` from its shapes, without building it (a size check must not
    allocate the model it is checking)."""
    n_in, n_out = SIZES[zoo_kind]
    lstm = num_layers * (4 * hidden * 2 * hidden + 8 * hidden)  # weight_ih, weight_hh, two biases per layer
    return (n_in + 1) * hidden + (rep_dim + 1) * hidden + lstm + (hidden + 1) * n_out


class Emulator(nn.Module):
    """Imitates an RNN from its representation: (rep (B, 16), inputs) -> logits (B, T, outputs).

    ``conditioning``: ``"bos"`` adds the projected representation to the first input step only (the
    paper's); ``"every_step"`` adds it to every input step."""

    def __init__(self, zoo_kind: str, hidden: int = 256, rep_dim: int = REPRESENTATION_DIM, num_layers: int = 2,
                 conditioning: str = "bos"):
        super().__init__()
        if zoo_kind not in ZOO_KINDS:
            raise ValueError(f"unknown zoo_kind {zoo_kind!r}; expected one of {ZOO_KINDS}")
        if conditioning not in CONDITIONINGS:
            raise ValueError(f"unknown conditioning {conditioning!r}; expected one of {', '.join(CONDITIONINGS)}")
        self.zoo_kind = zoo_kind
        self.conditioning = conditioning
        n_in, n_out = SIZES[zoo_kind]
        self.input_proj = nn.Linear(n_in, hidden)
        self.rep_proj = nn.Linear(rep_dim, hidden)
        self.lstm = nn.LSTM(hidden, hidden, num_layers=num_layers, batch_first=True)
        self.head = nn.Linear(hidden, n_out)

    def embed_inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T) or tiles (B, T, 16) -> (B, T, hidden)."""
        if KINDS[self.zoo_kind].token_inputs:
            inputs = F.one_hot(inputs.long(), self.input_proj.in_features)
        return self.input_proj(inputs.to(self.input_proj.weight.dtype))

    def condition(self, rep: torch.Tensor) -> torch.Tensor:
        """What the representation adds to an input step: (B, 16) -> (B, 1, hidden)."""
        return self.rep_proj(F.normalize(rep, dim=-1)).unsqueeze(1)

    def forward(self, rep: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        x = self.embed_inputs(inputs)
        cond = self.condition(rep)
        if self.conditioning == "every_step":
            x = x + cond  # the same projection at every step
        else:
            x = torch.cat([x[:, :1] + cond, x[:, 1:]], dim=1)  # the representation enters at step 0 only
        out, _ = self.lstm(x)
        return self.head(out)

    def extra_repr(self) -> str:
        return f"conditioning={self.conditioning!r}"


class EmulationModel(nn.Module):
    """Encoder and emulator trained end to end: (flat params (B, P), inputs) -> emulator logits."""

    def __init__(self, encoder: nn.Module, emulator: Emulator):
        super().__init__()
        self.encoder = encoder
        self.emulator = emulator

    def forward(self, flat_params: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        return self.emulator(self.encoder(flat_params), inputs)
