"""What the machine is and what its matrix multiply reaches: the reference every benchmark reports against."""

from __future__ import annotations

import os
import platform
import time

import torch

from ..errors import UsageError


def yield_cpu(nice: int) -> int:
    """Lower this process's CPU priority to ``nice`` (every thread it has: on Linux a nice value is
    per thread, and torch's pool threads may exist already); returns the value now in force.

    A training worker yields so that, where slots outnumber cores, the starts of other trials (a
    new process importing torch, Tune's loop on the driver) are not queued behind the steps of
    running ones. Only raises the value (a process may not lower its own).
    """
    if nice <= 0:
        return os.getpriority(os.PRIO_PROCESS, 0)
    tasks = "/proc/self/task"
    tids = [int(t) for t in os.listdir(tasks)] if os.path.isdir(tasks) else [0]
    for tid in tids:
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) < nice:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
        except (ProcessLookupError, PermissionError):  # a thread that ended meanwhile
            pass
    return os.getpriority(os.PRIO_PROCESS, 0)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()} ({os.cpu_count()} logical cores)"


def assigned_device(gpu_ids, cuda_visible: str | None = None, cuda_available: bool | None = None) -> torch.device:
    """The device a Ray actor or worker computes on, from the GPUs Ray assigned it: CUDA only when
    it was given one *and* this process can see CUDA (a logical GPU on a CPU-only node trains on the
    CPU). The index is the assigned GPU's place in ``CUDA_VISIBLE_DEVICES``, which Ray sets (Ray
    Train lists every GPU of the node there, a Ray Data actor only its own)."""
    if not gpu_ids:
        return torch.device("cpu")
    if not (torch.cuda.is_available() if cuda_available is None else cuda_available):
        return torch.device("cpu")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "") if cuda_visible is None else cuda_visible
    listed = [v.strip() for v in visible.split(",") if v.strip()]
    first = str(gpu_ids[0])
    return torch.device("cuda", listed.index(first) if first in listed else 0)


def ray_assigned_device() -> tuple[list[str], torch.device]:
    """``(GPU ids Ray assigned this process, the device to compute on)``; call inside a Ray actor or task."""
    import ray

    gpu_ids = [str(g) for g in ray.get_gpu_ids()]
    return gpu_ids, assigned_device(gpu_ids)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(device: torch.device, n: int | None = None, reps: int = 5) -> float:
    """Best-of-``reps`` float32 rate of an n x n x n matrix multiply (the machine's BLAS ceiling)."""
    n = n or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    a @ b
    sync(device)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def check_device(name: str | None, flag: str = "--device") -> None:
    """A device this machine has and rnnray computes on (cpu; cuda, cuda:N with N below its device
    count; mps where available), or UsageError naming ``flag``. None (the command's default) passes."""
    if name is None:
        return
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise UsageError(f"{flag} {name!r}: not a torch device (cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"{flag} {name!r}: no CUDA device on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"{flag} {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s), from cuda:0")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise UsageError(f"{flag} {name!r}: no MPS device on this machine")
    elif dev.type != "cpu":
        raise UsageError(f"{flag} {name!r}: rnnray computes on cpu, cuda or mps, not {dev.type}")
