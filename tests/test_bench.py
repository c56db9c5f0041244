"""The training benchmark's measurements: FLOP counts against the shapes, and the command's output."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from rnnray.bench.train import benchmark, format_benchmark, step_flops, synthetic_snapshots, targets_met
from rnnray.emulation.batches import RowSampler, training_batch
from rnnray.train import build_model
from rnnray.weights import Layout


def _batch(kind, layout, batch):
    data = synthetic_snapshots(kind, layout, rows=batch, sequences=2)
    return training_batch(data, RowSampler(batch, batch, seed=0), 0, 0, None)


def test_flop_count_of_the_emulator_matches_its_shapes(one_torch_thread):
    """torch.nn.LSTM's oneDNN layers are counted too: forward 2 x rows x 4H x (in + H) per layer,
    backward twice that; the rest (input projection, head) is a fraction of a percent here."""
    layout = Layout(6, 6)
    flat, inputs, targets = _batch("formal_languages", layout, 8)
    h = 32
    model = build_model("constant", {}, layout, "formal_languages", h)
    lstm = 3 * 2 * (2 * inputs.shape[0] * inputs.shape[1] * 4 * h * (h + h))
    n = step_flops(model, flat, inputs, targets)
    assert lstm < n < 1.1 * lstm, (n, lstm)


def test_probing_flops_are_counted_on_the_pytorch_ops_path(one_torch_thread):
    """The compiled LSTM kernels are invisible to the counter; the count is taken on the PyTorch-ops
    path, so the probed RNNs' products are in it (a reader of the same size alone would be less)."""
    layout = Layout(6, 6)
    flat, inputs, targets = _batch("formal_languages", layout, 4)
    hp = dict(width=16, reader_layers=1, num_probes=2, probe_length=5)
    model = build_model("noninteractive", hp, layout, "formal_languages", 16)
    n = step_flops(model, flat, inputs, targets)
    rnns = 3 * 4 * 2 * 5 * sum(2 * 4 * 32 * (i + 32) for i in (6, 32))  # B x M x T rows through both layers
    assert n > rnns
    assert n == step_flops(model, flat, inputs, targets)  # deterministic, and nothing left behind
    assert all(p.grad is None for p in model.parameters())


def test_benchmark_reports_every_figure(one_torch_thread):
    r = benchmark(["flat", "dws"], budget=2e4, batch=4, emulator_hidden=16, steps=1, warmup=1, reps=1, matmul_rate=10.0)
    assert set(r["ms_per_step"]) == {"flat", "dws", "emulator_only"}
    for key in ("ms_per_step", "flops_per_step", "gflops", "matmul_share"):
        assert all(v > 0 for v in r[key].values()), key
    assert r["matmul_share"]["dws"] == r["gflops"]["dws"] / 10.0
    assert r["ratio_to_emulator_only"]["dws"] == r["ms_per_step"]["dws"] / r["ms_per_step"]["emulator_only"]
    extra_ms = (r["flops_per_step"]["dws"] - r["flops_per_step"]["emulator_only"]) / 10.0 / 1e6
    assert r["ratio_bound_at_matmul_rate"]["dws"] == pytest.approx(1 + extra_ms / r["ms_per_step"]["emulator_only"])
    assert r["ratio_bound_at_matmul_rate"]["dws"] > 1
    extra_product_ms = r["product_ms_per_step"]["dws"] - r["product_ms_per_step"]["emulator_only"]
    assert extra_product_ms > 0  # dws adds products of its own to the emulator's
    assert r["ratio_bound_at_product_shapes"]["dws"] == pytest.approx(1 + extra_product_ms / r["ms_per_step"]["emulator_only"])
    assert targets_met(r) == {}  # the targets apply at the presets, batch 64, emulator 256 only
    json.dumps(r)
    assert "GFLOP/s" in format_benchmark(r) and "dws" in format_benchmark(r)
    preset = benchmark(["stats"], budget=None, batch=4, emulator_hidden=16, steps=1, warmup=0, reps=1, matmul_rate=10.0)
    assert preset["configuration"] == "preset" and preset["hparams"]["stats"]["width"] == 768
    assert torch.get_num_threads() == 1


def test_profile_splits_the_step_into_input_and_compute(one_torch_thread):
    from rnnray.bench.profile import format_profile, profile_steps

    r = profile_steps("flat", steps=3, batch=8, emulator_hidden=16, top=5)
    assert set(r["region_ms_per_step"]) == {"input", "step"}  # both regions were recorded on every step
    assert all(v > 0 for v in r["region_ms_per_step"].values()) and 0 < r["input_share"] < 1
    assert len(r["top_ops"]) == 5 and all(o["self_ms_per_step"] >= 0 for o in r["top_ops"])
    assert r["top_ops"][0]["self_ms_per_step"] >= r["top_ops"][-1]["self_ms_per_step"]
    json.dumps(r)
    assert "input" in format_profile(r) and r["top_ops"][0]["op"][:20] in format_profile(r)


def test_recorded_products_are_the_steps_products_with_their_shapes(one_torch_thread):
    """A linear layer's forward and backward are three products of known shapes (x @ W.T forward;
    grad @ W and grad.T @ x backward); an LSTM is its two oneDNN layer ops; element-wise ops are not
    recorded. Replaying them gives a positive time and skips nothing."""
    from rnnray.bench.products import record_products, replay_seconds

    x = torch.randn(32, 24, requires_grad=True)
    lin = torch.nn.Linear(24, 40, bias=False)
    calls = record_products(lambda: lin(x).relu().sum().backward())
    shapes = sorted(tuple(a[0] for a in spec[0][:2]) for _, spec, _ in calls)
    assert sorted(str(f.overloadpacket) for f, _, _ in calls) == ["aten.mm"] * 3
    assert shapes == sorted([((32, 24), (24, 40)), ((32, 40), (40, 24)), ((40, 32), (32, 24))])
    lstm = torch.nn.LSTM(6, 16, num_layers=2)
    calls = record_products(lambda: lstm(torch.randn(5, 3, 6))[0].sum().backward())
    counts = Counter()
    for f, _, n in calls:
        counts[str(f.overloadpacket)] += n
    assert counts == {"aten.mkldnn_rnn_layer": 2, "aten.mkldnn_rnn_layer_backward": 2}  # one per layer each way
    r = replay_seconds(calls, reps=1)
    assert r["seconds"] > 0 and r["skipped"] == {}
    assert set(r["per_op_seconds"]) == set(counts)


def test_repeated_products_are_counted_once_and_replayed_as_often(one_torch_thread):
    from rnnray.bench.products import record_products, replay_seconds

    a, b = torch.randn(64, 64), torch.randn(64, 64)
    once = record_products(lambda: a @ b)
    five = record_products(lambda: [a @ b for _ in range(5)])
    assert len(five) == 1 and five[0][2] == 5 and once[0][2] == 1
    # a broadcast (stride-0) operand is recreated as a broadcast, not as a full copy
    c = torch.randn(64, 1).expand(64, 64)
    (_, spec, _), = record_products(lambda: c @ b)
    assert spec[0][0][1] == (1, 0)
    assert replay_seconds([(torch.ops.aten.mm.default, spec, 1)], reps=1)["seconds"] > 0


def test_reference_rows_time_the_plain_dws_beside_the_fused_one(one_torch_thread):
    """``--reference`` times dws's plain layer in the same run; both count the same products (the
    fused nodes' in-place ``addmm`` is seen by the FLOP counter and the product recorder), so their
    bounds compare like with like."""
    r = benchmark(["dws", "flat"], budget=2e4, batch=4, emulator_hidden=16, steps=1, warmup=0, reps=2,
                  matmul_rate=10.0, reference=True)
    assert list(r["ms_per_step"]) == ["dws", "dws/reference", "flat", "emulator_only"]  # flat keeps no reference
    assert r["flops_per_step"]["dws"] == r["flops_per_step"]["dws/reference"] > r["flops_per_step"]["emulator_only"]
    assert r["n_params"]["dws"] == r["n_params"]["dws/reference"]
    assert all(len(v) == 2 for v in r["ms_per_rep"].values())
    assert "dws/reference" in format_benchmark(r) and "dws/reference" not in targets_met(r)
