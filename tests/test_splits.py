"""Splits by task (SPEC.md section 4): disjoint, in proportion, OOD at the end of the criterion, fixed."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from rnnray.emulation.splits import criterion, make_splits, ood_halves, split_sizes, split_tasks, zoo_splits

ALL_TASKS = [(0, a, b, c) for a, b, c in itertools.product(range(-3, 3), repeat=3)]  # the 216 of zoo A


def test_sizes_round_half_up_and_never_lose_a_task():
    assert split_sizes(216) == {"train": 152, "val": 32, "ood": 32}  # 0.15 * 216 = 32.4
    assert split_sizes(100) == {"train": 70, "val": 15, "ood": 15}
    assert split_sizes(10) == {"train": 6, "val": 2, "ood": 2}  # 1.5 rounds up
    assert split_sizes(3) == {"train": 1, "val": 1, "ood": 1}  # tiny zoos still validate
    for n in range(3, 300):
        assert sum(split_sizes(n).values()) == n
    with pytest.raises(ValueError, match="at least 3"):
        split_sizes(2)


def test_formal_language_tasks_proportions_and_ood_is_most_balanced():
    out = split_tasks(ALL_TASKS, "formal_languages", seed=0)
    assert set(out) == set(ALL_TASKS)
    counts = {s: sum(v == s for v in out.values()) for s in ("train", "val", "ood")}
    assert counts == {"train": 152, "val": 32, "ood": 32}
    ood = [criterion("formal_languages", t) for t, s in out.items() if s == "ood"]
    rest = [criterion("formal_languages", t) for t, s in out.items() if s != "ood"]
    assert min(ood) >= max(rest)
    assert out[(0, 0, 0, 0)] == "ood"  # equal counts: maximal entropy, log 4
    assert criterion("formal_languages", (0, 0, 0, 0)) == pytest.approx(math.log(4))
    assert out[(0, -3, -3, -3)] != "ood" and out[(0, 2, -3, 2)] != "ood"
    # permuted offsets are equally balanced: exactly equal criteria, not just close
    assert criterion("formal_languages", (0, 1, 0, 0)) == criterion("formal_languages", (0, 0, 0, 1))


def test_mnist_ood_is_the_largest_angles():
    angles = np.random.default_rng(1).uniform(0, 360, size=40)
    out = split_tasks(angles, "mnist", seed=3)
    ood = sorted(a for a, s in out.items() if s == "ood")
    assert len(ood) == 6  # 0.15 * 40
    assert ood == sorted(angles)[-6:]


def test_runs_sharing_a_task_share_the_split():
    rng = np.random.default_rng(0)
    run_tasks = {r: ALL_TASKS[i] for r, i in enumerate(rng.integers(0, len(ALL_TASKS), size=500))}
    sp = make_splits(run_tasks, "formal_languages", seed=0)
    by_task: dict = {}
    for r, s in sp.run_split.items():
        by_task.setdefault(run_tasks[r], set()).add(s)
    assert all(len(s) == 1 for s in by_task.values())  # no task in two splits
    runs = [set(sp.runs(s)) for s in ("train", "val", "ood")]
    assert sum(map(len, runs)) == 500 and not (runs[0] & runs[1] or runs[0] & runs[2] or runs[1] & runs[2])
    assert set(sp.runs("ood_train")) | set(sp.runs("ood_test")) == runs[2]
    assert not set(sp.runs("ood_train")) & set(sp.runs("ood_test"))


def test_deterministic_and_seeded():
    shuffled = list(ALL_TASKS)
    np.random.default_rng(5).shuffle(shuffled)
    a = split_tasks(ALL_TASKS, "formal_languages", seed=0)
    assert split_tasks(shuffled + ALL_TASKS[:10], "formal_languages", seed=0) == a  # order and duplicates don't matter
    b = split_tasks(ALL_TASKS, "formal_languages", seed=1)
    assert {t for t, s in a.items() if s == "ood"} == {t for t, s in b.items() if s == "ood"}  # OOD: no seed involved
    assert {t for t, s in a.items() if s == "val"} != {t for t, s in b.items() if s == "val"}


def test_ood_halves():
    ood = [t for t, s in split_tasks(ALL_TASKS, "formal_languages").items() if s == "ood"]
    h = ood_halves(ood, "formal_languages", seed=0)
    assert sorted(h.values()).count("ood_train") == 16 and sorted(h.values()).count("ood_test") == 16
    assert h == ood_halves(list(reversed(ood)), "formal_languages", seed=0)
    odd = ood_halves(ood[:5], "formal_languages")
    assert list(odd.values()).count("ood_train") == 2 and list(odd.values()).count("ood_test") == 3


@pytest.mark.parametrize("fixture", ["tiny_fl_zoo", "tiny_mnist_zoo"])
def test_zoo_splits_from_disk(fixture, request):
    import pyarrow.compute as pc

    from rnnray.zoo import load_table

    cfg = request.getfixturevalue(fixture)
    sp = zoo_splits(cfg.path)
    assert sorted(sp.run_split) == list(range(cfg.runs))
    assert all(sp.runs(s) for s in ("train", "val", "ood"))
    col = "task" if cfg.kind == "formal_languages" else "angle"
    table = load_table(cfg.path, columns=["run_id", col])
    for r in sp.runs("ood"):  # the recorded task of every OOD run is an OOD task
        rows = table.filter(pc.equal(table["run_id"], r))
        value = rows[col].combine_chunks()
        value = value.to_numpy_ndarray()[0] if col == "task" else value.to_numpy()[0]
        assert sp.task_split[sp.run_task[r]] == "ood"
        assert criterion(cfg.kind, value) >= max(criterion(cfg.kind, t) for t in sp.tasks("train") + sp.tasks("val"))
    assert zoo_splits(cfg.path).run_split == sp.run_split


def test_one_zoo_kind_table_agrees_with_the_configs_and_the_stored_rows(tiny_fl_zoo, tiny_mnist_zoo):
    """The kinds table is what the zoo configs accept, and its row size is what a stored row holds."""
    import typing

    from rnnray.config import FormalLanguagesZoo, MnistZoo
    from rnnray.kinds import KIND_NAMES, KINDS, kind_of_layout
    from rnnray.zoo import load_table, read_manifest
    from rnnray.zoo.storage import row_bytes

    assert KIND_NAMES == tuple(typing.get_args(m.model_fields["kind"].annotation)[0] for m in (FormalLanguagesZoo, MnistZoo))
    for zoo in (tiny_fl_zoo, tiny_mnist_zoo):
        m = read_manifest(zoo.path)
        k = KINDS[m["kind"]]
        assert kind_of_layout(k.layout) == k.name and m["layout"]["num_params"] == k.layout.num_params
        cols = ["params", *k.sequence_columns]
        table = load_table(zoo.path, columns=cols + [k.task_column])
        stored = sum(table.column(c).combine_chunks().to_numpy_ndarray().nbytes for c in k.sequence_columns) // len(table)
        params = table.column("params").combine_chunks().to_numpy_ndarray()
        seqs = table.column(k.sequence_columns[0]).combine_chunks().to_numpy_ndarray()
        seq_len = seqs.shape[2] if k.token_inputs else 42
        assert row_bytes(k.name, params.shape[1], seqs.shape[1], seq_len) == 4 * params.shape[1] + stored


def test_the_authors_split_on_a_hand_computed_case():
    """Zoo B, angles 10, 20, ..., 100 (SPEC.md 8). Theirs: n_train = int(10 * 0.7) = 7, n_val =
    int(1.5) = 1, OOD the last 2 (90, 100); the first 8 permuted by the legacy generator seeded 1,
    [7 2 1 6 0 4 3 5]: train 80 30 20 70 10 50 40, validation 60; the OOD pair permuted seeded 2,
    [1 0]: 100 stays OOD test, 90 joins the downstream training set. Ours differs: 2 validation
    tasks (round half up), a PCG64 shuffle, and a seeded choice of the OOD halves."""
    angles = {r: float(10 * (r + 1)) for r in range(10)}
    theirs = make_splits(angles, "mnist", scheme="authors")
    by = lambda s: sorted(angles[r] for r in theirs.runs(s))  # noqa: E731
    assert by("train") == [10, 20, 30, 40, 50, 70, 80] and by("val") == [60] and by("ood") == [90, 100]
    assert by("ood_test") == [100] and by("ood_train") == [90]
    assert make_splits(angles, "mnist", seed=5, scheme="authors").task_split == theirs.task_split  # no seed
    ours = make_splits(angles, "mnist")
    assert ({s: len(ours.runs(s)) for s in ("train", "val", "ood")}) == {"train": 6, "val": 2, "ood": 2}
    with pytest.raises(ValueError, match="scheme"):
        make_splits(angles, "mnist", scheme="theirs")


def test_the_authors_split_of_zoo_a_follows_their_procedure_step_by_step():
    """All 216 tasks of zoo A, split by an independent transcription of SPEC.md 8 (numpy.unique,
    argsort of their entropy, int() sizes, the legacy generators), against ours of the scheme."""
    from rnnray.zoo.languages import ALL_TASKS

    tasks = np.asarray(ALL_TASKS, dtype=np.int64)
    rng = np.random.default_rng(0)
    run_tasks = {r: tasks[i] for r, i in enumerate(rng.permutation(np.repeat(np.arange(len(tasks)), 2)))}
    uniq = np.unique(tasks, axis=0)
    crit = []
    for t in uniq:
        p = (1 + t - t.min()) / (1 + t - t.min()).sum()
        crit.append(-(p * np.log(p + 1e-6)).sum())
    ranked = uniq[np.argsort(crit)]
    n = len(uniq)
    n_train, n_val = int(n * (1 - 0.15 - 0.15)), int(n * 0.15)
    np.random.seed(1)
    perm = np.random.permutation(n_train + n_val)
    expect = {tuple(ranked[i]): "train" for i in perm[:n_train]}
    expect.update({tuple(ranked[i]): "val" for i in perm[n_train:]})
    ood = ranked[n_train + n_val:]
    expect.update({tuple(t): "ood" for t in ood})
    np.random.seed(2)
    perm = np.random.permutation(len(ood))
    halves = {tuple(ood[i]): ("ood_test" if j < len(ood) // 2 else "ood_train") for j, i in enumerate(perm)}
    got = make_splits(run_tasks, "formal_languages", scheme="authors")
    assert (n_train, n_val, n - n_train - n_val) == (151, 32, 33)
    assert got.task_split == expect and got.task_half == halves
    assert sum(1 for s in got.run_split.values() if s == "ood") == 2 * 33
