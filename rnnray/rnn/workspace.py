"""Buffers reused from one training step to the next (both LSTM paths allocate through here)."""

from __future__ import annotations

import torch


class Workspace:
    """Buffers reused from one training step to the next.

    Allocating the ~100 MB of per-step activations afresh every step costs more than computing
    them (first-touch page faults). A training loop that runs forward and backward strictly in turn
    (the zoo trainer) passes one Workspace; anything else leaves it out and gets fresh buffers.
    A backward that finds its activations overwritten by a later forward raises instead of
    returning wrong gradients.
    """

    def __init__(self):
        self._bufs: dict = {}
        self.generation = 0

    def get(self, key, shape, like: torch.Tensor) -> torch.Tensor:
        shape = tuple(shape)
        buf = self._bufs.get(key)
        if buf is None or tuple(buf.shape) != shape or buf.dtype != like.dtype or buf.device != like.device:
            buf = like.new_empty(shape)
            self._bufs[key] = buf
        return buf


def _buffer(ws, key, shape, like):
    return like.new_empty(shape) if ws is None else ws.get(key, shape, like)


