"""The results store: where every file of a sweep folder lies (:mod:`.folder`), the one atomic
write (:mod:`.atomic`), the typed reader of the sweep's own records (:mod:`.records`) and
``load_best`` (:mod:`.loading`, the only part that needs torch, imported on first use)."""

from .folder import DEFAULT_RESULTS, LATEST, ResultsError, SweepFolder, latest_pointer, resolve_sweep, write_latest


def __getattr__(name: str):
    if name in ("load_best", "LoadedEncoder"):
        from . import loading

        return getattr(loading, name)
    raise AttributeError(f"module 'rnnray.results' has no attribute {name!r}")


__all__ = ["DEFAULT_RESULTS", "LATEST", "ResultsError", "SweepFolder", "latest_pointer", "resolve_sweep", "write_latest",
           "load_best", "LoadedEncoder"]
