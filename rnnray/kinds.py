"""The two kinds of zoo in one table: everything that differs between zoo A and zoo B.

Zoo A (``formal_languages``, SPEC.md section 2) holds generative LSTMs over 6 tokens; zoo B
(``mnist``, section 3) holds classifiers of 16-pixel tiles into 10 digits. Every stage that treats
the two differently (the RNN's layout, the columns a stage reads, the shape of a stored sequence,
the beginning-of-sequence input) looks it up here, so the kinds are spelled in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

from .weights import FORMAL_LANGUAGES, MNIST, Layout


@dataclass(frozen=True)
class ZooKind:
    name: str
    layout: Layout  # the zoo RNN: LSTM(input_size, 32, 2) + Linear(32, output_size)
    task_column: str  # the column naming the task a run was trained on: offsets (4,) or an angle
    sequence_columns: tuple[str, str]  # the stored inputs and the RNN's outputs on them
    token_inputs: bool  # inputs are token ids (one-hot for a network) rather than real-valued tiles
    bos: str  # what the first input step is
    stored_bytes_per_step: int  # bytes of one stored step of one sequence: input plus output, as stored

    @property
    def input_size(self) -> int:
        return self.layout.input_size

    @property
    def output_size(self) -> int:
        return self.layout.output_size

    def sequence_bytes(self, seq_len: int) -> int:
        """Bytes of one stored sequence (inputs and outputs). Zoo A stores ``seq_len`` int16 tokens and
        ``seq_len - 1`` float16 log-probability vectors; zoo B 50 float16 tiles and 50 float16 logit vectors."""
        if self.token_inputs:
            return 2 * seq_len + 2 * (seq_len - 1) * self.output_size
        return MNIST_STEPS * self.stored_bytes_per_step


MNIST_STEPS = 50  # the BOS step plus 49 tiles of 4 x 4 pixels

KINDS: dict[str, ZooKind] = {
    "formal_languages": ZooKind(
        "formal_languages", FORMAL_LANGUAGES, "task", ("sequences", "logprobs"), True,
        "token 4 (a, b, c, d are 0 to 3; EOS is 5)", 2 + 2 * FORMAL_LANGUAGES.output_size,
    ),
    "mnist": ZooKind(
        "mnist", MNIST, "angle", ("inputs", "logits"), False,
        "a tile of zeros", 2 * MNIST.input_size + 2 * MNIST.output_size,
    ),
}
KIND_NAMES: tuple[str, ...] = tuple(KINDS)


def zoo_kind(name: str) -> ZooKind:
    """The entry of a zoo kind; ValueError naming the valid ones for anything else."""
    try:
        return KINDS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown zoo kind {name!r}; expected one of {KIND_NAMES}") from None


def kind_of_layout(layout: Layout) -> str | None:
    """The zoo kind whose RNNs have this layout's input size, or None."""
    return next((k.name for k in KINDS.values() if k.input_size == layout.input_size), None)
