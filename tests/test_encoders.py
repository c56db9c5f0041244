"""Encoders: shapes and gradients, parameter budgets, permutation symmetry, batched probing."""

from __future__ import annotations

import math

import pytest
import torch

from rnnray import rnn
from rnnray.encoders import (
    ENCODERS,
    InfeasibleBudget,
    UnknownEncoder,
    augment,
    build_encoder,
    count_params,
    default_hparams,
    fit_to_budget,
    needs_augmentation,
    search_space,
)
from rnnray.encoders.registry import SPECS, preset_hparams, resolve_hparams
from rnnray.weights import FORMAL_LANGUAGES, MNIST

from conftest import torch_threads

LAYOUTS = {"formal_languages": FORMAL_LANGUAGES, "mnist": MNIST}
INVARIANT = ("stats", "dws", "noninteractive", "interactive", "dlpg")
NOT_INVARIANT = ("flat", "transformer")
# small but structurally complete configurations, so the tests stay fast
SMALL = {
    "flat": dict(width=8, depth=2),
    "stats": dict(width=16, depth=2),
    "transformer": dict(width=16, heads=4, depth=1),
    "dws": dict(width=8, depth=2),
    "noninteractive": dict(width=16, num_probes=2, probe_length=6),
    "interactive": dict(width=16, num_probes=2, probe_length=6),
    "dlpg": dict(width=16, num_probes=2, probe_length=6, generator_depth=3, code_dim=8, generator_width=8),
}


def init_like(layout, batch, scale=1.0, seed=0):
    """Flat vectors drawn like PyTorch's LSTM init, uniform(-1/sqrt(H), 1/sqrt(H)), times ``scale``."""
    g = torch.Generator().manual_seed(seed)
    bound = scale / math.sqrt(layout.hidden)
    return (torch.rand(batch, layout.num_params, generator=g, dtype=torch.float64) * 2 - 1) * bound


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture(params=list(LAYOUTS), ids=list(LAYOUTS))
def kind_layout(request):
    return request.param, LAYOUTS[request.param]


# -- 1. shapes and gradients ----------------------------------------------------------------------
@pytest.mark.parametrize("name", ENCODERS)
def test_forward_shape_and_gradients_reach_every_parameter(name, kind_layout):
    kind, layout = kind_layout
    torch.manual_seed(0)
    enc = build_encoder(name, layout, zoo_kind=kind, **SMALL[name])
    flat = init_like(layout, 3).float()
    rep = enc(flat)
    assert rep.shape == (3, 16) and rep.dtype == torch.float32
    rep.square().sum().backward()
    for pname, p in enc.named_parameters():
        assert p.grad is not None, f"{name}: no gradient for {pname}"
        assert p.grad.abs().sum() > 0, f"{name}: zero gradient for {pname}"
    if name == "noninteractive":
        assert enc.probe_raw.grad.abs().sum() > 0  # the learned probes themselves are trained
    if name == "interactive":
        assert enc.probe_head.weight.grad.abs().sum() > 0  # the probe generator is trained
    if name == "dlpg":  # the codes and every layer of the generator are trained
        assert enc.codes.grad.abs().sum() > 0 and all(m.weight.grad.abs().sum() > 0 for m in enc.generator)


def test_registry_lookups():
    assert ENCODERS == ("flat", "stats", "transformer", "dws", "noninteractive", "interactive", "dlpg")
    assert [n for n in ENCODERS if needs_augmentation(n)] == ["flat", "transformer"]
    for name in ENCODERS:
        defaults = default_hparams(name)
        assert "width" in defaults and "head_width" in defaults
        assert set(search_space(name)) <= set(defaults)
    assert search_space("noninteractive")["num_probes"] == [1, 2, 4, 8]
    assert search_space("interactive", "mnist")["probe_length"] == [25, 50]
    with pytest.raises(UnknownEncoder, match="flat, stats, transformer, dws, noninteractive, interactive, dlpg"):
        build_encoder("lstm", FORMAL_LANGUAGES)
    assert issubclass(UnknownEncoder, ValueError)
    with pytest.raises(TypeError, match="widht"):
        build_encoder("flat", FORMAL_LANGUAGES, widht=3)
    with pytest.raises(ValueError, match="contradicts"):
        build_encoder("noninteractive", FORMAL_LANGUAGES, zoo_kind="mnist")


def test_probe_defaults_follow_the_zoo():
    m = default_hparams("noninteractive")["num_probes"]
    assert build_encoder("noninteractive", FORMAL_LANGUAGES, width=4).probe_raw.shape == (m, 22, 6)
    assert build_encoder("noninteractive", MNIST, width=4).probe_raw.shape == (m, 50, 16)
    assert build_encoder("interactive", MNIST, width=4, num_probes=8).probe_length == 50


@pytest.mark.parametrize("name", ENCODERS)
def test_read_out_width_and_depth(name):
    """The read-out has head_depth hidden layers whose width keeps the preset's proportion to the
    body unless head_width is given; head_depth 0 is a single linear map to 16."""
    d = default_hparams(name)
    width = d.get("heads", 1) * 12
    ratio = SPECS[name].head_ratio

    def read_out(enc):
        return [m.out_features for m in enc.head.modules() if isinstance(m, torch.nn.Linear)]

    assert read_out(build_encoder(name, MNIST, width=width)) == [round(ratio * width)] * d["head_depth"] + [16]
    assert read_out(build_encoder(name, MNIST, width=width, head_width=5, head_depth=1)) == [5, 16]
    assert read_out(build_encoder(name, MNIST, width=width, head_depth=0)) == [16]


# -- 2. budgets -----------------------------------------------------------------------------------
@pytest.mark.parametrize("budget", [2e4, 2e5, 1.2e6])
@pytest.mark.parametrize("name", ENCODERS)
def test_fit_to_budget_lands_within_tolerance(name, budget, kind_layout):
    kind, layout = kind_layout
    if (name, kind, budget) == ("dlpg", "mnist", 2e4):  # its generator alone (28.5 k) is over the budget
        with pytest.raises(InfeasibleBudget, match="'dlpg'"):
            fit_to_budget(name, layout, budget, tolerance=0.05)
        return
    hp, n = fit_to_budget(name, layout, budget, tolerance=0.05)
    enc = build_encoder(name, layout, **hp)
    built = count_params(enc)  # the real module, not the fitter's claim
    assert built == n
    assert abs(built - budget) <= 0.05 * budget, (name, budget, built, hp)
    for key, value in default_hparams(name).items():  # only the width knobs were changed
        if key not in ("width", "head_width", "head_depth") and value is not None:
            assert hp[key] == value
    if name in ("dws", "transformer", "noninteractive", "interactive", "dlpg"):  # the budget is in the body
        assert count_params(enc.head) <= 0.25 * n, (name, budget, count_params(enc.head), n, hp)
    if budget >= 2e5:  # steps fine enough: the read-out keeps the preset's shape
        assert hp["head_depth"] == default_hparams(name)["head_depth"]
        if hp["head_depth"]:
            assert hp["head_width"] == round(SPECS[name].head_ratio * hp["width"])


@pytest.mark.parametrize("name", ENCODERS)
def test_fitted_to_the_presets_own_count_is_the_preset(name, kind_layout):
    """At the paper preset's own parameter count the fitter gives back the preset (width rounding
    aside): the budget scales the body and nothing else."""
    kind, layout = kind_layout
    preset = resolve_hparams(name, layout, kind)
    n_preset = count_params(build_encoder(name, layout, kind))
    hp, n = fit_to_budget(name, layout, n_preset, tolerance=0.01, zoo_kind=kind)
    assert abs(hp["width"] - preset["width"]) <= 0.02 * preset["width"] + SPECS[name].head_ratio, (hp, preset)
    assert {k: v for k, v in hp.items() if k not in ("width", "head_width")} == \
        {k: v for k, v in preset.items() if k not in ("width", "head_width")}
    assert abs(n - n_preset) <= 0.01 * n_preset


def test_paper_presets_match_the_spec():
    """SPEC.md 5b, as configurations (the counts are printed by ``python -m rnnray.encoders.presets``)."""
    p = {name: default_hparams(name) for name in ENCODERS}
    assert p == {name: preset_hparams(name, "paper") for name in ENCODERS}
    assert (p["flat"]["width"], p["flat"]["depth"], p["flat"]["head_depth"]) == (128, 3, 0)
    assert (p["stats"]["width"], p["stats"]["depth"], p["stats"]["head_depth"]) == (768, 3, 0)
    t = p["transformer"]
    assert (t["width"], t["depth"], t["heads"], t["ff_mult"] * t["width"], t["head_depth"]) == (128, 6, 2, 512, 0)
    assert (p["dws"]["width"], p["dws"]["depth"], p["dws"]["head_depth"]) == (48, 4, 1)
    assert resolve_hparams("dws", FORMAL_LANGUAGES)["head_width"] == 128
    for probing in ("noninteractive", "interactive", "dlpg"):
        q = resolve_hparams(probing, MNIST)
        assert (q["width"], q["reader_layers"], q["residual"], q["num_probes"], q["head_width"]) == (256, 2, True, 1, 128)
        assert q["probe_length"] == 50 and resolve_hparams(probing, FORMAL_LANGUAGES)["probe_length"] == 22
    d = p["dlpg"]  # the probing preset plus its generator (probe_generators.py's docstring)
    assert (d["generator_depth"], d["code_dim"], d["generator_width"]) == (3, 32, 32)
    assert {k: v for k, v in d.items() if k not in ("generator_depth", "code_dim", "generator_width")} == p["noninteractive"]
    with pytest.raises(ValueError, match="unknown preset 'papr'"):
        preset_hparams("dws", "papr")


@pytest.mark.parametrize("name", ENCODERS)
def test_absurd_budget_is_infeasible_and_reports_the_range(name):
    with pytest.raises(InfeasibleBudget) as info:
        fit_to_budget(name, FORMAL_LANGUAGES, 100)
    msg = str(info.value)
    assert isinstance(info.value, ValueError)
    assert name in msg and "100" in msg and "range" in msg
    step = default_hparams(name).get("heads", 1) if name == "transformer" else 1
    depth = max(1, default_hparams(name)["head_depth"])  # the fine knob's read-out has a hidden layer
    smallest = count_params(build_encoder(name, FORMAL_LANGUAGES, width=step, head_width=1, head_depth=depth))
    assert str(smallest) in msg


def test_transformer_block_is_torchs_pre_norm_layer():
    """The written-out block computes exactly ``nn.TransformerEncoderLayer(norm_first=True, gelu)``."""
    from rnnray.encoders.transformer import Block

    torch.manual_seed(0)
    block = Block(16, 4, 32, 0.0).double()
    ref = torch.nn.TransformerEncoderLayer(16, 4, 32, 0.0, activation="gelu", batch_first=True, norm_first=True)
    ref = ref.double()
    with torch.no_grad():
        ref.self_attn.in_proj_weight.copy_(block.qkv.weight)
        ref.self_attn.in_proj_bias.copy_(block.qkv.bias)
        ref.self_attn.out_proj.load_state_dict(block.out.state_dict())
        for mine, theirs in ((block.ff1, ref.linear1), (block.ff2, ref.linear2), (block.norm1, ref.norm1),
                             (block.norm2, ref.norm2)):
            theirs.load_state_dict(mine.state_dict())
    assert count_params(block) == count_params(ref)
    x = torch.randn(3, 7, 16, dtype=torch.float64)
    torch.testing.assert_close(block(x), ref(x), atol=1e-12, rtol=1e-12)


# -- 3. permutation symmetry ----------------------------------------------------------------------
def test_layout_permute_preserves_the_function(kind_layout):
    _, layout = kind_layout
    flat = init_like(layout, 1, scale=3.0)[0].float()
    g = torch.Generator().manual_seed(1)
    permuted = layout.permute(flat, [p[0] for p in layout.random_permutations(1, g)])
    assert not torch.equal(permuted, flat)
    x = torch.randn(4, 9, layout.input_size, generator=g)
    lstm_a, lin_a = layout.to_modules(flat)
    lstm_b, lin_b = layout.to_modules(permuted)
    with torch.no_grad():
        ya, yb = lin_a(lstm_a(x)[0]), lin_b(lstm_b(x)[0])
    torch.testing.assert_close(ya, yb, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("scale", [1.0, 6.0])
def test_invariant_encoders_ignore_hidden_permutations(kind_layout, scale):
    kind, layout = kind_layout
    flat = init_like(layout, 3, scale=scale, seed=2)
    g = torch.Generator().manual_seed(3)
    permuted = layout.permute(flat, layout.random_permutations(3, g))
    assert (permuted - flat).abs().max() > 1e-3  # the permutation really moved weights
    for name in INVARIANT:
        torch.manual_seed(0)
        enc = build_encoder(name, layout, zoo_kind=kind, **SMALL[name]).double()
        with torch.no_grad():
            a, b = enc(flat), enc(permuted)
        assert rel_err(b, a) < 1e-5, name
    # a shuffle that is NOT a symmetry (rows of weight_hh_l0 only) must be seen by the encoders that
    # are not plain block statistics, so their invariance is not blindness
    parts = layout.split(flat.clone())
    order = torch.randperm(layout.hidden, generator=g)
    w_hh = parts["weight_hh_l0"].view(3, 4, layout.hidden, -1)
    parts["weight_hh_l0"] = w_hh[:, :, order].reshape(3, 4 * layout.hidden, -1)
    broken = layout.join(parts)
    for name in ("dws", "noninteractive", "interactive", "dlpg"):
        torch.manual_seed(0)
        enc = build_encoder(name, layout, zoo_kind=kind, **SMALL[name]).double()
        with torch.no_grad():
            assert rel_err(enc(broken), enc(flat)) > 1e-6, name
    for name in NOT_INVARIANT:
        torch.manual_seed(0)
        enc = build_encoder(name, layout, zoo_kind=kind, **SMALL[name]).double()
        with torch.no_grad():
            a, b = enc(flat), enc(permuted)
        assert rel_err(b, a) > 1e-3, name


@pytest.mark.parametrize("name", ENCODERS)
def test_paper_presets_symmetry(name, kind_layout):
    """The invariance checks at the paper's own shapes (float64): exact for dws, stats and probing,
    and flat / transformer do see the permutation."""
    kind, layout = kind_layout
    flat = init_like(layout, 2, scale=2.0, seed=12)
    permuted = layout.permute(flat, layout.random_permutations(2, torch.Generator().manual_seed(13)))
    torch.manual_seed(0)
    enc = build_encoder(name, layout, zoo_kind=kind).double()
    with torch.no_grad(), torch_threads(2):
        a, b = enc(flat), enc(permuted)
    if name in INVARIANT:
        assert rel_err(b, a) < 1e-9, name
    else:
        assert rel_err(b, a) > 1e-3, name


def test_augment_permutes_without_changing_functions(kind_layout):
    _, layout = kind_layout
    flat = init_like(layout, 4, seed=4).float()
    aug = augment(flat, layout, torch.Generator().manual_seed(5))
    assert aug.shape == flat.shape and (aug - flat).abs().max() > 1e-3
    again = augment(flat, layout, torch.Generator().manual_seed(5))
    assert torch.equal(aug, again)  # reproducible from the generator
    other = augment(flat, layout, torch.Generator().manual_seed(6))
    assert not torch.equal(aug, other)
    x = torch.randn(4, 2, 7, layout.input_size)
    torch.testing.assert_close(rnn.run(layout, layout.split(aug), x), rnn.run(layout, layout.split(flat), x),
                               atol=1e-5, rtol=1e-5)
    # same multiset of values per RNN: only positions moved
    torch.testing.assert_close(aug.sort(dim=1).values, flat.sort(dim=1).values)


# -- 4. batched functional evaluation -------------------------------------------------------------
def test_rnn_run_matches_torch_modules(kind_layout):
    _, layout = kind_layout
    flat = init_like(layout, 3, scale=2.0, seed=7).float()
    x = torch.randn(3, 5, 8, layout.input_size)
    batched = rnn.run(layout, layout.split(flat), x)
    for k in range(3):
        lstm, lin = layout.to_modules(flat[k])
        with torch.no_grad():
            ref = lin(lstm(x[k])[0])
        torch.testing.assert_close(batched[k], ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["noninteractive", "interactive", "dlpg"])
def test_probing_batch_equals_one_rnn_at_a_time(name, kind_layout):
    kind, layout = kind_layout
    torch.manual_seed(0)
    enc = build_encoder(name, layout, zoo_kind=kind, **SMALL[name])
    flat = init_like(layout, 4, scale=2.0, seed=8).float()
    with torch.no_grad():
        together = enc(flat)
        alone = torch.cat([enc(flat[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    assert (together[0] - together[1]).abs().max() > 1e-4  # different RNNs, different answers


# -- 5. deep linear probe generators (dlpg) -------------------------------------------------------
def _dlpg(kind, layout, **hp):
    torch.manual_seed(0)
    return build_encoder("dlpg", layout, zoo_kind=kind, **{**SMALL["dlpg"], **hp}).double()


def test_dlpg_is_exactly_invariant_to_an_explicit_hidden_permutation(kind_layout):
    """One explicit hidden-neuron permutation per layer (the neurons' order reversed, then rolled),
    applied to the flat vectors: the representations are equal to float64 precision, with several
    probes sharing the generator, while shuffling only weight_hh's rows (not a symmetry) is seen."""
    kind, layout = kind_layout
    enc = _dlpg(kind, layout, num_probes=4)
    flat = init_like(layout, 3, scale=3.0, seed=21)
    h = layout.hidden
    perms = [torch.arange(h - 1, -1, -1).roll(layer + 1) for layer in range(layout.num_layers)]
    permuted = layout.permute(flat, perms)
    assert (permuted - flat).abs().max() > 1e-3
    broken = layout.split(flat.clone())
    w_hh = broken["weight_hh_l0"].view(3, 4, h, -1)
    broken["weight_hh_l0"] = w_hh[:, :, perms[0]].reshape(3, 4 * h, -1)
    with torch.no_grad():
        a, b, c = enc(flat), enc(permuted), enc(layout.join(broken))
    assert rel_err(b, a) < 1e-12
    assert rel_err(c, a) > 1e-6


def test_dlpg_generator_is_deep_and_linear(kind_layout):
    """The generator is generator_depth nn.Linear layers and nothing else, so it is one affine map:
    g(c) - g(0) is linear in the codes, and equals the product of the layers' weights applied to c.
    Its output becomes probes through the free probes' own input map (token distributions on zoo A,
    pixels in (0, 1) on zoo B), and at initialisation the raw values are distributed like the free
    probes' N(0, 1), BOS's first-step logit +3 on zoo A."""
    kind, layout = kind_layout
    enc = _dlpg(kind, layout, generator_depth=4, code_dim=8, generator_width=5)
    assert [type(m) for m in enc.generator] == [torch.nn.Linear] * 4
    g = torch.Generator().manual_seed(22)
    c1, c2 = (torch.randn(3, 8, generator=g, dtype=torch.float64) for _ in range(2))
    zero = torch.zeros(1, 8, dtype=torch.float64)
    with torch.no_grad():
        offset = enc.generate(zero)
        lin = lambda c: enc.generate(c) - offset  # noqa: E731
        torch.testing.assert_close(lin(2.5 * c1 - 0.7 * c2), 2.5 * lin(c1) - 0.7 * lin(c2), atol=1e-12, rtol=1e-12)
        product = torch.eye(8, dtype=torch.float64)
        for layer in enc.generator:
            product = layer.weight @ product
        assert torch.linalg.matrix_rank(product) == 5  # the narrowest layer bounds the map's rank
        torch.testing.assert_close(lin(c1).flatten(1), c1 @ product.T, atol=1e-12, rtol=1e-12)
        probes = enc.probes()
    assert probes.shape == (2, 6, layout.input_size)
    assert torch.equal(probes, enc.activate(enc.generate(enc.codes)))
    assert probes.min() > 0 and probes.max() < 1
    torch.manual_seed(1)
    wide = build_encoder("dlpg", layout, zoo_kind=kind, width=4, num_probes=256)
    with torch.no_grad():
        raw = wide.generate(wide.codes)
    assert 0.9 < raw[:, 1:].std().item() < 1.1 and abs(raw[:, 1:].mean().item()) < 0.1
    if kind == "formal_languages":
        torch.testing.assert_close(probes.sum(-1), torch.ones(2, 6, dtype=torch.float64))
        assert 2.5 < raw[:, 0, 4].mean().item() < 3.5 and abs(raw[:, 0, :4].mean().item()) < 0.3


def test_dlpg_differs_from_noninteractive_only_in_the_probe_source(kind_layout):
    """Given the probes dlpg generates as noninteractive's free probes, and the same reader and
    read-out, the two encoders compute the same representation."""
    kind, layout = kind_layout
    dlpg = _dlpg(kind, layout)
    free = build_encoder("noninteractive", layout, zoo_kind=kind, **SMALL["noninteractive"]).double()
    shared = {k: v for k, v in dlpg.state_dict().items() if not k.startswith(("codes", "generator"))}
    assert set(shared) == set(free.state_dict()) - {"probe_raw"}
    free.load_state_dict({**shared, "probe_raw": dlpg.generate(dlpg.codes).detach()})
    flat = init_like(layout, 3, scale=2.0, seed=23)
    with torch.no_grad():
        torch.testing.assert_close(free(flat), dlpg(flat), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("budget", [1e5, 1.2e6])
def test_dlpg_fits_a_budget_through_the_readers_width(kind_layout, budget):
    """The budget scales the reader (``width``) and the read-out in proportion; the generator and
    the codes keep the preset's size; below the generator's own size the budget is infeasible."""
    kind, layout = kind_layout
    preset = build_encoder("dlpg", layout, kind)
    hp, n = fit_to_budget("dlpg", layout, budget, tolerance=0.05, zoo_kind=kind)
    enc = build_encoder("dlpg", layout, kind, **hp)
    assert count_params(enc) == n and abs(n - budget) <= 0.05 * budget
    assert count_params(enc.generator) == count_params(preset.generator) and enc.codes.shape == preset.codes.shape
    assert {k: v for k, v in hp.items() if k not in ("width", "head_width")} == \
        {k: v for k, v in resolve_hparams("dlpg", layout, kind).items() if k not in ("width", "head_width")}
    assert (hp["width"] < 256) == (budget < count_params(preset))
    generator = count_params(preset.generator) + preset.codes.numel()
    with pytest.raises(InfeasibleBudget, match="'dlpg'"):
        fit_to_budget("dlpg", layout, 0.9 * generator, zoo_kind=kind)


# -- 6. dws: the fused nodes against the plain layer ------------------------------------------------
@pytest.mark.parametrize("hp", [dict(width=8, depth=1), dict(width=8, depth=3), {}], ids=["depth1", "depth3", "preset"])
def test_dws_fused_nodes_equal_the_plain_layer(hp, kind_layout, one_torch_thread):
    """``rnnray/encoders/dws_entries.py`` computes the plain layer's values (``reference=True``) in
    fewer passes: outputs, every parameter's gradient and the input's gradient agree to float32
    rounding, on inputs large enough that ReLU masks and every broadcast matter."""
    kind, layout = kind_layout
    torch.manual_seed(0)
    fused = build_encoder("dws", layout, zoo_kind=kind, **hp)
    plain = build_encoder("dws", layout, zoo_kind=kind, **hp)
    plain.load_state_dict(fused.state_dict())
    plain.reference = True
    flat = init_like(layout, 3, scale=3.0, seed=21).float()
    upstream = torch.randn(3, 16, generator=torch.Generator().manual_seed(22))
    results = []
    for enc in (fused, plain):
        x = flat.clone().requires_grad_(True)
        out = enc(x)
        (out * upstream).sum().backward()
        results.append((out, x.grad, {n: p.grad for n, p in enc.named_parameters()}))
    (out_f, gx_f, grads_f), (out_p, gx_p, grads_p) = results
    assert (out_p - out_p.mean(0)).abs().max() > 1e-3  # the RNNs differ, so does what the encoder says
    torch.testing.assert_close(out_f, out_p, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gx_f, gx_p, rtol=1e-4, atol=1e-6)
    assert grads_f.keys() == grads_p.keys()
    for name, g in grads_p.items():
        scale = g.abs().max().item()
        assert scale > 0, name
        torch.testing.assert_close(grads_f[name], g, rtol=1e-4, atol=1e-5 * scale, msg=name)
    with torch.no_grad():  # evaluation takes the same path without building a graph
        torch.testing.assert_close(fused(flat), out_p.detach(), rtol=1e-5, atol=1e-6)


def test_dws_step_overwrites_its_input_and_autograd_guards_that():
    """``Step`` writes the new residual stream into ``f``'s memory. Nothing in the encoder keeps
    ``f``; were something to (here a product that saved it), autograd's version counter refuses the
    backward instead of computing a wrong gradient."""
    from rnnray.encoders.dws_entries import Enter, Step

    g = torch.Generator().manual_seed(0)
    f = torch.randn(2, 4, 4, 8, generator=g, requires_grad=True)
    w = torch.randn(8, 8, generator=g, requires_grad=True)
    row, col = torch.randn(2, 4, 8, generator=g), torch.randn(2, 4, 8, generator=g)
    base = f * 1.0
    x, *_ = Enter.apply(base, True, True)
    out = Step.apply(base, x, w, row, col, True, True)
    assert out[0].data_ptr() == base.data_ptr()  # in place, no new tensor
    kept = f * 1.0
    spy = kept * kept  # saves ``kept`` for its backward
    x2, *_ = Enter.apply(kept, True, True)
    out2 = Step.apply(kept, x2, w, row, col, True, True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        (out2[0].sum() + spy.sum()).backward()
