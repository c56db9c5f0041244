"""Train a chunk of K zoo RNNs in lockstep: stacked weights, one batched computation per time step.

Each RNN keeps its own task, initialisation, data stream and weight decay; only the arithmetic is
shared. Every random number an RNN sees comes from generators keyed by (zoo seed, run id, purpose
[, step]) and each RNN's loss and AdamW update touch only its own slice of the stacked weights, so
a zoo row depends on (zoo seed, run id, step) alone, never on how runs are chunked.

AdamW is written out for the stacked (K, P) weights because the weight decay differs per RNN (zoo
B); it is the update of ``torch.optim.AdamW`` (decoupled decay ``p *= 1 - lr * wd`` then the bias-
corrected Adam step, betas (0.9, 0.999), eps 1e-8), which the tests check against PyTorch's own.
Initialisation is PyTorch's default for LSTM and Linear: every entry uniform in +-1/sqrt(32).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .. import rnn
from ..config import FormalLanguagesZoo, MnistZoo
from ..weights import FORMAL_LANGUAGES, MNIST, Layout
from . import languages, mnist

BETAS = (0.9, 0.999)
EPS = 1e-8
DATA_BLOCK = 500  # training draws are made per run in blocks of this many steps (chunk-independent)

# purposes of the per-run random streams
_TASK, _INIT, _DATA, _EVAL = 0, 1, 2, 3


def run_rng(seed: int, run_id: int, purpose: int, *extra: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, run_id, purpose, *extra]))


def assigned_task(cfg, run_id: int) -> np.ndarray:
    """Run ``run_id``'s task t = (0, t1, t2, t3). ``uniform``: its own draw; ``balanced``: round
    ``run_id // 216`` is a shuffled order of all 216 tasks (from the zoo seed and the round), so a
    zoo of R runs holds every task floor(R / 216) or that plus one times, whatever the chunking."""
    if getattr(cfg, "task_assignment", "uniform") == "balanced":
        n = len(languages.ALL_TASKS)
        order = np.random.default_rng(np.random.SeedSequence([cfg.seed, run_id // n, _TASK, n])).permutation(n)
        return languages.ALL_TASKS[order[run_id % n]].copy()
    return languages.draw_task(run_rng(cfg.seed, run_id, _TASK))


def assigned_angle_and_decay(cfg, run_id: int) -> tuple[float, float]:
    """Zoo B run ``run_id``'s rotation angle and weight decay, drawn in that order from its task stream."""
    g = run_rng(cfg.seed, run_id, _TASK)
    return g.uniform(*cfg.angle_range), g.choice(cfg.weight_decays)


def planned_tasks(cfg) -> dict[int, object]:
    """Every run's task as a build of ``cfg`` assigns it, without training anything: the split of a
    zoo that is not built yet (offsets for zoo A, the angle as stored, float32, for zoo B)."""
    if cfg.kind == "formal_languages":
        return {r: assigned_task(cfg, r) for r in range(cfg.runs)}
    return {r: np.float32(assigned_angle_and_decay(cfg, r)[0]) for r in range(cfg.runs)}


def run_torch_gen(seed: int, run_id: int, purpose: int) -> torch.Generator:
    state = np.random.SeedSequence([seed, run_id, purpose]).generate_state(2, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state[0] & np.uint64(2**63 - 1)))


def init_params(layout: Layout, seed: int, run_id: int) -> torch.Tensor:
    """PyTorch's default LSTM/Linear initialisation (uniform +-1/sqrt(hidden)) from the run's own stream."""
    g = run_torch_gen(seed, run_id, _INIT)
    bound = 1.0 / math.sqrt(layout.hidden)
    return (torch.rand(layout.num_params, generator=g, dtype=torch.float64) * 2 - 1).mul_(bound).float()


def adamw_update(p, grad, m, v, t: int, lr: float, wd: torch.Tensor) -> None:
    """One AdamW step on stacked weights (K, P) with a per-row weight decay wd (K,)."""
    b1, b2 = BETAS
    p.mul_(1 - lr * wd.unsqueeze(1))
    m.lerp_(grad, 1 - b1)
    v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
    denom = (v.sqrt() / math.sqrt(1 - b2**t)).add_(EPS)
    p.addcdiv_(m, denom, value=-lr / (1 - b1**t))


class Recipe:
    """What differs between the zoos: tasks, batches, the loss, and what is stored per snapshot."""

    layout: Layout

    def __init__(self, cfg, run_ids: list[int], device: torch.device):
        self.cfg, self.run_ids, self.device = cfg, list(run_ids), device
        self.k = len(run_ids)
        self._data_rngs = [run_rng(cfg.seed, r, _DATA) for r in run_ids]
        self._block = None
        self._block_start = -1

    def data_block(self, step: int) -> np.ndarray:
        start = step - step % DATA_BLOCK
        if start != self._block_start:
            self._block = np.stack([self.draw_block(i, g) for i, g in enumerate(self._data_rngs)])
            self._block_start = start
        return self._block[:, step - start]

    def draw_block(self, i: int, g: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def weight_decay(self) -> torch.Tensor:
        raise NotImplementedError

    def evaluate(self, flat: torch.Tensor, step: int) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def static_columns(self) -> dict[str, np.ndarray]:
        raise NotImplementedError


class FormalLanguagesRecipe(Recipe):
    layout = FORMAL_LANGUAGES

    def __init__(self, cfg: FormalLanguagesZoo, run_ids, device):
        super().__init__(cfg, run_ids, device)
        self.tasks_np = np.stack([assigned_task(cfg, r) for r in run_ids])
        self.tasks = torch.as_tensor(self.tasks_np, dtype=torch.int64, device=device)
        self.nmin = languages.n_min(self.tasks_np)

    def draw_block(self, i, g):
        return g.integers(self.nmin[i], self.cfg.n_max, size=(DATA_BLOCK, self.cfg.batch_size))

    def batch(self, step):
        n = torch.as_tensor(self.data_block(step), device=self.device)
        tokens = languages.make_sequences(self.tasks, n, self.cfg.seq_len)
        x = F.one_hot(tokens[..., :-1], languages.VOCAB).float()
        return x, tokens[..., 1:]

    def weight_decay(self):
        return torch.full((self.k,), self.cfg.weight_decay, device=self.device)

    def static_columns(self):
        return {"task": self.tasks_np.astype(np.int8)}

    @torch.no_grad()
    def evaluate(self, flat, step):
        """Sample from every RNN: the stored sequences with their log-probs, and the accuracy."""
        cfg, lay = self.cfg, self.layout
        stored, fresh = cfg.stored_sequences, cfg.accuracy_samples
        n, length = stored + fresh, cfg.seq_len - 1
        u = np.stack([run_rng(cfg.seed, r, _EVAL, step).random((length, n)) for r in self.run_ids])
        u = torch.as_tensor(u, dtype=torch.float32, device=self.device)
        params = lay.split(flat)
        tok = torch.full((self.k, n), languages.BOS, dtype=torch.int64, device=self.device)
        state = rnn.init_state(lay, self.k, n, flat)
        tokens, logps = [tok], []
        for t in range(length):
            out, state = rnn.step(lay, params, F.one_hot(tok, languages.VOCAB).float(), state)
            logp = torch.log_softmax(out, -1)
            cdf = torch.cumsum(logp.exp(), -1)
            tok = (u[:, t].unsqueeze(-1) > cdf[..., :-1]).sum(-1)  # inverse-CDF sampling
            tokens.append(tok)
            logps.append(logp[:, :stored])
        seqs = torch.stack(tokens, -1)  # (K, n, seq_len)
        acc = languages.in_language(seqs[:, stored:, 1:], self.tasks).float().mean(-1)
        return {
            "sequences": seqs[:, :stored].to(torch.int16).cpu().numpy(),
            "logprobs": torch.stack(logps, 2).to(torch.float16).cpu().numpy(),
            "accuracy": acc.cpu().numpy().astype(np.float32),
        }


class MnistRecipe(Recipe):
    layout = MNIST

    def __init__(self, cfg: MnistZoo, run_ids, device, digits=None):
        super().__init__(cfg, run_ids, device)
        images, labels, self.source = digits if digits is not None else mnist.load_digits(cfg.source, cfg.data_root, cfg.download)
        held = mnist.heldout_mask(len(images))
        self.train_idx = np.flatnonzero(~held)
        self.held_idx = np.flatnonzero(held)
        self.images = torch.as_tensor(np.array(images, copy=True), device=device)
        self.labels = torch.as_tensor(labels.astype(np.int64), device=device)
        draws = [assigned_angle_and_decay(cfg, r) for r in run_ids]
        self.angles_np = np.array([a for a, _ in draws], dtype=np.float32)
        self.wd_np = np.array([wd for _, wd in draws], dtype=np.float32)
        self.angles = torch.as_tensor(self.angles_np, device=device)

    def draw_block(self, i, g):
        return g.integers(0, len(self.train_idx), size=(DATA_BLOCK, self.cfg.batch_size))

    def _inputs(self, digit_idx: torch.Tensor) -> torch.Tensor:
        """(K, B) digit indices -> (K, B, 50, 16) sequences rotated by each RNN's angle."""
        k, b = digit_idx.shape
        ang = self.angles.unsqueeze(1).expand(k, b).reshape(-1)
        return mnist.to_sequences(self.images[digit_idx.reshape(-1)], ang).view(k, b, mnist.STEPS, -1)

    def batch(self, step):
        idx = torch.as_tensor(self.train_idx[self.data_block(step)], device=self.device)
        y = self.labels[idx].unsqueeze(-1).expand(-1, -1, mnist.STEPS)
        return self._inputs(idx), y

    def weight_decay(self):
        return torch.as_tensor(self.wd_np, device=self.device)

    def static_columns(self):
        return {"angle": self.angles_np, "weight_decay": self.wd_np}

    def _loss_acc(self, params, idx_np: np.ndarray):
        """Mean every-step cross-entropy and last-step accuracy of every RNN on the same digits."""
        e = len(idx_np)
        per = max(1, 400_000 // (self.k * mnist.STEPS))
        loss = torch.zeros(self.k, device=self.device, dtype=torch.float64)
        correct = torch.zeros(self.k, device=self.device, dtype=torch.float64)
        for a in range(0, e, per):
            idx = torch.as_tensor(idx_np[a : a + per], device=self.device).unsqueeze(0).expand(self.k, -1)
            out = rnn.run(self.layout, params, self._inputs(idx))
            y = self.labels[idx]
            ce = F.cross_entropy(out.flatten(0, 2), y.unsqueeze(-1).expand(-1, -1, mnist.STEPS).flatten(), reduction="none")
            loss += ce.view(self.k, -1).sum(-1).double()
            correct += (out[:, :, -1].argmax(-1) == y).sum(-1).double()
        return (loss / (e * mnist.STEPS)).float().cpu().numpy(), (correct / e).float().cpu().numpy()

    @torch.no_grad()
    def evaluate(self, flat, step):
        cfg = self.cfg
        params = self.layout.split(flat)
        pick = np.stack(
            [run_rng(cfg.seed, r, _EVAL, step).choice(len(self.held_idx), cfg.stored_sequences, replace=False) for r in self.run_ids]
        )
        idx = torch.as_tensor(self.held_idx[pick], device=self.device)
        x = self._inputs(idx)
        logits = rnn.run(self.layout, params, x)
        e = cfg.eval_digits
        held_loss, held_acc = self._loss_acc(params, self.held_idx[:e])
        train_loss, _ = self._loss_acc(params, self.train_idx[:e])
        return {
            "inputs": x.to(torch.float16).cpu().numpy(),
            "logits": logits.to(torch.float16).cpu().numpy(),
            "accuracy": held_acc.astype(np.float32),
            "train_loss": train_loss.astype(np.float32),
            "heldout_loss": held_loss.astype(np.float32),
        }


def make_recipe(cfg, run_ids, device, digits=None) -> Recipe:
    if cfg.kind == "formal_languages":
        return FormalLanguagesRecipe(cfg, run_ids, device)
    return MnistRecipe(cfg, run_ids, device, digits=digits)


def sequence_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-RNN mean cross-entropy over its batch and steps: (K, B, T, C), (K, B, T) -> (K,)."""
    k, c = out.shape[0], out.shape[-1]
    # classes on dim 1: PyTorch's softmax over a last dimension of 6 takes a slow path (~7x slower)
    ce = F.cross_entropy(out.reshape(k, -1, c).transpose(1, 2), y.reshape(k, -1), reduction="none")
    return ce.mean(-1)


class ChunkTrainer:
    """K RNNs of one zoo, their stacked weights and AdamW state; ``step`` makes one lockstep update."""

    def __init__(self, cfg, run_ids: list[int], device: str | torch.device = "cpu", digits=None,
                 dtype: torch.dtype = torch.float32):
        """``dtype`` other than float32 is for checks (weights, optimiser state and inputs in float64)."""
        self.cfg = cfg
        self.device = torch.device(device)
        self.recipe = make_recipe(cfg, run_ids, self.device, digits=digits)
        self.layout = self.recipe.layout
        lay = self.layout
        init = torch.stack([init_params(lay, cfg.seed, r) for r in run_ids])
        self.flat = init.to(self.device, dtype).requires_grad_(True)
        self.m = torch.zeros_like(self.flat)
        self.v = torch.zeros_like(self.flat)
        wd = self.recipe.weight_decay()  # float64 on zoo B: the decay factor is formed in float64
        self.wd = wd if dtype == torch.float32 else wd.to(dtype)
        self.workspace = rnn.Workspace()

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The inputs and labels of update ``step``, inputs in the trainer's dtype."""
        x, y = self.recipe.batch(step)
        return x.to(self.flat.dtype), y

    def step(self, step: int) -> torch.Tensor:
        """Update ``step`` (0-based): afterwards the weights are those of snapshot ``step + 1``."""
        x, y = self.batch(step)
        lay = self.layout
        loss = sequence_loss(rnn.run(lay, lay.split(self.flat), x, self.workspace), y)
        (grad,) = torch.autograd.grad(loss.sum(), self.flat)
        with torch.no_grad():
            adamw_update(self.flat, grad, self.m, self.v, step + 1, self.cfg.lr(step), self.wd)
        return loss.detach()

    def snapshot(self, step: int) -> dict[str, np.ndarray]:
        cols = self.recipe.evaluate(self.flat.detach(), step)
        cols["params"] = self.flat.detach().cpu().numpy().astype(np.float32)
        cols["step"] = np.full(self.recipe.k, step, dtype=np.int32)
        return cols


def train_chunk(
    cfg,
    run_ids: list[int],
    device: str | torch.device = "cpu",
    digits=None,
    on_step: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Train the runs together and return every snapshot as columns with one row per (run, step)."""
    trainer = ChunkTrainer(cfg, run_ids, device, digits)
    recipe = trainer.recipe
    snaps = set(cfg.snapshots)
    rows: list[dict[str, np.ndarray]] = []
    for step in range(cfg.steps):
        if step in snaps:
            rows.append(trainer.snapshot(step))
        trainer.step(step)
        if on_step is not None:
            on_step(step)
    rows.append(trainer.snapshot(cfg.steps))

    static = recipe.static_columns()
    n_snap = len(rows)
    out = {
        "run_id": np.repeat(np.asarray(run_ids, dtype=np.int32)[None], n_snap, 0).T.reshape(-1),
        **{k: np.repeat(v[:, None], n_snap, 1).reshape(-1, *v.shape[1:]) for k, v in static.items()},
    }
    for key in rows[0]:
        stacked = np.stack([r[key] for r in rows], axis=1)  # (K, n_snap, ...)
        out[key] = stacked.reshape(-1, *stacked.shape[2:])
    if hasattr(recipe, "source"):
        out["_source"] = recipe.source
    return out


# ------------------------------------------------------------------------------------------------
# what a stored zoo B snapshot was evaluated on, replayed from the same random stream


def stored_digit_labels(manifest: dict, run_ids, steps, angles, inputs: np.ndarray | None = None,
                        check: int = 4) -> np.ndarray | None:
    """Zoo B: the labels of each snapshot's stored input digits, (K, N), or None when they cannot be
    recovered. The zoo trainer picks them with a generator keyed on (zoo seed, run, step) over the
    held-out digits; ``check`` snapshots are re-rendered and compared with ``inputs``."""
    if manifest.get("imported"):  # the authors' stored digits are training digits, picked by no stream of ours
        return None
    cfg = manifest.get("config") or {}
    try:
        images, labels, _ = mnist.load_digits(manifest.get("mnist_source") or cfg.get("source", "auto"),
                                              cfg.get("data_root", "~/.cache/rnnray/mnist"), download=False)
    except Exception:  # digits not on disk: nothing to recover them from
        return None
    held = np.flatnonzero(mnist.heldout_mask(len(images)))
    n = int(inputs.shape[1]) if inputs is not None else int(cfg.get("stored_sequences", 100))
    idx = np.stack([held[run_rng(int(cfg.get("seed", 0)), int(r), _EVAL, int(s)).choice(len(held), n, replace=False)]
                    for r, s in zip(run_ids, steps)])
    if inputs is not None:
        for i in range(min(check, len(idx))):
            x = mnist.to_sequences(torch.as_tensor(images[idx[i]]), torch.full((n,), float(angles[i])))
            if float((x - torch.as_tensor(np.asarray(inputs[i], dtype=np.float32))).abs().max()) > 0.05:
                return None
    return np.asarray(labels)[idx].astype(np.int64)
