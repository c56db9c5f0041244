"""What the emulator predicts of an RNN's performance from its representation alone, against
the RNN's real performance: the science behind the report's performance-prediction figure.

Performance prediction, the choices:

* Zoo A: the emulator, conditioned on an RNN's representation, *samples* strings (BOS, then 41
  tokens drawn from its own softmax, fed back) exactly as the zoo sampled the RNN for its stored
  accuracy; the emulated accuracy is the fraction of its samples in the RNN's language
  (:func:`rnnray.zoo.languages.in_language`), compared with the stored ``accuracy``.
* Zoo B: the emulator runs on the snapshot's stored input sequences (held-out digits) and its
  last-step argmax is scored against the digits' labels. Labels are not stored in the zoo, so they
  are recovered by replaying the zoo's deterministic choice of stored digits (the trainer's
  per-(seed, run, step) generator over the held-out digits) and *verified* by re-rendering those
  digits and comparing them with the stored inputs; the emulated accuracy is compared with the
  stored held-out accuracy (measured on ``eval_digits`` held-out digits, so part of the scatter is
  the sampling noise of the stored 100 digits; the report gives the RNN's own accuracy on the same
  digits as the reference for that noise). When labels cannot be recovered (the digits are not on
  disk, or the check fails) the figure falls back to the emulator's last-step agreement with the
  RNN's stored predictions, and says so.
* Snapshots: the validation and OOD splits, at most ``max_snapshots`` of them (a fixed-seed
  sample), the same for every encoder.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F

from ..kinds import zoo_kind


FORMAL_SAMPLE_LENGTH = 41  # tokens after BOS, as the zoo sampled its RNNs


SNAPSHOT_SEED = 0


def pearson(x, y) -> float:
    """Pearson correlation; NaN when either side is constant or fewer than 2 points."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


@torch.no_grad()
def sample_emulator(emulator, reps: torch.Tensor, n_samples: int, length: int = FORMAL_SAMPLE_LENGTH,
                    generator: torch.Generator | None = None, max_batch: int = 8192, return_logprobs: bool = False):
    """Strings sampled from a formal-language emulator conditioned on representations (K, 16):
    (K, n_samples, length) token ids after BOS (and, with ``return_logprobs``, the log-probability
    of each sampled token, same shape). The representation enters as in
    :class:`rnnray.emulation.emulator.Emulator`'s forward: at the BOS step (``conditioning="bos"``), or added
    to every input, each sampled token's too (``"every_step"``); each sampled token is the next
    input, the LSTM state is carried, so a step costs one LSTM step rather than a pass over the prefix."""
    from ..zoo.languages import BOS

    device = next(emulator.parameters()).device
    per = max(1, max_batch // n_samples)
    chunks = []
    for a in range(0, len(reps), per):
        r = reps[a:a + per].to(device).repeat_interleave(n_samples, 0)
        tok = torch.full((len(r), 1), BOS, dtype=torch.long, device=device)
        cond = emulator.condition(r)
        every_step = emulator.conditioning == "every_step"
        x = emulator.embed_inputs(tok) + cond
        state, out, lps = None, [], []
        for _ in range(length):
            h, state = emulator.lstm(x, state)
            logp = F.log_softmax(emulator.head(h[:, -1]).float(), dim=-1)
            tok = torch.multinomial(logp.exp().cpu(), 1, generator=generator).to(device)
            out.append(tok)
            lps.append(logp.gather(1, tok))
            x = emulator.embed_inputs(tok) + cond if every_step else emulator.embed_inputs(tok)
        chunks.append((torch.cat(out, 1).view(-1, n_samples, length).cpu(), torch.cat(lps, 1).view(-1, n_samples, length).cpu()))
    tokens = torch.cat([c[0] for c in chunks])
    return (tokens, torch.cat([c[1] for c in chunks])) if return_logprobs else tokens


@torch.no_grad()
def emulated_language_accuracy(model, params: np.ndarray, tasks: np.ndarray, n_samples: int = 100,
                               seed: int = 0, device=None) -> np.ndarray:
    """Zoo A: fraction of the emulator's samples in each RNN's language, (K,)."""
    from ..zoo.languages import in_language

    device = torch.device(device or "cpu")
    model = model.to(device).eval()
    rep = model.encoder(torch.from_numpy(np.array(params, dtype=np.float32)).to(device)).float()
    gen = torch.Generator().manual_seed(seed)
    samples = sample_emulator(model.emulator, rep, n_samples, generator=gen)
    return in_language(samples, torch.as_tensor(np.asarray(tasks), dtype=torch.long)).float().mean(-1).numpy()


@torch.no_grad()
def emulated_last_step_predictions(model, params: np.ndarray, inputs: np.ndarray, device=None, max_batch: int = 2048) -> np.ndarray:
    """Zoo B: the emulator's last-step class for each stored input sequence, (K, N)."""
    device = torch.device(device or "cpu")
    model = model.to(device).eval()
    k, n = inputs.shape[:2]
    rep = model.encoder(torch.from_numpy(np.array(params, dtype=np.float32)).to(device)).float()
    x = torch.from_numpy(np.array(inputs, dtype=np.float32)).reshape(k * n, *inputs.shape[2:])
    r = rep.repeat_interleave(n, 0)
    out = [model.emulator(r[a:a + max_batch], x[a:a + max_batch].to(device))[:, -1].argmax(-1).cpu()
           for a in range(0, k * n, max_batch)]
    return torch.cat(out).view(k, n).numpy()


def choose_rows(table, kind: str, split_seed: int, max_snapshots: int, scheme: str = "ours") -> tuple[np.ndarray, np.ndarray]:
    """Validation and OOD rows (a fixed-seed sample of at most ``max_snapshots``), and each one's
    split label ("val" / "ood")."""
    from .downstream import split_rows

    rows = split_rows(table, kind, split_seed, scheme)
    cand = np.concatenate([rows["val"], rows["ood_train"], rows["ood_test"]])
    label = np.array(["val"] * len(rows["val"]) + ["ood"] * (len(cand) - len(rows["val"])))
    if len(cand) > max_snapshots:
        pick = np.sort(np.random.default_rng(SNAPSHOT_SEED).choice(len(cand), max_snapshots, replace=False))
        cand, label = cand[pick], label[pick]
    order = np.argsort(cand)
    return cand[order], label[order]


def _read_rows(zoo: str, columns: list[str], run_ids: np.ndarray) -> dict[tuple[int, int], dict]:
    """Selected columns of the given runs' rows, keyed by (run_id, step), read shard by shard."""
    import pyarrow.parquet as pq

    from ..zoo.storage import shard_paths

    _, files = shard_paths(zoo, checksums=False)
    want = sorted({int(r) for r in run_ids})
    out = {}
    for f in files:
        t = pq.read_table(f, columns=["run_id", "step", *columns], filters=[("run_id", "in", want)])
        if not len(t):
            continue
        cols = {c: _np(t, c) for c in ["run_id", "step", *columns]}
        for i in range(len(t)):
            out[(int(cols["run_id"][i]), int(cols["step"][i]))] = {c: cols[c][i] for c in columns}
    return out


def _np(table, name):
    col = table.column(name).combine_chunks()
    return col.to_numpy_ndarray() if hasattr(col, "to_numpy_ndarray") else col.to_numpy(zero_copy_only=False)


def performance_prediction(models: Mapping, table, manifest: Mapping, zoo: str, split_seed: int, *,
                           max_snapshots: int = 128, n_samples: int = 100, device=None, scheme: str = "ours") -> dict:
    """Emulated against real performance for every encoder on the same snapshots (see the module
    docstring). Returns ``{"quantity", "real", "split", "encoders": {name: {"emulated": [...],
    "pearson", "mae"}}, ...}``."""
    kind = manifest["kind"]
    rows, split = choose_rows(table, kind, split_seed, max_snapshots, scheme)
    run_ids, steps = _np(table, "run_id")[rows], _np(table, "step")[rows]
    params = _np(table, "params")[rows]
    real = _np(table, "accuracy")[rows].astype(np.float64)
    out: dict = {"rows": len(rows), "split": split.tolist(), "real": real.tolist(), "encoders": {}}
    if zoo_kind(kind).generative:  # samples from the emulator, checked against the language
        tasks = _np(table, "task")[rows]
        out.update(quantity="accuracy (fraction of samples in the language)",
                   method=f"{n_samples} strings sampled from the emulator per RNN, checked with in_language")
        for name, model in models.items():
            emu = emulated_language_accuracy(model, params, tasks, n_samples=n_samples, device=device)
            out["encoders"][name] = {"emulated": emu.tolist(), "pearson": pearson(real, emu), "mae": float(np.abs(emu - real).mean())}
        return out
    stored = _read_rows(zoo, ["inputs", "logits"], run_ids)
    inputs = np.stack([stored[(int(r), int(s))]["inputs"] for r, s in zip(run_ids, steps)])
    logits = np.stack([stored[(int(r), int(s))]["logits"] for r, s in zip(run_ids, steps)])
    rnn_pred = np.asarray(logits, dtype=np.float32)[:, :, -1].argmax(-1)
    from ..zoo.trainer import stored_digit_labels

    labels = stored_digit_labels(manifest, run_ids, steps, _np(table, "angle")[rows], inputs)
    if labels is not None:
        ref = (rnn_pred == labels).mean(-1)
        out.update(quantity="held-out accuracy", labels="recovered and verified",
                   method="emulator's last-step accuracy on each snapshot's stored held-out digits",
                   rnn_same_digits=ref.tolist(), rnn_same_digits_pearson=pearson(real, ref))
    else:
        out.update(quantity="last-step agreement with the RNN (labels unavailable)", labels="unavailable",
                   method="fraction of stored inputs where the emulator's last-step class equals the RNN's")
    for name, model in models.items():
        pred = emulated_last_step_predictions(model, params, inputs, device=device)
        emu = (pred == labels).mean(-1) if labels is not None else (pred == rnn_pred).mean(-1)
        out["encoders"][name] = {"emulated": emu.tolist(), "pearson": pearson(real, emu), "mae": float(np.abs(emu - real).mean()),
                                 "agreement": float((pred == rnn_pred).mean())}
    return out
