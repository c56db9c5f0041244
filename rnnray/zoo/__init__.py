"""Model zoos: many small LSTMs trained on formal languages or sequential MNIST, stored as Parquet.

``build(cfg)`` trains a zoo with Ray Data; ``load(path)`` gives it back as a Ray Dataset and
``load_table(path)`` as an Arrow table; ``python -m rnnray.zoo build|info`` are the commands.
"""

from .storage import ZooError, load_table, read_manifest, verify


def load(path, checksums: bool = True):
    """The zoo as a Ray Dataset (shards verified against the manifest first)."""
    import ray

    from .storage import shard_paths

    _, files = shard_paths(path, checksums)
    return ray.data.read_parquet(files)


def build(cfg, progress: bool = True) -> dict:
    from .builder import build as _build

    return _build(cfg, progress=progress)


__all__ = ["ZooError", "build", "load", "load_table", "read_manifest", "verify"]
