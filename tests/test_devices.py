"""Device plumbing, checked where there is no GPU: which device Ray's assignment leads to, host-side
batching without per-row Python or CPU sorts, and every training tensor on the model's device
(the ``meta`` device stands in for CUDA: mixing it with a CPU tensor in an element-wise op raises)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnnray.bench.train import synthetic_snapshots
from rnnray.config import parse_zoo
from rnnray.emulation.batches import RowSampler, keyed_permutations, mix, to_device, training_batch
from rnnray.encoders import ENCODERS, default_hparams
from rnnray.runtime.machine import assigned_device
from rnnray.train import BASELINE, build_model, train_step
from rnnray.weights import FORMAL_LANGUAGES, MNIST
from rnnray.zoo.trainer import ChunkTrainer

META = torch.device("meta")
KINDS = {"formal_languages": FORMAL_LANGUAGES, "mnist": MNIST}


def test_the_device_follows_what_ray_assigned_not_the_request():
    assert assigned_device([], "0,1", cuda_available=True) == torch.device("cpu")  # no GPU assigned
    assert assigned_device(["1"], "1", cuda_available=False) == torch.device("cpu")  # a logical GPU, no CUDA
    assert assigned_device(["1"], "1", cuda_available=True) == torch.device("cuda", 0)  # a Ray Data actor
    assert assigned_device(["3"], "2,3", cuda_available=True) == torch.device("cuda", 1)  # Ray Train: the node's GPUs
    assert assigned_device([2], "", cuda_available=True) == torch.device("cuda", 0)


def test_cpu_tensors_stay_where_they_are():
    t = torch.arange(6)
    assert to_device(t, "cpu") is t
    assert to_device(t, META).device == META


def test_row_sampler_walks_epoch_permutations_without_a_loop_over_rows():
    """Equal to looking every position up in its epoch's permutation, one row at a time."""
    s = RowSampler(7, 20, seed=1, rank=2)  # a batch spans three epochs
    for step in range(6):
        pos = np.arange(step * 20, (step + 1) * 20)
        expect = [np.random.default_rng([1, 2, int(p // 7)]).permutation(7)[p % 7] for p in pos]
        assert s.rows(step).tolist() == expect


def test_keyed_permutations_sorted_on_the_device_equal_an_unsigned_sort():
    keys = mix(np.arange(300), 5)
    got = keyed_permutations(keys, MNIST)
    salt = np.arange(MNIST.num_layers * MNIST.hidden).reshape(1, MNIST.num_layers, MNIST.hidden)
    want = np.argsort(mix(keys.reshape(-1, 1, 1), salt), axis=-1, kind="stable")  # uint64, as drawn
    assert len(got) == MNIST.num_layers
    for layer, p in enumerate(got):
        assert np.array_equal(p.numpy(), want[:, layer])
    assert sorted(got[0][0].tolist()) == list(range(MNIST.hidden))


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_training_step_keeps_every_tensor_on_the_models_device(kind):
    layout = KINDS[kind]
    data = synthetic_snapshots(kind, layout, 16, 3)
    flat, inputs, targets = training_batch(data, RowSampler(16, 8, 0), 0, 0, layout, META)
    assert {flat.device, inputs.device, targets.device} == {META}
    for name in [*ENCODERS, BASELINE]:
        model = build_model(name, default_hparams(name), layout, kind, 16).to(META)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        loss = train_step(model, opt, list(model.parameters()), flat, inputs, targets, 0.1)
        assert loss.device == META, name
        assert all(v.device == META for st in opt.state.values() for v in st.values() if v.dim()), name


@pytest.mark.parametrize("spec", [
    {"kind": "formal_languages", "runs": 3, "steps": 4, "accuracy_samples": 20, "stored_sequences": 5},
    {"kind": "mnist", "runs": 3, "steps": 4, "source": "bundled", "eval_digits": 100, "stored_sequences": 5},
], ids=["formal_languages", "mnist"])
def test_the_zoo_trainer_builds_its_batches_and_state_on_its_device(spec):
    trainer = ChunkTrainer(parse_zoo(spec), [0, 1, 2], META)
    loss = trainer.step(0)
    assert {loss.device, trainer.flat.device, trainer.m.device, trainer.v.device, trainer.wd.device} == {META}
