"""The shared dataset format: atomic writing, invariants, and the loaders' epoch semantics."""
import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, run_script
from helpers_data import example_ids, tiny_arrays, tiny_meta, write_tiny

from dataset import (IGNORE_LABEL_ID, DatasetError, TrainLoader, check_split, eval_batches,
                     load_split, total_train_steps, write_dataset)

GROUPS = [[1, 2], [3], [1, 1, 1], [2], [1], [4, 1], [1], [2, 2]]  # example counts per puzzle, per group


def test_written_dataset_has_the_official_layout_and_dtypes(tmp_path):
    out = tmp_path / "d"
    assert write_tiny(out, GROUPS, num_identifiers=3) == "written"
    assert json.loads((out / "identifiers.json").read_text()) == ["<blank>", "p1", "p2"]
    for split in ("train", "test"):
        meta = json.loads((out / split / "dataset.json").read_text())
        assert set(meta) == {"pad_id", "ignore_label_id", "blank_identifier_id", "vocab_size", "seq_len",
                             "num_puzzle_identifiers", "total_groups", "mean_puzzle_examples",
                             "total_puzzles", "sets"}
        assert meta["sets"] == ["all"]
        dtypes = {f: np.load(out / split / f"all__{f}.npy").dtype for f in
                  ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")}
        assert dtypes == {"inputs": np.uint8, "labels": np.uint8, "puzzle_identifiers": np.int32,
                          "puzzle_indices": np.int32, "group_indices": np.int32}
    meta, sets = load_split(out, "train")
    assert meta["total_groups"] == 8 and meta["total_puzzles"] == 13
    assert meta["mean_puzzle_examples"] == pytest.approx(22 / 13)
    assert isinstance(sets["all"]["inputs"], np.memmap)  # read memory-mapped, not copied
    check_split(meta, sets)
    assert not [p for p in os.listdir(tmp_path) if p != "d"]  # no temporary directory left behind
    assert os.stat(out).st_mode & 0o777 == os.stat(out / "train").st_mode & 0o777  # not left private


BROKEN = {
    "puzzle_indices not starting at 0": ("puzzle_indices", lambda a: a + 1),
    "puzzle_indices decreasing": ("puzzle_indices", lambda a: a[[0, 2, 1, *range(3, len(a))]]),
    "puzzle_indices not ending at the example count": ("puzzle_indices", lambda a: np.append(a[:-1], a[-1] - 1)),
    "group_indices not ending at the puzzle count": ("group_indices", lambda a: a[:-1]),
    "identifier outside the table": ("puzzle_identifiers", lambda a: a + 5),
    "token outside the vocabulary": ("inputs", lambda a: a.astype(np.int32) + 300),
    "inputs of the wrong length": ("inputs", lambda a: a[:, :2]),
    "labels missing a row": ("labels", lambda a: a[1:]),
}


@pytest.mark.parametrize("case", BROKEN)
def test_every_broken_invariant_is_refused_naming_the_file(case, tmp_path):
    field, breaker = BROKEN[case]
    arrays = tiny_arrays(GROUPS)
    arrays[field] = breaker(arrays[field])
    with pytest.raises(DatasetError, match=f"all__{field}.npy"):
        check_split(tiny_meta(), {"all": arrays})
    with pytest.raises(DatasetError):
        write_dataset(tmp_path / "d", {"train": (tiny_meta(), {"all": arrays})}, ["<blank>"])
    assert os.listdir(tmp_path) == []  # nothing partial written


def test_an_existing_different_dataset_is_kept_unless_overwrite(tmp_path):
    out = tmp_path / "d"
    write_tiny(out, GROUPS)
    assert write_tiny(out, GROUPS) == "unchanged"  # the same dataset again is fine
    before = (out / "train" / "all__inputs.npy").read_bytes()
    with pytest.raises(DatasetError, match="--overwrite"):
        write_tiny(out, GROUPS[:-1])
    assert (out / "train" / "all__inputs.npy").read_bytes() == before
    assert write_tiny(out, GROUPS[:-1], overwrite=True) == "written"
    assert load_split(out, "train")[0]["total_groups"] == 7
    assert sorted(os.listdir(tmp_path)) == ["d"]


def tree(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_directory_of_user_files_is_never_replaced_even_with_overwrite(tmp_path, overwrite):
    home = tmp_path / "home"
    write_tiny(home / "sudoku-easy", GROUPS)
    (home / "raw").mkdir()
    (home / "raw" / "my_precious.csv").write_text("source,question,answer,rating\n")
    (home / "out-run").mkdir()
    (home / "out-run" / "ckpt.pt").write_bytes(b"weights")
    before = tree(home)
    with pytest.raises(DatasetError, match=r"not a dataset written here.*\(out-run/, out-run/ckpt\.pt, raw/ and 18 "
                                           r"more\).*pick another --out"):
        write_tiny(home, GROUPS[:-1], overwrite=overwrite)
    assert tree(home) == before
    assert sorted(os.listdir(tmp_path)) == ["home"]  # no temporary directory left behind


def test_a_dataset_with_a_file_the_user_added_is_not_ours_to_replace(tmp_path):
    out = tmp_path / "d"
    write_tiny(out, GROUPS)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match=r"\(notes\.txt\)"):
        write_tiny(out, GROUPS[:-1], overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"
    (out / "notes.txt").unlink()
    (out / "identifiers.json").write_text('["<blank>", "edited by hand"]')  # same name, other size
    with pytest.raises(DatasetError, match=r"\(identifiers\.json\)"):
        write_tiny(out, GROUPS[:-1], overwrite=True)


@pytest.mark.parametrize("change", ["no manifest", "look-alike arrays", "empty folder", "same-size edit"])
def test_only_an_unchanged_dataset_with_its_manifest_is_replaced(tmp_path, change):
    out = tmp_path / "d"
    write_tiny(out, GROUPS)
    if change == "no manifest":  # an older version's dataset, or files that merely look like one
        (out / "manifest.json").unlink()
    elif change == "look-alike arrays":
        (out / "exp").mkdir()
        np.save(out / "exp" / "model__weights.npy", np.zeros(3))
    elif change == "empty folder":
        (out / "mykeep" / "inner").mkdir(parents=True)
    else:
        data = bytearray((out / "train" / "all__inputs.npy").read_bytes())
        data[-1] ^= 1
        (out / "train" / "all__inputs.npy").write_bytes(bytes(data))
    before = tree(out), sorted(str(p) for p in out.rglob("*"))
    with pytest.raises(DatasetError, match="not a dataset written here, or were changed since"):
        write_tiny(out, GROUPS[:-1], overwrite=True)
    assert (tree(out), sorted(str(p) for p in out.rglob("*"))) == before


def test_out_through_a_symlink_writes_where_it_points(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert write_tiny(tmp_path / "link", GROUPS) == "written"
    assert write_tiny(tmp_path / "link", GROUPS[:-1], overwrite=True) == "written"
    assert (tmp_path / "link").is_symlink() and load_split(tmp_path / "real", "train")[0]["total_groups"] == 7
    assert sorted(os.listdir(tmp_path)) == ["link", "real"]


def test_a_dataset_a_run_is_reading_is_not_replaced(tmp_path):
    import dataset
    out = tmp_path / "d"
    write_tiny(out, GROUPS)
    with dataset.reading(out):
        with pytest.raises(DatasetError, match="a running train.py reads this dataset"):
            write_tiny(out, GROUPS[:-1], overwrite=True)
    assert write_tiny(out, GROUPS[:-1], overwrite=True) == "written"


@pytest.mark.parametrize("where", ["same", "inside"])
def test_out_may_not_be_or_contain_the_source(tmp_path, where):
    source = tmp_path / "raw" / "train.csv"
    source.parent.mkdir()
    source.write_text("mine")
    out = source.parent if where == "inside" else source
    with pytest.raises(DatasetError, match="holds the source"):
        write_tiny(out, GROUPS, overwrite=True, sources=[str(source)])
    assert source.read_text() == "mine"
    assert write_tiny(tmp_path / "elsewhere", GROUPS, sources=[str(source)]) == "written"


def test_an_unwritable_out_is_one_line_and_leaves_no_temporary_files(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(DatasetError, match="is a file, not a directory"):
        write_tiny(blocker, GROUPS)
    with pytest.raises(DatasetError, match="cannot write the dataset"):
        write_tiny(blocker / "d", GROUPS)  # a path through a file
    assert sorted(os.listdir(tmp_path)) == ["a_file"]


def test_a_full_disk_is_one_line_and_leaves_no_temporary_files(tmp_path, monkeypatch):
    real_save = np.save

    def full(path, array, *a, **kw):
        if str(path).endswith("labels.npy"):
            raise OSError(28, "No space left on device", str(path))
        return real_save(path, array, *a, **kw)
    monkeypatch.setattr(np, "save", full)
    with pytest.raises(DatasetError, match="No space left on device"):
        write_tiny(tmp_path / "d", GROUPS)
    assert os.listdir(tmp_path) == []


def test_missing_dataset_names_the_path_and_the_command_that_makes_it(tmp_path):
    with pytest.raises(DatasetError, match=r"dataset\.json.*python prepare_sudoku\.py --out"):
        load_split(tmp_path / "nowhere", "train")
    with pytest.raises(DatasetError):
        TrainLoader(tmp_path / "nowhere", 4)


def test_a_dataset_saved_like_the_official_builder_loads(tmp_path):
    """Plain np.save arrays and HRM-style metadata (no total_puzzles) are read unchanged."""
    split = tmp_path / "train"
    split.mkdir()
    arrays = tiny_arrays([[1]] * 10)
    for field, array in arrays.items():
        np.save(split / f"all__{field}.npy", array)
    meta = tiny_meta() | {"total_groups": 10, "mean_puzzle_examples": 1, "sets": ["all"]}
    (split / "dataset.json").write_text(json.dumps(meta))
    batch = TrainLoader(tmp_path, 5).next_batch()
    assert sorted(example_ids(batch)) == sorted(set(example_ids(batch)))


def _batches(loader, n):
    return [loader.next_batch() for _ in range(n)]


def test_an_epoch_takes_one_puzzle_per_group_and_drops_the_partial_batch(tmp_path):
    groups = [[1] * k for k in (1, 2, 3, 4, 5, 6, 7)]  # 7 groups of single-example puzzles
    write_tiny(tmp_path, groups)
    loader = TrainLoader(tmp_path, 3, seed=1)
    assert loader.batches_per_pass == loader.batches_per_epoch == 2  # 7 groups // 3, one dropped
    arrays = tiny_arrays(groups)
    group_of_example = np.searchsorted(arrays["group_indices"], np.arange(28), side="right") - 1
    for epoch in range(4):
        ids = np.concatenate([example_ids(b) for b in _batches(loader, 2)])
        assert len(set(group_of_example[ids])) == 6  # six different groups, one puzzle each
        assert loader.epoch == epoch
    assert loader.next_batch() and loader.epoch == 4


def test_batches_are_int32_with_ignored_labels_mapped(tmp_path):
    write_tiny(tmp_path, GROUPS, num_identifiers=3)
    batch = TrainLoader(tmp_path, 4).next_batch()
    assert {k: (v.dtype, v.shape) for k, v in batch.items()} == {
        "inputs": (np.int32, (4, 3)), "labels": (np.int32, (4, 3)), "puzzle_identifiers": (np.int32, (4,))}
    assert (batch["labels"][:, -1] == IGNORE_LABEL_ID).all()
    assert (batch["labels"][:, :-1] == batch["inputs"][:, :-1]).all()
    arrays = tiny_arrays(GROUPS, 3)
    owner = np.searchsorted(arrays["puzzle_indices"], example_ids(batch), side="right") - 1
    assert (batch["puzzle_identifiers"] == arrays["puzzle_identifiers"][owner]).all()


def _official_order(groups, seed, iteration, epochs_per_iter=1):
    """The official sampler's choices, written the way it makes them: one Philox generator per pass
    seeded seed + pass (passes counted from 1), one permutation of the groups per epoch of the pass,
    concatenated, then one scalar draw per group for its puzzle."""
    arrays = tiny_arrays(groups)
    rng = np.random.Generator(np.random.Philox(seed=seed + iteration))
    order = np.concatenate([rng.permutation(len(groups)) for _ in range(epochs_per_iter)])
    gi = arrays["group_indices"]
    return [int(rng.integers(gi[g], gi[g + 1])) for g in order]


def test_group_order_and_puzzle_choice_match_the_official_sampler(tmp_path):
    groups = [[1] * (1 + i % 4) for i in range(40)]
    write_tiny(tmp_path, groups)
    loader = TrainLoader(tmp_path, 8, seed=5)
    for iteration in (1, 2):
        puzzles = np.concatenate([example_ids(b) for b in _batches(loader, 5)])  # one example per puzzle
        assert puzzles.tolist() == _official_order(groups, 5, iteration)


def test_a_pass_of_several_epochs_packs_across_epoch_boundaries(tmp_path):
    groups = [[1] * (1 + i % 3) for i in range(7)]
    write_tiny(tmp_path, groups)
    loader = TrainLoader(tmp_path, 3, seed=2, epochs_per_iter=3)
    assert loader.batches_per_pass == 7  # 21 groups fill 7 batches; one epoch alone would drop one
    puzzles = np.concatenate([example_ids(b) for b in _batches(loader, 7)])
    assert puzzles.tolist() == _official_order(groups, 2, 1, epochs_per_iter=3)
    assert loader.epoch == 0 and loader.next_batch() and loader.epoch == 3


def _previous_plan(loader, iteration):
    """The pass plan as this loader made it before it was vectorised (one Python step per puzzle draw):
    the puzzle of every row of every global batch, and its rows where each puzzle has one example."""
    rng = np.random.Generator(np.random.Philox(seed=loader.seed + iteration + 1))
    n_groups = len(loader.group_indices) - 1
    groups = np.concatenate([rng.permutation(n_groups) for _ in range(loader.epochs_per_iter)])
    draws = rng.integers(loader.group_indices[groups], loader.group_indices[groups + 1])
    batches, owners, filled = [], [], 0
    for puzzle in draws.tolist():
        take = min(int(loader.puzzle_sizes[puzzle]), loader.global_batch_size - filled)
        owners += [puzzle] * take
        filled += take
        if filled == loader.global_batch_size:
            batches.append(owners)
            owners, filled = [], 0
    return batches


@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize("batch, epochs", [(4, 1), (5, 3), (8, 2)])
def test_the_vectorised_pass_plan_makes_the_batches_of_the_step_by_step_one(tmp_path, seed, batch, epochs):
    groups = [[1 + (3 * i + j) % 5 for j in range(1 + i % 3)] for i in range(12)]
    write_tiny(tmp_path, groups)
    loader = TrainLoader(tmp_path, batch, seed=seed, epochs_per_iter=epochs)
    starts = loader.puzzle_indices
    for iteration in (0, 1):
        expected = _previous_plan(loader, iteration)
        for owners in expected:
            rows = example_ids(loader.next_batch())
            puzzles = np.searchsorted(starts, rows, side="right") - 1
            assert puzzles.tolist() == owners  # the same puzzles, in the same order, as many rows each
            assert len(set(rows.tolist())) == len(rows)  # each example of a puzzle at most once
        assert loader.iteration == iteration + (loader.index == 0)


def test_a_cut_puzzle_gives_a_random_part_of_its_examples(tmp_path):
    write_tiny(tmp_path, [[4]] * 3)
    loader = TrainLoader(tmp_path, 6, seed=0)
    seen = np.zeros(12, int)
    for _ in range(40):
        ids = example_ids(loader.next_batch())
        seen[ids] += 1
    assert seen.min() > 0  # not always the first examples of the cut puzzle


def test_a_pass_of_many_epochs_is_held_in_a_few_bytes_a_draw(tmp_path):
    """The paper's ARC pass draws 9.6M puzzles: its plan keeps one small integer per draw, not the rows."""
    write_tiny(tmp_path, [[1, 2, 3]] * 40)
    loader = TrainLoader(tmp_path, 16, seed=0, epochs_per_iter=2000)
    loader.next_batch()
    _, draws, starts = loader._plan
    assert len(draws) == 2000 * 40 and draws.itemsize <= 4
    assert draws.nbytes + starts.nbytes <= 5 * len(draws)


def test_resuming_from_state_dict_reproduces_the_same_batches(tmp_path):
    write_tiny(tmp_path, GROUPS)
    loader = TrainLoader(tmp_path, 4, seed=3)
    _batches(loader, 5)  # into the second epoch or beyond
    state = loader.state_dict()
    assert all(type(v) is int for v in state.values())
    expected = _batches(loader, 7)
    resumed = TrainLoader(tmp_path, 4, seed=3)
    resumed.load_state_dict(state)
    for a, b in zip(expected, _batches(resumed, 7)):
        assert all((a[k] == b[k]).all() for k in a)
    assert resumed.state_dict() == loader.state_dict()


def test_ranks_slice_the_same_global_batches(tmp_path):
    write_tiny(tmp_path, GROUPS)
    whole = _batches(TrainLoader(tmp_path, 4, seed=2), 6)
    ranks = [_batches(TrainLoader(tmp_path, 4, rank=r, world_size=2, seed=2), 6) for r in range(2)]
    for step, batch in enumerate(whole):
        joined = np.concatenate([ranks[0][step]["inputs"], ranks[1][step]["inputs"]])
        assert (joined == batch["inputs"]).all()


def test_examples_of_a_big_puzzle_are_truncated_to_fill_the_batch(tmp_path):
    write_tiny(tmp_path, [[4], [4], [4]])
    loader = TrainLoader(tmp_path, 6, seed=0)
    assert loader.batches_per_pass == 2  # the formula's figure; truncation makes it 1 in practice
    ids = example_ids(loader.next_batch())
    assert len(set(ids)) == 6 and loader.epoch == 0
    assert sorted(np.bincount(ids // 4, minlength=3)) == [0, 2, 4]  # one puzzle whole, one cut to 2
    loader.next_batch()
    assert loader.epoch == 1  # the third puzzle could not fill a batch: dropped


def test_impossible_batch_sizes_are_refused(tmp_path):
    write_tiny(tmp_path, GROUPS)
    with pytest.raises(DatasetError, match="lower the batch size"):
        TrainLoader(tmp_path, 13)  # an epoch may hold as few as 12 examples
    with pytest.raises(DatasetError, match="divisible"):
        TrainLoader(tmp_path, 6, world_size=4)


def test_eval_visits_every_example_once_in_order_padded_with_blanks(tmp_path):
    test_groups = [[1], [2], [1], [3], [1]]  # 8 examples
    write_tiny(tmp_path, GROUPS, test_groups=test_groups, num_identifiers=3)
    arrays = tiny_arrays(test_groups, 3)
    seen = []
    for rank in range(2):
        real_rows = 0
        for batch, n_real in eval_batches(tmp_path, "test", 6, rank=rank, world_size=2):
            assert batch["inputs"].shape == (3, 3)
            ids = example_ids(batch)
            assert (ids[n_real:] == -1).all() and (batch["labels"][n_real:] == IGNORE_LABEL_ID).all()
            assert (batch["puzzle_identifiers"][n_real:] == 0).all()
            owner = np.searchsorted(arrays["puzzle_indices"], ids[:n_real], side="right") - 1
            assert (batch["puzzle_identifiers"][:n_real] == arrays["puzzle_identifiers"][owner]).all()
            seen.append(ids[:n_real])
            real_rows += n_real
        assert real_rows == (5 if rank == 0 else 3)  # global batches [0:6], [6:8]: rank 0 gets 0-2 and 6-7
    assert sorted(np.concatenate(seen).tolist()) == list(range(8))


def test_total_train_steps_is_the_official_formula():
    meta = {"total_groups": 1000, "mean_puzzle_examples": 1.0}
    assert total_train_steps(meta, 50000, 768) == 65104  # the paper's Sudoku-Extreme run
    assert total_train_steps({"total_groups": 10, "mean_puzzle_examples": 2.5}, 3, 4) == 18


def break_dataset(out, how):
    split = out / "train"
    meta = json.loads((split / "dataset.json").read_text())
    if how == "truncated npy":
        data = (split / "all__labels.npy").read_bytes()
        (split / "all__labels.npy").write_bytes(data[:len(data) - 5])
    elif how == "seq_len":
        (split / "dataset.json").write_text(json.dumps(meta | {"seq_len": meta["seq_len"] + 1}))
    elif how == "vocab_size":
        (split / "dataset.json").write_text(json.dumps(meta | {"vocab_size": 2}))
    elif how == "total_groups":
        (split / "dataset.json").write_text(json.dumps(meta | {"total_groups": 5000}))
    elif how == "decreasing offsets":
        np.save(split / "all__group_indices.npy", np.array([0, 3, 2, 8], np.int32))
    elif how == "not an object":
        (split / "dataset.json").write_text("[1, 2]")


@pytest.mark.parametrize("how, message", [
    ("truncated npy", r"all__labels\.npy: unreadable .*truncated"),
    ("seq_len", r"all__inputs\.npy: shape \(\d+, 3\), expected \(\d+, 4\)"),
    ("vocab_size", r"all__inputs\.npy: tokens outside \[0, vocab_size=2\)"),
    ("total_groups", r"dataset\.json: total_groups is 5000 but the arrays hold 8"),
    ("decreasing offsets", r"all__group_indices\.npy: (offsets decrease|must start at 0)"),
    ("not an object", r"dataset\.json: not a dataset\.json"),
])
def test_a_broken_dataset_fails_when_opened_naming_the_file(tmp_path, how, message):
    out = tmp_path / "d"
    write_tiny(out, GROUPS)
    break_dataset(out, how)
    with pytest.raises(DatasetError, match=message):
        load_split(out, "train")
    with pytest.raises(DatasetError, match=message):
        TrainLoader(out, 2)


def test_the_prepare_scripts_never_replace_a_directory_of_user_files_or_their_source(tmp_path):
    """The scenario of a real report: one --overwrite emptied a directory holding a dataset, a raw CSV
    and a run; with --out = --source the source went too."""
    home = tmp_path / "home"
    done = run_script("prepare_sudoku.py", "--generate", 50, "--num_test", 10, "--num_aug", 1, "--size", 4,
                      "--out", home / "sudoku-easy")
    assert done.returncode == 0, done.stderr
    (home / "raw").mkdir()
    csv = (home / "sudoku-easy" / "train.csv").read_text()
    (home / "raw" / "train.csv").write_text(csv)
    (home / "raw" / "test.csv").write_text((home / "sudoku-easy" / "test.csv").read_text())
    (home / "out-run").mkdir()
    (home / "out-run" / "ckpt.pt").write_bytes(b"weights")
    arc = tmp_path / "arc"
    arc.mkdir()
    (arc / "arc-agi_training_challenges.json").write_text(
        '{"t1": {"train": [{"input": [[1]], "output": [[2]]}], "test": [{"input": [[3]]}]}}')
    (arc / "arc-agi_training_solutions.json").write_text('{"t1": [[[4]]]}')
    before = tree(home), tree(arc)
    for argv in (["prepare_sudoku.py", "--generate", 50, "--num_test", 10, "--num_aug", 1, "--size", 4],
                 ["prepare_maze.py", "--size", 5, "--braid", 0, "--generate", 20, "--num_test", 5]):
        done = run_script(*argv, "--out", home, "--overwrite")
        assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
        assert "not a dataset written here" in done.stderr and "pick another --out" in done.stderr
    for argv, out in ((["prepare_sudoku.py", "--source", home / "raw", "--size", 4], home / "raw"),
                      (["prepare_sudoku.py", "--source", home / "raw", "--size", 4], home),
                      (["prepare_arc.py", "--source", arc, "--subsets", "training", "--test_set", "training"], arc)):
        done = run_script(*argv, "--out", out, "--overwrite")
        assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
        assert "holds the source" in done.stderr, done.stderr
    assert (tree(home), tree(arc)) == before


def test_ctrl_c_while_preparing_is_one_line_and_leaves_nothing(tmp_path):
    # SIGINT as a terminal delivers it, even where this suite was started in the background (which leaves
    # SIGINT ignored for every child, and the script would never see it).
    proc = subprocess.Popen([sys.executable, "prepare_sudoku.py", "--generate", "200000", "--out", str(tmp_path / "big")],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(5)  # generating (200k puzzles take minutes): the imports are done, the write has not begun
    proc.send_signal(signal.SIGINT)
    try:
        _, stderr = proc.communicate(timeout=60)
    finally:  # a hang fails the test, and no worker may go on taking the machine from the other tests
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode != 0 and "Traceback" not in stderr, stderr
    assert stderr.strip().splitlines()[-1] == "prepare_sudoku.py: interrupted; no dataset was written"
    assert os.listdir(tmp_path) == []
