"""rnnray.rnn and the lockstep trainer: equal to torch.nn.LSTM / autograd / one-RNN-at-a-time training.

Every equivalence test runs on both implementations of ``rnn.run``: the compiled C kernels (CPU,
float32; skipped where no C compiler is available) and the PyTorch-ops path (``RNNRAY_COMPILE=0``),
which is also what CUDA and float64 use.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rnnray import rnn
from rnnray.config import parse_zoo
from rnnray.weights import FORMAL_LANGUAGES, MNIST, Layout
from rnnray.zoo.check import RECIPES, TOLERANCES, max_weight_difference
from rnnray.zoo.trainer import train_chunk

from conftest import torch_threads

LAYOUTS = {"formal_languages": FORMAL_LANGUAGES, "mnist": MNIST}


@pytest.fixture(params=["compiled", "eager"])
def path(request, monkeypatch):
    if request.param == "compiled":
        monkeypatch.setenv("RNNRAY_COMPILE", "1")
        if not rnn.kernels_available():
            pytest.skip("compiled kernels unavailable here (no C compiler?)")
    else:
        monkeypatch.setenv("RNNRAY_COMPILE", "0")
    return request.param


@pytest.fixture(params=list(LAYOUTS), ids=list(LAYOUTS))
def layout(request):
    return LAYOUTS[request.param]


# one intra-op thread: required by the bitwise test, and it keeps this module's timings steady on a
# shared machine; test_two_threads covers the parallel code
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def random_flat(layout: Layout, k: int, seed: int, scale: float = 1.5, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    bound = scale / layout.hidden**0.5  # larger than PyTorch's init: saturating gates get exercised too
    return ((torch.rand(k, layout.num_params, generator=g, dtype=torch.float64) * 2 - 1) * bound).to(dtype)


def modules_reference(layout: Layout, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    outs = []
    for k in range(flat.shape[0]):
        lstm, lin = layout.to_modules(flat[k])
        with torch.no_grad():
            outs.append(lin(lstm(x[k].float())[0]))
    return torch.stack(outs)


# -- 1. forward equals torch.nn.LSTM + Linear ----------------------------------------------------
@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
def test_run_matches_torch_modules(path, layout, grad):
    k, b, t = 3, 5, 9
    flat = random_flat(layout, k, seed=1)
    x = torch.randn(k, b, t, layout.input_size, generator=torch.Generator().manual_seed(2))
    ref = modules_reference(layout, flat, x)
    ws = rnn.Workspace()
    for _ in range(2):  # a reused workspace gives the same answer
        if grad:
            out = rnn.run(layout, layout.split(flat.clone().requires_grad_()), x, ws)
        else:
            out = rnn.run(layout, layout.split(flat), x, ws)
        assert out.shape == (k, b, t, layout.output_size)
        torch.testing.assert_close(out.detach(), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shape", [(3, 8, 2), (2, 32, 3)], ids=["h8_3layers", "h32_3layers"])
def test_run_other_layouts(path, shape):
    """Hidden sizes the kernels do not take (8: PyTorch ops) and deeper stacks, odd batch."""
    hidden, inp, layers = shape[1], 5, shape[2]
    layout = Layout(input_size=inp, output_size=3, hidden=hidden, num_layers=layers)
    flat = random_flat(layout, 2, seed=3)
    x = torch.randn(2, 7, 6, inp, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(rnn.run(layout, layout.split(flat), x), modules_reference(layout, flat, x), atol=1e-5, rtol=1e-5)


# -- 2. gradients equal autograd's ---------------------------------------------------------------
def _grads(fn, layout, flat, x, weight):
    flat = flat.clone().requires_grad_(True)
    x = x.clone().requires_grad_(True)
    out = fn(layout.split(flat), x)
    return out.detach(), torch.autograd.grad((out * weight).sum(), [flat, x])


def test_gradients_match_autograd_float64(layout):
    """float64 (the PyTorch-ops path): w.r.t. parameters and inputs, with a Workspace reused."""
    k, b, t = 3, 4, 7
    g = torch.Generator().manual_seed(5)
    x = torch.randn(k, b, t, layout.input_size, generator=g, dtype=torch.float64)
    weight = torch.randn(k, b, t, layout.output_size, generator=g, dtype=torch.float64)
    flat = random_flat(layout, k, 6, dtype=torch.float64)
    ref_out, ref = _grads(lambda p, xx: rnn.run_autograd(layout, p, xx), layout, flat, x, weight)
    ws = rnn.Workspace()
    for _ in range(2):
        out, got = _grads(lambda p, xx: rnn.run(layout, p, xx, ws), layout, flat, x, weight)
        torch.testing.assert_close(out, ref_out, atol=1e-12, rtol=1e-12)
        for a, r in zip(got, ref):
            torch.testing.assert_close(a, r, atol=1e-12, rtol=1e-10)


def test_gradients_match_autograd_float32(path, layout):
    """float32 on both paths against float64 autograd; parameters as views of one flat vector."""
    k, b, t = 3, 6, 11
    g = torch.Generator().manual_seed(7)
    x = torch.randn(k, b, t, layout.input_size, generator=g)
    weight = torch.randn(k, b, t, layout.output_size, generator=g)
    flat = random_flat(layout, k, 8)
    _, ref = _grads(lambda p, xx: rnn.run_autograd(layout, p, xx), layout, flat.double(), x.double(), weight.double())
    ws = rnn.Workspace()
    for _ in range(2):
        _, got = _grads(lambda p, xx: rnn.run(layout, p, xx, ws), layout, flat, x, weight)
        for a, r in zip(got, ref):
            torch.testing.assert_close(a.double(), r, atol=2e-5 * r.abs().max().item(), rtol=1e-4)


def test_gradients_separate_parameters_and_partial_needs(path):
    """Parameters that are not views of one (K, P) tensor; input-only and weight-only gradients."""
    layout = FORMAL_LANGUAGES
    k, b, t = 2, 3, 5
    g = torch.Generator().manual_seed(9)
    params = {n: p.clone().requires_grad_(True) for n, p in layout.split(random_flat(layout, k, 10)).items()}
    x = torch.randn(k, b, t, layout.input_size, generator=g)
    weight = torch.randn(k, b, t, layout.output_size, generator=g)
    names = list(params)
    ref = torch.autograd.grad((rnn.run_autograd(layout, params, x) * weight).sum(), [params[n] for n in names])
    got = torch.autograd.grad((rnn.run(layout, params, x) * weight).sum(), [params[n] for n in names])
    for n, a, r in zip(names, got, ref):
        torch.testing.assert_close(a, r, atol=2e-5 * r.abs().max().item() + 1e-7, rtol=1e-4, msg=n)
    # only the input needs a gradient (the probing encoders' case), from an expanded input
    frozen = {n: p.detach() for n, p in params.items()}
    probe = torch.randn(b, t, layout.input_size, generator=g, requires_grad=True)
    xe = probe.expand(k, -1, -1, -1)
    (ref,) = torch.autograd.grad((rnn.run_autograd(layout, frozen, xe) * weight).sum(), probe)
    (got,) = torch.autograd.grad((rnn.run(layout, frozen, xe) * weight).sum(), probe)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)


def test_workspace_reused_before_backward_raises(path):
    layout = FORMAL_LANGUAGES
    flat = random_flat(layout, 2, 11).requires_grad_(True)
    x = torch.randn(2, 3, 4, layout.input_size)
    ws = rnn.Workspace()
    first = rnn.run(layout, layout.split(flat), x, ws)
    rnn.run(layout, layout.split(flat), x, ws)
    with pytest.raises(RuntimeError, match="Workspace"):
        first.sum().backward()


# -- 3. the batched trainer equals training each RNN alone with torch.nn + torch.optim.AdamW -------
# (rnnray.zoo.check: the same comparison the GPU check runs on CUDA; its docstring gives the tolerances)
@pytest.mark.parametrize("kind", list(RECIPES))
def test_chunk_trainer_equals_one_rnn_at_a_time(path, kind):
    _assert_equal_to_modules(kind, torch.float32)


def test_chunk_trainer_equals_one_rnn_at_a_time_float64():
    _assert_equal_to_modules("formal_languages", torch.float64)


def _assert_equal_to_modules(kind: str, dtype: torch.dtype) -> None:
    steps, atol = TOLERANCES[dtype]
    worst = max_weight_difference(kind, steps[kind], dtype)
    for name, err in worst.items():
        assert err <= atol, f"{kind}: {name} differs by {err:.2e} (tolerance {atol:.0e})"


# -- 4. a run's rows do not depend on the chunk it was trained in (one intra-op thread) ------------
@pytest.mark.parametrize("kind", ["formal_languages", "mnist"])
def test_chunk_independence_bitwise(path, kind):
    d = {"kind": kind, "runs": 4, "steps": 12, "snapshot_steps": [0, 5], "stored_sequences": 4}
    d |= {"source": "bundled", "eval_digits": 20} if kind == "mnist" else {"accuracy_samples": 20}
    cfg = parse_zoo(d)
    together = train_chunk(cfg, [0, 1, 2, 3])
    alone = train_chunk(cfg, [2])
    rows = together["run_id"] == 2
    for key, value in alone.items():
        if key.startswith("_"):
            continue
        assert np.array_equal(together[key][rows], value), key


def test_two_threads(path, layout):
    """The kernels share networks out among threads: same results as with one thread."""
    k, b, t = 5, 6, 8
    flat = random_flat(layout, k, seed=12)
    x = torch.randn(k, b, t, layout.input_size, generator=torch.Generator().manual_seed(13))
    weight = torch.randn(k, b, t, layout.output_size, generator=torch.Generator().manual_seed(14))
    one = _grads(lambda p, xx: rnn.run(layout, p, xx), layout, flat, x, weight)
    with torch_threads(2):
        two = _grads(lambda p, xx: rnn.run(layout, p, xx, rnn.Workspace()), layout, flat, x, weight)
        with torch.no_grad():
            two_eval = rnn.run(layout, layout.split(flat), x)
    torch.testing.assert_close(two[0], one[0], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(two_eval, one[0], atol=1e-6, rtol=1e-6)
    for a, r in zip(two[1], one[1]):
        torch.testing.assert_close(a, r, atol=1e-6, rtol=1e-5)


# -- the compiled kernels: built on first use into the cache, and a clean fallback without them ----
def test_kernels_build_into_a_fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNRAY_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setenv("RNNRAY_COMPILE", "1")
    monkeypatch.setattr(rnn, "_lib_state", {})
    if not rnn.kernels_available():
        pytest.skip("no working C compiler here")
    assert list(tmp_path.glob("lstm_kernels_*.so"))


def test_falls_back_to_pytorch_ops_without_a_compiler(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNRAY_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setenv("RNNRAY_COMPILE", "1")
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setattr(rnn, "_lib_state", {})
    with pytest.warns(RuntimeWarning, match="unavailable"):
        assert not rnn.kernels_available()
    layout = FORMAL_LANGUAGES
    flat = random_flat(layout, 2, seed=15)
    x = torch.randn(2, 3, 5, layout.input_size)
    torch.testing.assert_close(rnn.run(layout, layout.split(flat), x), modules_reference(layout, flat, x), atol=1e-5, rtol=1e-5)


# -- the C source as a file of the package: warning-free, the portable branch checked, keyed by its bytes --
def _compiler_or_skip() -> str:
    from rnnray.rnn.kernels import c_compiler

    try:
        return c_compiler()
    except RuntimeError:
        pytest.skip("no C compiler here")


def test_kernel_source_ships_with_the_package_and_builds_without_warnings(tmp_path):
    """This machine's build (``-march=native``: the AVX-512 branch where the CPU has it) is warning-free."""
    from rnnray.rnn.kernels import SOURCE, compile_library, source

    cc = _compiler_or_skip()
    assert (Path(rnn.__file__).parent / SOURCE).read_text() == source() and "lstm_forward" in source()
    compile_library(cc, tmp_path / "strict.so", ("-Wall", "-Wextra", "-Werror"))
    assert (tmp_path / "strict.so").stat().st_size > 0
    with pytest.raises(RuntimeError, match="C compiler failed"):  # a warning is an error here: the check bites
        compile_library(cc, tmp_path / "broken.so", ("-Wall", "-Werror"), text="static int unused_fn(void) { return 0; }\n")


def test_portable_branch_without_avx512_agrees_with_pytorch_ops(tmp_path):
    """Built warning-free with ``-mno-avx512f`` (what a CPU without AVX-512 gets), the kernels pass
    the library's check against the PyTorch-ops path, and a forward and backward agree with it too."""
    _compiler_or_skip()
    from rnnray.rnn.kernels import load_library

    lib = load_library(("-mno-avx512f", "-Wall", "-Wextra", "-Werror"), cache=tmp_path)
    rnn.self_test(lib)
    layout = FORMAL_LANGUAGES
    flat = random_flat(layout, 3, seed=21)
    x = torch.randn(3, 4, 7, layout.input_size)
    params = [layout.split(flat)[n] for n in layout.names]
    out, state = rnn._forward(lib, x, params, layout.num_layers, None, True)
    ref, ref_state = rnn._forward(None, x, params, layout.num_layers, None, True)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    dout = torch.randn_like(out)

    def flat_grads(result):
        dx, grads, dlin = result
        return [dx, *[g for gl in grads for g in gl], *dlin]

    got = flat_grads(rnn._backward(lib, state, dout, params[-2], True, True, None, None))
    want = flat_grads(rnn._backward(None, ref_state, dout, params[-2], True, True, None, None))
    assert len(got) == len(want) == 3 + 4 * layout.num_layers
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-4)


def test_the_build_cache_is_keyed_by_the_source_bytes_and_flags(tmp_path, monkeypatch):
    from rnnray.rnn import kernels

    _compiler_or_skip()
    plain = kernels.library_path(cache=tmp_path)
    assert kernels.library_path(cache=tmp_path) == plain  # the same inputs: the same build
    assert kernels.library_path(("-mno-avx512f",), cache=tmp_path) != plain  # other flags: another build
    edited = kernels.source() + "\n/* edited */\n"
    monkeypatch.setattr(kernels, "source", lambda: edited)
    assert kernels.library_path(cache=tmp_path) != plain  # an edited source is never served a stale build


def test_kernels_used_says_which_path_runs(monkeypatch):
    layout = FORMAL_LANGUAGES
    assert not rnn.kernels_used(layout, dtype=torch.float64)  # float64: always the PyTorch ops
    assert not rnn.kernels_used(Layout(input_size=6, output_size=6, hidden=24))  # not a multiple of 16
    assert rnn.kernels_used(layout) == rnn.kernels_available()
    monkeypatch.setenv("RNNRAY_COMPILE", "0")
    assert not rnn.kernels_used(layout)
