"""rnnray: learning representations of recurrent-network weights, distributed on Ray.

``rnnray.load_best("dws")`` returns the best trained encoder of a kind from the latest sweep.
"""

__version__ = "0.1.0"


def load_best(name: str, results=None, device=None):
    """The best trained encoder ``name`` of the latest sweep (or of ``results``: a results directory,
    a sweep folder or a sweep name), with ``.embed(flat_params) -> (B, 16)``. See rnnray.results.loading."""
    from .results.loading import load_best as _load_best

    return _load_best(name, results=results, device=device)


__all__ = ["load_best", "__version__"]
