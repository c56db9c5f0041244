"""The compiled LSTM kernels: ``lstm_kernels.c`` (shipped with the package) built with the system C
compiler on first use, cached on disk under a key of the source's bytes, the compiler, the CPU and
the flags, and called through ctypes: one call for the forward of all layers of all networks, one
for the backward. Whether they may run, and their check against the PyTorch ops, is in
:mod:`rnnray.rnn`."""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

import torch

from ..results.atomic import replacing
from .workspace import _buffer

MAX_LAYERS = 8  # MAX_LAYERS in the C source
SOURCE = "lstm_kernels.c"


def source() -> str:
    """The kernels' C source, as shipped in the package."""
    return resources.files(__package__).joinpath(SOURCE).read_text()


def _cache_dir() -> Path:
    root = os.environ.get("RNNRAY_KERNEL_CACHE")
    if root:
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rnnray" / "kernels"


def _cpu_fingerprint() -> str:
    """What -march=native depends on: a library built for one CPU is never loaded on another."""
    text = platform.machine() + platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features", "model name")):
                    text += line
                    if line.startswith(("flags", "Features")):
                        break
    except OSError:
        pass
    return text


def _openmp_flags() -> list[list[str]]:
    """-fopenmp only where PyTorch's own runtime is GNU OpenMP: the kernels then share its thread pool
    (the already-loaded libgomp.so.1 satisfies the library's dependency); otherwise single-threaded."""
    try:
        with open("/proc/self/maps") as f:
            if "libgomp" in f.read():
                return [["-fopenmp"], []]
    except OSError:
        pass
    return [[]]


def compile_library(cc: str, out: Path, extra_flags: tuple[str, ...] = (), text: str | None = None) -> None:
    """Build the shared library at ``out`` (atomically). ``-march=native`` first, then without it;
    with OpenMP where PyTorch's runtime is GNU OpenMP. ``extra_flags`` are added to every attempt
    (the tests build with ``-Wall -Werror`` and with ``-mno-avx512f``)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / SOURCE
        src.write_text(source() if text is None else text)
        last = None
        for omp in _openmp_flags():
            for arch in (["-march=native"], []):
                tmp_out = Path(tmp) / "lstm_kernels.so"
                cmd = [cc, "-O3", *arch, *omp, "-std=gnu11", "-fPIC", "-shared", *extra_flags, str(src), "-o", str(tmp_out)]
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
                if proc.returncode == 0:
                    with replacing(out) as staged:  # concurrent builders (Ray actors) never see half a file
                        shutil.copyfile(tmp_out, staged)
                    return
                last = proc.stderr.strip()[-500:]
        raise RuntimeError(f"C compiler failed: {last}")


def c_compiler() -> str:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        raise RuntimeError("no C compiler found (set CC)")
    return cc


def library_path(extra_flags: tuple[str, ...] = (), cache: Path | None = None, cc: str | None = None) -> Path:
    """Where the build for this source, compiler, CPU and flags lives in the cache.

    The key covers the source's bytes, the compiler and its version, the CPU, the platform and the
    flags, so an edited source, another compiler or another CPU never loads a stale build."""
    cc = cc or c_compiler()
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    key = hashlib.sha256("\0".join([source(), cc, version, _cpu_fingerprint(), sys.platform, str(_openmp_flags()),
                                     " ".join(extra_flags)]).encode()).hexdigest()[:20]
    return (cache or _cache_dir()) / f"lstm_kernels_{key}.so"


def load_library(extra_flags: tuple[str, ...] = (), cache: Path | None = None):
    """The kernels as a ctypes library, built into the cache if no build for this key is there."""
    cc = c_compiler()
    path = library_path(extra_flags, cache, cc)
    if not path.exists():
        try:
            compile_library(cc, path, extra_flags)
        except OSError:  # cache directory not writable: build in a private temporary one
            path = Path(tempfile.mkdtemp(prefix="rnnray_kernels_")) / path.name
            compile_library(cc, path, extra_flags)
    lib = ctypes.CDLL(str(path))
    for name in ("lstm_forward", "lstm_backward"):
        fn = getattr(lib, name)
        fn.argtypes = [ctypes.POINTER(_CNet)]
        fn.restype = None
    return lib


class _CLayer(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int64 if kind == "i" else ctypes.c_void_p) for name, kind in (
        ("I", "i"), ("np", "i"),
        ("hs", "p"), ("hs_sk", "i"), ("hs_tid", "i"),
        ("acts", "p"), ("acts_sk", "i"), ("acts_tid", "i"), ("acts_ss", "i"),
        ("cs", "p"), ("cs_sk", "i"),
        ("w_ih", "p"), ("w_hh", "p"), ("b_ih", "p"), ("b_hh", "p"),
        ("w_ih_sk", "i"), ("w_hh_sk", "i"), ("b_ih_sk", "i"), ("b_hh_sk", "i"),
        ("dw_ih", "p"), ("dw_hh", "p"), ("db_ih", "p"), ("db_hh", "p"),
        ("dw_ih_sk", "i"), ("dw_hh_sk", "i"), ("db_ih_sk", "i"), ("db_hh_sk", "i"),
    )]


class _CNet(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int64 if kind == "i" else ctypes.c_void_p) for name, kind in (
        ("K", "i"), ("B", "i"), ("T", "i"), ("H", "i"), ("I", "i"), ("O", "i"), ("Op", "i"), ("L", "i"),
        ("nmax", "i"), ("nthreads", "i"), ("need_x", "i"), ("need_w", "i"),
        ("x", "p"), ("x_sk", "i"), ("x_sb", "i"), ("x_st", "i"),
        ("wlin", "p"), ("wlin_sk", "i"), ("blin", "p"), ("blin_sk", "i"),
        ("out", "p"), ("out_sk", "i"), ("out_sb", "i"), ("out_st", "i"),
        ("dout", "p"), ("dout_sk", "i"), ("dout_sb", "i"), ("dout_st", "i"),
        ("dx", "p"), ("dx_sk", "i"), ("dx_sb", "i"), ("dx_st", "i"),
        ("dwl", "p"), ("dwl_sk", "i"), ("dbl", "p"), ("dbl_sk", "i"),
        ("scratch", "p"), ("scratch_tid", "i"),
    )] + [("layers", _CLayer * MAX_LAYERS)]


def _padded(n: int) -> int:
    return -(-n // 16) * 16


def _blocks(t: torch.Tensor) -> torch.Tensor:
    """t itself if each network's block is one contiguous run (what the kernels read), else a copy."""
    return t if t[0].is_contiguous() else t.contiguous()


def c_forward(lib, x, params, nl, ws, store, gen):
    k, b, t, i_sz = x.shape
    params = [_blocks(p.detach()) for p in params]
    lin_w, lin_b = params[-2], params[-1]
    hsz = params[1].shape[2]
    h4 = 4 * hsz
    o_sz = lin_w.shape[1]
    o_pad = _padded(o_sz)
    nmax = max(hsz + params[4 * l].shape[2] for l in range(nl))
    nt = torch.get_num_threads()
    if x.stride(3) != 1:
        x = x.contiguous()
    tag = ("c", "train" if store else "eval")
    net = _CNet(K=k, B=b, T=t, H=hsz, I=i_sz, O=o_sz, Op=o_pad, L=nl, nmax=nmax, nthreads=nt)
    net.x, net.x_sk, net.x_sb, net.x_st = x.data_ptr(), x.stride(0), x.stride(1), x.stride(2)
    keep = [x, *params]
    for l in range(nl):
        w_ih, w_hh, b_ih, b_hh = params[4 * l : 4 * l + 4]
        inp = w_ih.shape[2]
        if store:  # kept for the backward, one block per network
            hs = _buffer(ws, (tag, l, "hs"), (k, t + 1, b, hsz), x)
            acts = _buffer(ws, (tag, l, "acts"), (k, t, b, h4), x)
            cs = _buffer(ws, (tag, l, "cs"), (k, t, b, hsz), x)
            per_k, per_tid, step = 1, 0, b * h4
        else:  # one block per thread, and one time step of gates
            hs = _buffer(ws, (tag, l, "hs"), (nt, t + 1, b, hsz), x)
            acts = cs = _buffer(ws, (tag, l, "acts"), (nt, b, h4), x)
            per_k, per_tid, step = 0, 1, 0
        ly = net.layers[l]
        ly.I, ly.np = inp, _padded(hsz + inp)
        ly.hs, ly.hs_sk, ly.hs_tid = hs.data_ptr(), per_k * hs.stride(0), per_tid * hs.stride(0)
        ly.acts, ly.acts_sk, ly.acts_tid, ly.acts_ss = acts.data_ptr(), per_k * acts.stride(0), per_tid * acts.stride(0), step
        ly.cs, ly.cs_sk = cs.data_ptr(), per_k * cs.stride(0)
        ly.w_ih, ly.w_hh, ly.b_ih, ly.b_hh = w_ih.data_ptr(), w_hh.data_ptr(), b_ih.data_ptr(), b_hh.data_ptr()
        ly.w_ih_sk, ly.w_hh_sk, ly.b_ih_sk, ly.b_hh_sk = w_ih.stride(0), w_hh.stride(0), b_ih.stride(0), b_hh.stride(0)
        keep += [hs, acts, cs]
    # per thread: running cell state, Linear rows, [W_hh | W_ih]^T, bias, W_lin^T, b_lin
    fscratch = _buffer(ws, (tag, "fscratch"), (nt, b * (hsz + o_pad) + nmax * h4 + h4 + hsz * o_pad + o_pad), x)
    out = x.new_empty(k, b, t, o_sz)
    net.wlin, net.wlin_sk, net.blin, net.blin_sk = lin_w.data_ptr(), lin_w.stride(0), lin_b.data_ptr(), lin_b.stride(0)
    net.out, net.out_sk, net.out_sb, net.out_st = out.data_ptr(), out.stride(0), out.stride(1), out.stride(2)
    net.scratch, net.scratch_tid = fscratch.data_ptr(), fscratch.stride(0)
    keep.append(fscratch)
    lib.lstm_forward(ctypes.byref(net))
    if not store:
        return out
    return out, {"net": net, "keep": keep, "gen": gen, "x_shape": (k, b, t, i_sz)}


def c_backward(lib, state, dout, need_x, need_w, ws, grad_out):
    net = state["net"]
    k, b, t, i_sz = state["x_shape"]
    hsz, nl, o_sz = net.H, net.L, net.O
    h4 = 4 * hsz
    like = state["keep"][0]
    dout = dout.contiguous()
    nt = torch.get_num_threads()
    npmax = max(net.layers[l].np for l in range(nl))
    size = 2 * t * b * npmax + b * (h4 + 2 * hsz) + h4 + 2 * npmax * h4  # see net_bwd_k
    scratch = _buffer(ws, ("c", "scratch"), (nt, size), like)
    net.nthreads, net.need_x, net.need_w = nt, int(need_x), int(need_w)
    net.dout, net.dout_sk, net.dout_sb, net.dout_st = dout.data_ptr(), dout.stride(0), dout.stride(1), dout.stride(2)
    net.scratch, net.scratch_tid = scratch.data_ptr(), scratch.stride(0)
    dx = like.new_empty(k, b, t, i_sz) if need_x else None
    if need_x:
        net.dx, net.dx_sk, net.dx_sb, net.dx_st = dx.data_ptr(), dx.stride(0), dx.stride(1), dx.stride(2)
    grads, dlin = [], ()
    if need_w:
        for l in range(nl):
            inp = net.layers[l].I
            if grad_out is not None:
                gl = grad_out[l]
            else:
                gl = [like.new_empty(k, h4, inp), like.new_empty(k, h4, hsz), like.new_empty(k, h4), like.new_empty(k, h4)]
            ly = net.layers[l]
            ly.dw_ih, ly.dw_hh, ly.db_ih, ly.db_hh = (_row_block(g).data_ptr() for g in gl)
            ly.dw_ih_sk, ly.dw_hh_sk, ly.db_ih_sk, ly.db_hh_sk = (g.stride(0) for g in gl)
            grads.append(gl)
        dlin = tuple(grad_out[nl]) if grad_out is not None else (like.new_empty(k, o_sz, hsz), like.new_empty(k, o_sz))
        net.dwl, net.dwl_sk = _row_block(dlin[0]).data_ptr(), dlin[0].stride(0)
        net.dbl, net.dbl_sk = _row_block(dlin[1]).data_ptr(), dlin[1].stride(0)
    lib.lstm_backward(ctypes.byref(net))
    return dx, grads, dlin


def _row_block(g: torch.Tensor) -> torch.Tensor:
    """The kernels write each network's block of a gradient as one contiguous run: check that."""
    if not g[0].is_contiguous():
        raise ValueError("gradient buffer blocks must be contiguous")
    return g

