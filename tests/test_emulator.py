"""Emulator: conditioning on the representation, the total-variation loss, zoo targets, training."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rnnray.emulation.emulator import (
    ConstantRepresentation,
    EmulationModel,
    Emulator,
    inputs_from_sequences,
    targets_from_logits,
    targets_from_logprobs,
    total_variation,
)
from rnnray.encoders import build_encoder
from rnnray.weights import FORMAL_LANGUAGES


def make_inputs(kind, batch=3, steps=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    if kind == "formal_languages":
        return torch.randint(0, 6, (batch, steps), generator=g)
    return torch.rand(batch, steps, 16, generator=g)


@pytest.mark.parametrize("kind,outputs", [("formal_languages", 6), ("mnist", 10)])
def test_shapes_and_normalised_representation(kind, outputs):
    torch.manual_seed(0)
    em = Emulator(kind, hidden=16)
    rep, inputs = torch.randn(3, 16), make_inputs(kind)
    logits = em(rep, inputs)
    assert logits.shape == (3, 7, outputs)
    torch.testing.assert_close(em(7.0 * rep, inputs), logits)  # only the direction matters
    assert (em(-rep, inputs) - logits).abs().max() > 1e-4  # ... and the direction does matter


@pytest.mark.parametrize("kind", ["formal_languages", "mnist"])
def test_representation_enters_at_the_first_step_only(kind):
    torch.manual_seed(0)
    em = Emulator(kind, hidden=16)
    inputs = make_inputs(kind)
    seen = []
    em.lstm.register_forward_hook(lambda mod, args, out: seen.append(args[0].detach()))
    rep_a, rep_b = torch.randn(3, 16), torch.randn(3, 16)
    out_a, out_b = em(rep_a, inputs), em(rep_b, inputs)
    plain = em.embed_inputs(inputs)
    for rep, lstm_in in ((rep_a, seen[0]), (rep_b, seen[1])):
        torch.testing.assert_close(lstm_in[:, 1:], plain[:, 1:], rtol=0, atol=0)  # later steps untouched
        torch.testing.assert_close(lstm_in[:, 0], plain[:, 0] + em.rep_proj(F.normalize(rep, dim=-1)))
    assert (out_a[:, 0] - out_b[:, 0]).abs().max() > 1e-4  # a different representation changes step 0


def test_total_variation_known_values():
    p = torch.tensor([[0.2, 0.3, 0.5]])
    assert total_variation(p, p.log()).item() == pytest.approx(0.0, abs=1e-6)  # identical
    one_hot_a = torch.tensor([[1.0, 0.0, 0.0]])
    logits_b = torch.tensor([[-1e4, 1e4, -1e4]])
    assert total_variation(one_hot_a, logits_b).item() == pytest.approx(1.0, abs=1e-6)  # disjoint
    # hand computed: 0.5 * (|0.5-0.25| + |0.5-0.25| + |0-0.5|) = 0.5
    target = torch.tensor([[0.5, 0.5, 0.0]])
    q_logits = torch.tensor([[0.25, 0.25, 0.5]]).log()
    assert total_variation(target, q_logits).item() == pytest.approx(0.5, abs=1e-6)
    # averaged over steps and RNNs: (0 + 1 + 0.5 + 0.5) / 4
    targets = torch.stack([torch.cat([p, one_hot_a]), torch.cat([target, target])])  # (2 RNNs, 2 steps, 3)
    logits = torch.stack([torch.cat([p.log(), logits_b]), torch.cat([q_logits, q_logits])])
    assert total_variation(targets, logits).item() == pytest.approx(0.5, abs=1e-6)


def test_zoo_targets():
    logits = torch.randn(2, 50, 10)
    torch.testing.assert_close(targets_from_logits(logits), logits.softmax(-1))
    logprobs = torch.randn(2, 41, 6).log_softmax(-1).half()
    t = targets_from_logprobs(logprobs)
    assert t.dtype == torch.float32
    torch.testing.assert_close(t.sum(-1), torch.ones(2, 41))
    torch.testing.assert_close(t, logprobs.float().exp(), atol=2e-3, rtol=0)
    assert inputs_from_sequences(torch.zeros(5, 42, dtype=torch.long)).shape == (5, 41)


def test_emulation_model_and_constant_representation():
    torch.manual_seed(0)
    flat = torch.randn(4, FORMAL_LANGUAGES.num_params) * 0.1
    inputs = make_inputs("formal_languages", batch=4)
    enc = build_encoder("flat", FORMAL_LANGUAGES, width=8)
    em = Emulator("formal_languages", hidden=16)
    torch.testing.assert_close(EmulationModel(enc, em)(flat, inputs), em(enc(flat), inputs))
    const = ConstantRepresentation()
    reps = const(flat)
    assert reps.shape == (4, 16) and torch.equal(reps[0], reps[3])
    model = EmulationModel(const, em)
    model(flat, inputs).sum().backward()
    assert const.rep.grad.abs().sum() > 0


def test_tiny_emulator_learns_a_fixed_target():
    """Target: the next token is (token + 1) mod 6, smoothed; representation from a constant encoder."""
    torch.manual_seed(0)
    inputs = make_inputs("formal_languages", batch=16, steps=10)
    targets = 0.9 * F.one_hot((inputs + 1) % 6, 6).float() + 0.1 / 6
    model = EmulationModel(ConstantRepresentation(), Emulator("formal_languages", hidden=16))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    flat = torch.zeros(16, FORMAL_LANGUAGES.num_params)
    losses = []
    for _ in range(200):
        loss = total_variation(targets, model(flat, inputs))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0], (losses[0], losses[-1])
    assert losses[-1] < 0.2


# -- conditioning: bos (the paper's) and every_step (SPEC.md section 6) ------------------------------
def _manual_forward(em: Emulator, rep: torch.Tensor, inputs: torch.Tensor, steps_with_rep) -> torch.Tensor:
    """The emulator by hand from its own layers: the projected, normalised representation added to
    the input at the positions ``steps_with_rep``, then LSTM and head."""
    x = em.input_proj(F.one_hot(inputs, 6).float()) if inputs.dim() == 2 else em.input_proj(inputs)
    cond = em.rep_proj(rep / rep.norm(dim=-1, keepdim=True))
    mask = torch.zeros(x.shape[1], 1)
    mask[list(steps_with_rep)] = 1.0
    out, _ = em.lstm(x + mask * cond[:, None, :])
    return em.head(out)


@pytest.mark.parametrize("kind", ["formal_languages", "mnist"])
def test_bos_and_every_step_conditioning_against_a_computation_by_hand(kind):
    """Same weights, two conditionings: ``bos`` is the representation added at position 0 only,
    ``every_step`` at every position, each matching a computation by hand; the two differ."""
    torch.manual_seed(0)
    bos = Emulator(kind, hidden=16)
    every = Emulator(kind, hidden=16, conditioning="every_step")
    every.load_state_dict(bos.state_dict())  # the setting adds no parameters: checkpoints load either way
    assert (bos.conditioning, every.conditioning) == ("bos", "every_step")
    rep, inputs = torch.randn(3, 16), make_inputs(kind)
    with torch.no_grad():
        torch.testing.assert_close(bos(rep, inputs), _manual_forward(bos, rep, inputs, [0]))
        torch.testing.assert_close(every(rep, inputs), _manual_forward(every, rep, inputs, range(7)))
        assert (bos(rep, inputs) - every(rep, inputs))[:, 1:].abs().max() > 1e-4
        torch.testing.assert_close(bos(rep, inputs)[:, 0], every(rep, inputs)[:, 0])  # step 0 is the same input


@pytest.mark.parametrize("kind", ["formal_languages", "mnist"])
def test_with_every_step_each_later_input_carries_the_representation(kind):
    """What the LSTM reads: with ``every_step`` each position's input is the embedded step plus the
    projected representation, so the gradient of position t's input reaches the representation at
    every t > 0; with ``bos`` positions t > 0 do not depend on it at all."""
    torch.manual_seed(0)
    inputs = make_inputs(kind)
    for conditioning, later_depends in (("bos", False), ("every_step", True)):
        em = Emulator(kind, hidden=16, conditioning=conditioning)
        seen = []
        em.lstm.register_forward_hook(lambda mod, args, out: seen.append(args[0]))
        rep = torch.randn(3, 16, requires_grad=True)
        em(rep, inputs)
        lstm_in, plain = seen[0], em.embed_inputs(inputs)
        cond = em.rep_proj(F.normalize(rep, dim=-1))
        expected_later = plain[:, 1:] + cond[:, None] if later_depends else plain[:, 1:]
        torch.testing.assert_close(lstm_in[:, 0], plain[:, 0] + cond)
        torch.testing.assert_close(lstm_in[:, 1:], expected_later)
        for t in range(1, inputs.shape[1]):
            (g,) = torch.autograd.grad(lstm_in[:, t].sum(), rep, retain_graph=True, allow_unused=True)
            assert (g is not None and g.abs().max() > 0) == later_depends, (conditioning, t)


def test_an_unknown_conditioning_is_refused():
    with pytest.raises(ValueError, match="unknown conditioning 'everywhere'; expected one of bos, every_step"):
        Emulator("formal_languages", hidden=8, conditioning="everywhere")
