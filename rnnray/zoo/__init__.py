"""Model zoos: many small LSTMs trained on formal languages or sequential MNIST, stored as Parquet.

``build(cfg)`` trains a zoo with Ray Data (or in this process, without Ray); ``load(path)`` gives it back as a Ray Dataset and
``load_table(path)`` as an Arrow table; ``python -m rnnray.zoo build|info`` are the commands, and
``import-npy`` / ``export-npy`` (:mod:`.authors`) convert the authors' NumPy release to a zoo and back.
"""

from .storage import ZooError, load_table, read_manifest, verify


def load(path, checksums: bool = True, **read_args):
    """The zoo as a Ray Dataset (shards verified against the manifest first); ``read_args`` go to
    ``ray.data.read_parquet`` (e.g. ``num_cpus=0``)."""
    from .storage import shard_paths

    _, files = shard_paths(path, checksums)
    return read_shards(files, **read_args)


def read_shards(files: list[str], **read_args):
    """Shards (paths a manifest listed) as one Ray Dataset, without reading the manifest again."""
    import ray

    # Ray 2.60's DataSourceV2 Parquet path adds a ListFiles step that always asks for 1 CPU and
    # ignores the read's resource arguments; the V1 reader honours them (training reads with num_cpus=0).
    # The reader samples a few files first, behind a progress bar of its own: a second's work
    # whose bar would bury Tune's table, so bars are off while the read is set up
    ctx = ray.data.DataContext.get_current()
    before = ctx.use_datasource_v2, ctx.enable_progress_bars
    ctx.use_datasource_v2 = ctx.use_datasource_v2 and not read_args
    ctx.enable_progress_bars = False
    try:
        return ray.data.read_parquet(files, **read_args)
    finally:
        ctx.use_datasource_v2, ctx.enable_progress_bars = before


def build(cfg, progress: bool = True, in_process: str | None = None) -> dict:
    """Train the zoo (Ray Data actors; ``in_process``: a torch device, no Ray) and return its manifest."""
    from .builder import build as _build

    return _build(cfg, progress=progress, in_process=in_process)


__all__ = ["ZooError", "build", "load", "load_table", "read_manifest", "read_shards", "verify"]
