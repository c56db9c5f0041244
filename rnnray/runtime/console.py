"""What the commands' console shows: Tune's progress table, rnnray's own lines, real warnings and
errors; not Ray's routine chatter.

Ray prints a great deal that reports normal operation: info-level lines from Ray Data, Ray Train
and Tune on the driver, the same from its workers (forwarded to the driver's console), deprecation
notices raised inside Ray's own modules, and one error-level line from Ray's C++ core that is
harmless here (an actor whose constructor arguments live in the object store while it may be
restarted: Ray Data's pool actors and Ray Train's ``PreemptionWatcher`` are built that way). Read
by a researcher, these look like failures and bury the lines that matter.

:func:`quiet_console` wraps the driver's ``sys.stdout`` and ``sys.stderr`` with a line filter.
Everything Ray forwards from its workers and everything its Python loggers print passes through
those two streams, so one filter sees it all. A line is hidden only if it matches one of
:data:`NOISE`, each a known routine message; anything else, tracebacks and Ray's warnings
included, is printed as before. Hidden lines are not lost: they are written to a log file (the
sweep folder's ``console-hidden.log`` once the sweep has one; until then, and for commands with no
folder, the Ray session's ``logs/rnnray-console-hidden.log``), and the workers' own log files under
the Ray session keep everything anyway. ``--verbose`` turns the filter off.

What the filter cannot reach: lines Ray's C++ core writes straight to the driver's file
descriptor 2, bypassing Python (the same constructor-arguments line once per zoo build, from Ray
Data's actor pool on the driver). Intercepting those would mean replacing descriptor 2, which
would also swallow a crash's last words, so that one line stays.
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
import threading
from pathlib import Path
from typing import Iterator, TextIO

HIDDEN_LOG = "console-hidden.log"

# (pattern, where it comes from). Searched in a line with colour codes and Ray's "(Actor pid=N) "
# prefix removed.
NOISE: tuple[tuple[str, str], ...] = (
    (r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\s+INFO \S+\.py:\d+ -- ", "info-level lines of Ray's Python loggers on the driver"),
    (r"core_worker\.cc:\d+: Actor with class name: .* has constructor arguments in the object store and max_restarts > 0",
     "Ray's C++ core, for actors built with arguments in the object store (harmless here)"),
    (r"^Requesting resources: \{", "Ray Train controller"),
    (r"^Attempting to start training worker group", "Ray Train controller"),
    (r"^Started training worker group of size", "Ray Train controller"),
    (r"^- \(ip=\S+, pid=\d+\) world_rank=\d+", "Ray Train controller (the worker list)"),
    (r"^Setting up process group for: ", "Ray Train worker"),
    (r"^Detected that the Ray Train controller actor \(\w+\) is dead\. Cleaning up placement group = ",
     "Ray Train's placement-group cleaner, once per finished run (the run's own outcome is reported elsewhere)"),
    (r"^Checkpoint successfully created at: ", "Ray Train worker"),
    (r"^Reporting training result \d+: ", "Ray Train worker"),
    (r"^Starting execution of Dataset ", "Ray Data executor"),
    (r"^Execution plan of Dataset ", "Ray Data executor"),
    (r"Progress bars disabled\. To enable, set ", "Ray Data, once bars are off (rnnray prints its own zoo progress)"),
    (r"Dataset \S+ execution finished in [\d.]+ seconds", "Ray Data executor"),
    (r"^Estimated parquet (encoding ratio|reader batch size)", "Ray Data Parquet reader"),
    (r"site-packages/ray/\S+\.py:\d+: RayDeprecationWarning: ", "a deprecation inside Ray's own modules"),
    (r"^\s+self\.exclude_resources = exclude_resources$", "the source line Python prints under that deprecation"),
    (r"^To visualize your results with TensorBoard, run: ", "Tune's hint, which names the driver's staging copy (rnnray prints the sweep folder's)"),
)
_NOISE = [re.compile(p) for p, _ in NOISE]
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_RAY_PREFIX = re.compile(r"^\((?:[^()]|\([^()]*\))*\bpid=\d+(?:, ip=[\d.]+)?\)\s?")


def is_noise(line: str) -> bool:
    """Whether ``line`` (one console line, as Ray prints it) is one of the known routine messages."""
    plain = _ANSI.sub("", line).rstrip("\n")
    plain = _RAY_PREFIX.sub("", plain, count=1)
    return any(p.search(plain) for p in _NOISE)


class _HiddenLog:
    """Where hidden lines go: held in memory until a file is named, then appended to it."""

    LIMIT = 20_000  # lines kept in memory before a file is named

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[str] = []
        self._file: TextIO | None = None

    def write(self, line: str) -> None:
        with self._lock:
            if self._file is not None:
                self._file.write(line if line.endswith("\n") else line + "\n")
                self._file.flush()
            elif len(self._pending) < self.LIMIT:
                self._pending.append(line)

    def attach(self, path: Path) -> None:
        with self._lock:
            path.parent.mkdir(parents=True, exist_ok=True)
            old = self._file
            self._file = open(path, "a", encoding="utf-8")
            for line in self._pending:
                self._file.write(line if line.endswith("\n") else line + "\n")
            self._pending.clear()
            self._file.flush()
            if old is not None:
                old.close()
        self.path = path

    def close(self) -> None:
        if self._file is None and self._pending:
            fallback = _ray_session_log()
            if fallback is not None:
                self.attach(fallback)
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def _ray_session_log() -> Path | None:
    """``logs/rnnray-console-hidden.log`` of the Ray session this process is connected to, if any."""
    try:
        import ray

        if not ray.is_initialized():
            return None
        node = ray._private.worker._global_node  # the session folder has no public accessor
        return Path(node.get_logs_dir_path()) / "rnnray-console-hidden.log"
    except Exception:
        return None


class FilteredStream(io.TextIOBase):
    """A text stream that passes complete lines on to ``target`` unless :func:`is_noise` says
    otherwise (then to ``hidden``). A partial line is held until its newline or a flush."""

    def __init__(self, target: TextIO, hidden: _HiddenLog):
        self.target, self.hidden = target, hidden
        self._buf = ""
        self._lock = threading.RLock()

    def write(self, s: str) -> int:
        with self._lock:
            self._buf += s
            *lines, self._buf = self._buf.split("\n")
            for line in lines:
                self._emit(line + "\n")
        return len(s)

    def _emit(self, text: str) -> None:
        if is_noise(text):
            self.hidden.write(text)
        else:
            self.target.write(text)

    def flush(self) -> None:
        with self._lock:
            if self._buf:
                self._emit(self._buf)
                self._buf = ""
            self.target.flush()

    def isatty(self) -> bool:
        return self.target.isatty()

    def fileno(self) -> int:
        return self.target.fileno()

    @property
    def encoding(self):  # type: ignore[override]
        return getattr(self.target, "encoding", "utf-8")

    def writable(self) -> bool:
        return True


_active: _HiddenLog | None = None


def active() -> bool:
    """Whether a quiet console is in force in this process (``--verbose`` not given)."""
    return _active is not None


def hide_into(path: Path) -> None:
    """From now on, and for the lines hidden so far, write hidden lines to ``path`` (a sweep
    folder's ``console-hidden.log``). Nothing happens when the console is not quiet."""
    if _active is not None:
        _active.attach(Path(path))


@contextlib.contextmanager
def quiet_console(enabled: bool = True) -> Iterator[None]:
    """Filter the driver's console for the duration (see the module docstring); ``enabled=False``
    (``--verbose``) leaves it untouched."""
    global _active
    if not enabled or _active is not None:
        yield
        return
    hidden = _HiddenLog()
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = FilteredStream(out, hidden), FilteredStream(err, hidden)
    _active = hidden
    _quiet_optuna()
    try:
        yield
    finally:
        for s in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                s.flush()
        sys.stdout, sys.stderr = out, err
        _active = None
        hidden.close()


def _quiet_optuna() -> None:
    """Optuna's info lines ("A new study created ...") say what the study journal records anyway."""
    with contextlib.suppress(ImportError):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
