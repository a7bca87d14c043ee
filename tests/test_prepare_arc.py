"""prepare_arc.py: canvas and crop, augmentation round trips, the dataset (both layouts, both sources),
the loader on the canvas layout, voting / pass@K / submission.json, and every bad input."""
import itertools
import json
import os

import numpy as np
import pytest

import helpers_data  # (also puts the repository root on sys.path)

import dataset
import prepare_common
import prepare_arc as pa
from conftest import ROOT
from dataset import IGNORE_LABEL_ID, DatasetError, TrainLoader, eval_batches, load_split

REAL = ROOT.parent / "shared" / "data" / "arc"
needs_real = pytest.mark.skipif(not (REAL / "arc-agi_training_challenges.json").is_file(),
                                reason=f"real ARC data not found at {REAL}")


# ---------------------------------------------------------------------------- hand-written tasks

def random_grid(rng, h, w, colours=range(10)):
    return rng.choice(list(colours), size=(h, w)).tolist()


def random_task(rng, n_train=3, n_test=1):
    """A task whose pairs have distinct random shapes and colours (output = input recoloured and flipped)."""
    def pair():
        h, w = rng.integers(1, 9, size=2)
        grid = np.array(random_grid(rng, h, w))
        return {"input": grid.tolist(), "output": np.fliplr((grid + 1) % 10).tolist()}
    return {"train": [pair() for _ in range(n_train)], "test": [pair() for _ in range(n_test)]}


def write_task_dirs(root, subsets):
    """The official repositories' layout: root/<subset>/<task id>.json."""
    for subset, tasks in subsets.items():
        (root / subset).mkdir(parents=True, exist_ok=True)
        for task_id, task in tasks.items():
            (root / subset / f"{task_id}.json").write_text(json.dumps(task))
    return root


def write_combined(root, subset, tasks, solutions=True):
    """The Kaggle layout: challenges without test outputs, solutions beside them."""
    root.mkdir(parents=True, exist_ok=True)
    challenges = {t: {"train": task["train"], "test": [{"input": p["input"]} for p in task["test"]]}
                  for t, task in tasks.items()}
    (root / f"arc-agi_{subset}_challenges.json").write_text(json.dumps(challenges))
    if solutions:
        (root / f"arc-agi_{subset}_solutions.json").write_text(
            json.dumps({t: [p["output"] for p in task["test"]] for t, task in tasks.items()}))
    return root


def tiny_subsets(seed=0):
    rng = np.random.default_rng(seed)
    return {"training": {f"tr{i}": random_task(rng) for i in range(4)},
            "evaluation": {f"ev{i}": random_task(rng, n_test=1 + i % 2) for i in range(3)}}


NUM_AUG = 5


def build(tmp, source, *extra):
    """Run the CLI (in-process) on `source`, scoring on evaluation; returns the output directory."""
    out = tmp / ("d" + str(len(os.listdir(tmp))))
    pa.main(["--source", str(source), "--subsets", "training", "evaluation", "--test_set", "evaluation",
             "--num_aug", str(NUM_AUG), "--out", str(out), *extra])
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The hand-written tasks in the per-task directory layout, built three ways."""
    tmp = tmp_path_factory.mktemp("arc")
    source = write_task_dirs(tmp / "src", tiny_subsets())
    return {"source": source, "per_draw": build(tmp, source), "fixed": build(tmp, source, "--translation", "fixed"),
            "official": build(tmp, source, "--official_layout"), "tmp": tmp}


def _fails(argv, *needles, tmp=None):
    """Run the CLI, expect a one-line error holding every needle, and nothing written."""
    message = helpers_data.one_line_error(pa.main, "prepare_arc.py", argv, *needles)
    if tmp is not None:
        assert not (tmp / "out").exists()
    return message


# ---------------------------------------------------------------------------- grids

def test_canvas_has_eos_below_and_right_of_the_grid_and_pad_elsewhere():
    grid = np.array([[0, 1, 2], [3, 4, 5]])
    canvas = pa.to_canvas(grid, offset=(1, 2)).reshape(30, 30)
    assert (canvas[1:3, 2:5] == grid + 2).all()  # colour c -> token c + 2
    assert (canvas[3, 2:5] == pa.EOS).all() and (canvas[1:3, 5] == pa.EOS).all()
    assert canvas[3, 5] == pa.PAD  # the corner is not EOS
    assert (canvas != pa.PAD).sum() == 6 + 3 + 2
    full = pa.to_canvas(np.full((30, 30), 7))
    assert (full == 9).all()  # a 30x30 grid leaves no room for EOS
    edge = pa.to_canvas(np.ones((2, 2)), offset=(28, 28)).reshape(30, 30)
    assert (edge[28:, 28:] == 3).all() and (edge == pa.EOS).sum() == 0


def _official_crop(tokens):
    """The official evaluator's _crop, written as its loop."""
    g = tokens.reshape(30, 30)
    best, size, width = 0, (0, 0), 30
    for rows in range(1, 31):
        for c in range(1, width + 1):
            if not 2 <= g[rows - 1, c - 1] <= 11:
                width = c - 1
                break
        if rows * width > best:
            best, size = rows * width, (rows, width)
    return g[:size[0], :size[1]] - 2


def test_crop_reads_the_largest_top_left_rectangle_like_the_official_loop():
    rng = np.random.default_rng(0)
    for h, w in [(1, 1), (3, 7), (30, 30), (30, 1), (12, 29)]:
        grid = rng.integers(0, 10, (h, w))
        assert np.array_equal(pa.crop(pa.to_canvas(grid)), grid)
    ragged = np.zeros((30, 30), np.int64)
    ragged[0, :5], ragged[1:3, :3] = 5, 6  # widths 5, 3, 3: 3 rows of 3 (area 9) beat 1 row of 5
    assert pa.crop(ragged.reshape(-1)).shape == (3, 3)
    assert pa.crop(np.zeros(900)).shape == (0, 0)  # an all-PAD prediction crops to nothing
    noisy = rng.choice([0, 1] + [2] * 30 + list(range(3, 12)), size=(300, 900))  # predictions with stray PAD/EOS
    shapes = pa.crop_shapes(noisy)
    for tokens, (h, w) in zip(noisy, shapes):
        assert _official_crop(tokens).shape == (h, w)


def test_every_augmented_grid_maps_back():
    rng = np.random.default_rng(1)
    grid = rng.integers(0, 10, (4, 7)).astype(np.uint8)
    seen = set()
    for view in range(8):
        mapping = np.concatenate([[0], rng.permutation(9) + 1])
        augmented = pa.augment_grid(grid, view, mapping)
        assert np.array_equal(pa.invert_grid(augmented, view, mapping), grid)
        assert np.array_equal(pa.dihedral(pa.dihedral(grid, view), prepare_common.DIHEDRAL_INVERSE[view]), grid)
        assert (augmented == 0).sum() == (grid == 0).sum()  # colour 0 is never permuted
        name = pa.identifier_name("abc", view, mapping)
        task, v, m = pa.parse_identifier(name)
        assert (task, v) == ("abc", view) and np.array_equal(m, mapping)
        seen.add(pa.dihedral(grid, view).tobytes() + bytes(pa.dihedral(grid, view).shape))
    assert len(seen) == 8  # eight different symmetries
    assert pa.identifier_name("abc", 0, pa.IDENTITY) == "abc" and pa.parse_identifier("abc")[1] == 0


def _distinct_versions(pairs):
    """Brute force: every distinct augmented task over all views and all mappings of the colours used."""
    used = sorted({int(c) for p in pairs for g in p for c in np.unique(g)} - {0})
    versions = set()
    for view in range(8):
        for image in itertools.permutations(range(1, 10), len(used)):
            mapping = np.arange(10)
            mapping[used] = image
            versions.add(frozenset((pa.augment_grid(i, view, mapping).tobytes() + bytes(pa.dihedral(i, view).shape),
                                    pa.augment_grid(o, view, mapping).tobytes() + bytes(pa.dihedral(o, view).shape))
                                   for i, o in pairs))
    return versions


@pytest.mark.parametrize("kind", ["plain", "symmetric", "tied pairs"])
def test_augmentations_are_distinct_and_found_all_when_few_exist(kind):
    """Two colours leave at most 8 * 9 * 8 versions: asking for more finds exactly the distinct ones."""
    a = np.array([[1, 0, 0], [0, 2, 0]], np.uint8)
    pairs = {"plain": [(a, a.T.copy())],
             "symmetric": [(np.array([[1, 2], [2, 1]], np.uint8), np.array([[2, 1], [1, 2]], np.uint8))],
             "tied pairs": [(a, a.copy()), (a[::-1].copy(), a[::-1].copy())]}[kind]
    views, maps = pa.augmentations(pairs, 2000, np.random.default_rng(0))
    made = [frozenset((pa.augment_grid(i, v, m).tobytes() + bytes(pa.dihedral(i, v).shape),
                       pa.augment_grid(o, v, m).tobytes() + bytes(pa.dihedral(o, v).shape)) for i, o in pairs)
            for v, m in zip(views, maps)]
    assert len(set(made)) == len(made)  # no duplicates, the original included
    assert len(made) == len(_distinct_versions(pairs))
    assert views[0] == 0 and np.array_equal(maps[0], pa.IDENTITY)
    assert (maps[:, 0] == 0).all() and all(sorted(m) == list(range(10)) for m in maps.tolist())


def test_render_shows_every_cell():
    grid = np.array([[0, 1], [9, 5]])
    assert pa.render(grid, color=False) == "0 1\n9 5"
    coloured = pa.render(grid).splitlines()
    assert len(coloured) == 2 and all(line.count("\033[48;5;") == 2 for line in coloured)


# ---------------------------------------------------------------------------- the dataset

def _tasks(source):
    return {t: pa.parse_task(t, json.loads(p.read_text()), str(p)) for p in sorted(source.glob("*/*.json"))
            for t in [p.stem]}


def test_dataset_follows_spec_section_7(tiny):
    tasks = _tasks(tiny["source"])
    names = json.loads((tiny["per_draw"] / "identifiers.json").read_text())
    meta, sets = load_split(tiny["per_draw"], "train")
    assert (meta["vocab_size"], meta["seq_len"], meta["task"]) == (12, 900, "arc")
    assert meta["num_puzzle_identifiers"] == len(names) == 1 + 7 * (1 + NUM_AUG)
    assert meta["total_groups"] == 7  # one group per task, evaluation tasks included
    train = sets["all"]
    for g in range(7):
        puzzles = range(train["group_indices"][g], train["group_indices"][g + 1])
        task_ids = {pa.parse_identifier(names[train["puzzle_identifiers"][p]])[0] for p in puzzles}
        assert len(task_ids) == 1 and len(puzzles) == 1 + NUM_AUG
        task_id = task_ids.pop()
        sizes = {int(train["puzzle_indices"][p + 1] - train["puzzle_indices"][p]) for p in puzzles}
        # training tasks give all their pairs, evaluation tasks only their demonstrations
        task = tasks[task_id]
        assert sizes == {len(task["train"]) + (0 if task_id.startswith("ev") else len(task["test"]))}
        for p in puzzles:  # one example per puzzle stays at (0, 0)
            lo, hi = train["puzzle_indices"][p], train["puzzle_indices"][p + 1]
            assert (train["example_translate"][lo:hi] == 0).sum() == 1
    test_meta, test_sets = load_split(tiny["per_draw"], "test")
    test = test_sets["all"]
    assert test_meta["total_groups"] == 3 and (test["example_offsets"] == 0).all()
    assert len(test["inputs"]) == (1 + NUM_AUG) * (1 + 2 + 1)  # evaluation tasks' test inputs, per version


def test_every_test_example_maps_back_to_its_task(tiny):
    tasks = _tasks(tiny["source"])
    names = json.loads((tiny["per_draw"] / "identifiers.json").read_text())
    _, sets = load_split(tiny["per_draw"], "test")
    test = sets["all"]
    inputs, labels = np.asarray(test["inputs"]), np.asarray(test["labels"])
    for p, identifier in enumerate(test["puzzle_identifiers"]):
        task_id, view, mapping = pa.parse_identifier(names[identifier])
        for k, n in enumerate(range(test["puzzle_indices"][p], test["puzzle_indices"][p + 1])):
            original_in, original_out = tasks[task_id]["test"][k]
            assert np.array_equal(pa.invert_grid(pa.crop(inputs[n]), view, mapping), original_in)
            assert np.array_equal(pa.invert_grid(pa.crop(labels[n]), view, mapping), original_out)


def test_both_layouts_hold_the_same_examples(tiny):
    for split in ("train", "test"):
        official_meta, official = load_split(tiny["official"], split)
        canvas_meta, canvas = load_split(tiny["fixed"], split)
        assert isinstance(official["all"]["inputs"], np.memmap) and official_meta["task"] == "arc"
        for field in ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices"):
            assert np.array_equal(np.asarray(official["all"][field]), np.asarray(canvas["all"][field])), field
        assert {k: official_meta[k] for k in official_meta if k != "sets"} == \
               {k: canvas_meta[k] for k in official_meta if k != "sets"}
    assert (tiny["official"] / "test_puzzles.json").read_text() == (tiny["fixed"] / "test_puzzles.json").read_text()


def test_loaders_give_the_same_batches_on_both_layouts_when_offsets_are_fixed(tiny):
    a, b = TrainLoader(tiny["official"], 6, seed=3), TrainLoader(tiny["fixed"], 6, seed=3)
    for _ in range(3 * a.batches_per_epoch + 1):  # across pass boundaries
        x, y = a.next_batch(), b.next_batch()
        assert all(np.array_equal(x[k], y[k]) for k in x)
    for (x, n), (y, m) in zip(eval_batches(tiny["official"], "test", 8), eval_batches(tiny["fixed"], "test", 8)):
        assert n == m and all(np.array_equal(x[k], y[k]) for k in x)


def test_evaluation_composes_each_canvas_batch_once(tiny, monkeypatch):
    calls = []
    compose = dataset.Canvas.compose
    monkeypatch.setattr(dataset.Canvas, "compose", lambda self, rows, *a: calls.append(len(rows)) or compose(self, rows, *a))
    batches = list(eval_batches(tiny["fixed"], "test", 4))
    assert len(calls) == len(batches) and sum(calls) == sum(n for _, n in batches)


def test_building_again_gives_the_same_files(tiny):
    again = build(tiny["tmp"], tiny["source"])
    files = sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tiny["per_draw"]) for p in tiny["per_draw"].rglob("*") if p.is_file())
    assert all((again / f).read_bytes() == (tiny["per_draw"] / f).read_bytes() for f in files)


def _offset(tokens):
    """Where the grid starts on a canvas (colour tokens and EOS are never PAD)."""
    rows, cols = np.nonzero(tokens.reshape(30, 30) > 0)  # labels hold -100 where the canvas is PAD
    return rows.min(), cols.min()


def test_per_draw_offsets_are_fresh_and_uniform_except_one_pair_at_the_origin(tmp_path):
    """One task of three pairs: every batch holds its three examples; the one kept at (0, 0) stays there,
    the others move uniformly over the room they have, anew in every batch (as the official ARC builder draws them)."""
    rng = np.random.default_rng(5)
    shapes = [(20, 27), (24, 25), (26, 23)]  # small rooms, so the histogram fills quickly
    task = {"train": [{"input": random_grid(rng, h, w, range(1, 10)), "output": random_grid(rng, h, w, range(1, 10))}
                      for h, w in shapes], "test": [{"input": [[1]], "output": [[2]]}]}
    source = write_task_dirs(tmp_path / "src", {"training": {"t": task}})
    out = tmp_path / "d"
    pa.main(["--source", str(source), "--subsets", "training", "--test_set", "training", "--num_aug", "0",
             "--out", str(out)])
    _, sets = load_split(out, "train")
    kept = int(np.flatnonzero(sets["all"]["example_translate"] == 0)[0])
    loader = TrainLoader(out, 3, seed=0)
    offsets = {k: [] for k in range(3)}
    for _ in range(2000):
        batch = loader.next_batch()
        for tokens in batch["inputs"]:
            rows, cols = np.nonzero(tokens.reshape(30, 30) >= 2)
            pair = [k for k, (h, w) in enumerate(shapes) if (np.ptp(rows) + 1, np.ptp(cols) + 1) == (h, w)][0]
            offsets[pair].append(_offset(tokens))
        assert all(_offset(i) == _offset(label) for i, label in zip(batch["inputs"], batch["labels"]))
    for k, (h, w) in enumerate(shapes):
        seen = np.array(offsets[k])
        if k == kept:
            assert (seen == 0).all()
            continue
        room = (30 - h, 30 - w)
        for axis in range(2):
            counts = np.bincount(seen[:, axis], minlength=room[axis] + 1)
            assert len(counts) == room[axis] + 1  # never beyond the room, so the grid stays on the canvas
            expected = len(seen) / (room[axis] + 1)
            chi2 = ((counts - expected) ** 2 / expected).sum()
            assert chi2 < 40, counts  # uniform (dof <= 10: chi-square p < 1e-5 beyond 40)
    loader_again = TrainLoader(out, 3, seed=0)
    assert np.array_equal(loader_again.next_batch()["inputs"], TrainLoader(out, 3, seed=0).next_batch()["inputs"])


def test_canvas_loader_is_deterministic_resumable_and_the_same_on_every_rank(tiny):
    loader = TrainLoader(tiny["per_draw"], 6, seed=1)
    for _ in range(4):
        loader.next_batch()
    state = loader.state_dict()
    expected = [loader.next_batch() for _ in range(5)]
    resumed = TrainLoader(tiny["per_draw"], 6, seed=1)
    resumed.load_state_dict(state)
    halves = [TrainLoader(tiny["per_draw"], 6, rank=r, world_size=2, seed=1) for r in range(2)]
    for h in halves:
        h.load_state_dict(state)
    for batch in expected:
        again = resumed.next_batch()
        assert all(np.array_equal(batch[k], again[k]) for k in batch)
        joined = np.concatenate([h.next_batch()["inputs"] for h in halves])
        assert np.array_equal(joined, batch["inputs"])
    assert batch["inputs"].dtype == np.int32 and (batch["labels"] != 0).all()  # PAD labels are ignored
    assert (batch["labels"] == IGNORE_LABEL_ID).any()


@needs_real
def test_kaggle_combined_files_build(tmp_path):
    keep = "007bbfb7,00d62c1b,00576224,009d5c81,AboveBelow1"
    out = tmp_path / "real"
    pa.main(["--source", str(REAL), "--tasks", keep, "--num_aug", "3", "--out", str(out)])
    meta, sets = load_split(out, "test")
    puzzles = json.loads((out / "test_puzzles.json").read_text())
    assert sorted(puzzles) == ["00576224", "009d5c81"]  # the evaluation tasks are scored
    assert meta["total_groups"] == 2 and load_split(out, "train")[0]["total_groups"] == 5
    records = _oracle_records(out)
    assert pa.score(out, "test", records)["pass@2"] == 1.0


@needs_real
def test_the_default_subsets_of_real_data_load_and_note_the_known_copy(capsys):
    loaded = pa.load_subsets(str(REAL), ["training", "evaluation", "concept"], "evaluation")
    assert [len(tasks) for _, tasks in loaded] == [400, 400, 160]
    assert pa._note_copies(loaded, "evaluation") == 1  # kept, as the official dataset keeps it
    note = capsys.readouterr().out
    assert "070dd51e" in note and "40853293" in note  # ARC-AGI-1's evaluation task that copies a training task


def test_version_2_defaults_work_on_combined_files(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    for subset in ("training2", "evaluation2", "concept"):
        write_combined(tmp_path / "kaggle", subset, {f"{subset}-{i}": random_task(rng) for i in range(2)})
    monkeypatch.chdir(tmp_path)  # the default output directory is relative
    pa.main(["--source", "kaggle", "--version", "2", "--num_aug", "2"])
    out = tmp_path / "data" / "arc2concept-aug-2"
    assert sorted(json.loads((out / "test_puzzles.json").read_text())) == ["evaluation2-0", "evaluation2-1"]
    assert load_split(out, "train")[0]["total_groups"] == 6


def test_load_task_by_path_and_by_id(tmp_path):
    rng = np.random.default_rng(3)
    tasks = {"a1": random_task(rng), "b2": random_task(rng)}
    write_combined(tmp_path / "k", "training", tasks)
    write_task_dirs(tmp_path / "d", {"evaluation": {"c3": random_task(rng)}})
    by_id = pa.load_task("b2", source=str(tmp_path / "k"))
    assert by_id["id"] == "b2" and by_id["subset"] == "training"
    assert np.array_equal(by_id["test"][0][1], tasks["b2"]["test"][0]["output"])
    by_path = pa.load_task(str(tmp_path / "d" / "evaluation" / "c3.json"))
    assert by_path["id"] == "c3" and len(by_path["train"]) == 3
    with pytest.raises(pa.InputError, match="zz9"):
        pa.load_task("zz9", source=str(tmp_path / "k"))


# ---------------------------------------------------------------------------- scoring

def _oracle_records(data_dir, wrong=None):
    """Records as train.py's evaluate() collects them, predicting the labels (the truth in each version's
    frame); `wrong(n, name)` may return a replacement prediction for example n."""
    _, sets = load_split(data_dir, "test")
    test = sets["all"]
    labels = np.asarray(test["labels"]).astype(np.int32)
    owner = np.searchsorted(test["puzzle_indices"], np.arange(len(labels)), side="right") - 1
    ids = np.asarray(test["puzzle_identifiers"])[owner]
    preds = labels.copy()
    if wrong:
        names = json.loads((data_dir / "identifiers.json").read_text())
        for n in range(len(preds)):
            replacement = wrong(n, names[ids[n]])
            if replacement is not None:
                preds[n] = replacement
    return {"inputs": np.asarray(test["inputs"]).astype(np.int32), "labels": np.where(labels == 0, -100, labels),
            "preds": preds, "puzzle_identifiers": ids.astype(np.int32),
            "q_halt_logits": np.zeros(len(preds), np.float32)}


def test_an_oracle_scores_100_and_a_blank_model_0(tiny, tmp_path):
    records = _oracle_records(tiny["per_draw"])
    result = pa.score(tiny["per_draw"], "test", records, out_dir=tmp_path)
    assert result["tasks_scored"] == result["tasks_total"] == 3
    assert all(result[f"pass@{k}"] == 1.0 for k in pa.PASS_KS)
    blank = dict(records, preds=np.zeros_like(records["preds"]))
    assert all(v == 0.0 for k, v in pa.score(tiny["per_draw"], "test", blank).items() if k.startswith("pass@"))


@pytest.mark.parametrize("ids", ["none", "blank", "random"])
def test_identifier_ablation_maps_answers_back_through_their_own_augmentation(tiny, ids):
    """An oracle that ignores the identifier scores 100% whatever identifiers it is shown: train.py's
    evaluation scores each answer through the augmentation of the example it answers, not through
    the one of the identifier the model saw."""
    import configurator
    import train
    data = tiny["per_draw"]
    C = configurator.configure([f"--data_dir={data}", "--device=cpu", "--dtype=float32", "--compile=False",
                                "--hidden_size=16", "--num_heads=2", "--puzzle_emb_ndim=16", "--H_cycles=1",
                                "--L_cycles=1", "--halt_max_steps=1", "--global_batch_size=8"])
    model = train.TRM(configurator.model_config(C, load_split(data, "train")[0]))

    def oracle(carry, batch):
        carry, outputs = model(carry, batch)
        return carry, dict(outputs, preds=batch["labels"].clamp(min=0))  # ignored label -> PAD

    result = train.evaluate(model, C, "cpu", oracle, ids=ids)
    assert result["tasks_scored"] == 3 and all(result[f"pass@{k}"] == 1.0 for k in pa.PASS_KS)


def test_submission_json_follows_the_arc_prize_schema(tiny, tmp_path):
    records = _oracle_records(tiny["per_draw"])
    records["preds"][::3] = 0  # some blank answers too: they must still give valid grids
    pa.score(tiny["per_draw"], "test", records, out_dir=tmp_path)
    submission = json.loads((tmp_path / "submission.json").read_text())
    truth = json.loads((tiny["per_draw"] / "test_puzzles.json").read_text())
    assert sorted(submission) == sorted(truth)
    for task_id, attempts in submission.items():
        assert len(attempts) == len(truth[task_id]["test"])
        for entry in attempts:
            assert sorted(entry) == ["attempt_1", "attempt_2"]
            for grid in entry.values():
                assert isinstance(grid, list) and grid
                assert all(isinstance(r, list) and len(r) == len(grid[0]) for r in grid)
                assert 1 <= len(grid) <= 30 and 1 <= len(grid[0]) <= 30
                assert all(type(c) is int and 0 <= c <= 9 for r in grid for c in r)
    oracle = _oracle_records(tiny["per_draw"])
    pa.score(tiny["per_draw"], "test", oracle, out_dir=tmp_path)
    submission = json.loads((tmp_path / "submission.json").read_text())
    assert all(entry["attempt_1"] == pair["output"]
               for t in truth for entry, pair in zip(submission[t], truth[t]["test"]))


def test_votes_rank_answers_and_break_ties_by_mean_halting_confidence():
    ranked = pa.rank_answers({"a": [2, 1.0], "b": [3, 0.3], "c": [2, 1.8]})
    assert [key for key, _, _ in ranked] == ["b", "c", "a"]  # 3 votes, then 2 votes with mean 0.9 over 0.5
    assert ranked[1][2] == pytest.approx(0.9)


def test_a_wrong_majority_costs_pass_at_1_but_not_pass_at_2(tiny):
    """In task ev0 most versions agree on a wrong answer (the same once mapped back to the task's frame):
    it wins the vote, the truth comes second."""
    right = []

    def wrong(n, name):
        task_id, view, mapping = pa.parse_identifier(name)
        if task_id != "ev0" or len(right) < 2:  # ev0: 2 versions right, the other 4 agree on a wrong answer
            right.append(task_id == "ev0")
            return None
        return pa.to_canvas(pa.augment_grid(np.full((2, 2), 3, np.uint8), view, mapping))
    records = _oracle_records(tiny["per_draw"], wrong)
    result = pa.score(tiny["per_draw"], "test", records)
    assert result["pass@1"] == pytest.approx(2 / 3) and result["pass@2"] == 1.0
    # the same split of votes with the truth far more confident than the wrong answer: still votes first
    confident = dict(records, q_halt_logits=np.where(records["preds"][:, 0] == records["labels"][:, 0], 9.0, -9.0))
    assert pa.score(tiny["per_draw"], "test", confident)["pass@1"] == pytest.approx(2 / 3)


def test_a_prefix_of_the_test_split_scores_the_tasks_it_covers(tiny):
    records = _oracle_records(tiny["per_draw"])
    first = {k: v[:NUM_AUG + 2] for k, v in records.items()}  # task ev0's versions and one of ev1's
    result = pa.score(tiny["per_draw"], "test", first)
    assert result["tasks_scored"] == 2 and result["tasks_total"] == 3
    assert result["pass@1"] == pytest.approx((1 + 0.5) / 2)  # ev1 has two test inputs, one answered
    shuffled = {k: v[::-1] for k, v in records.items()}
    with pytest.raises(DatasetError, match="in order"):
        pa.score(tiny["per_draw"], "test", shuffled)


# ---------------------------------------------------------------------------- bad input

def _source_with(tmp_path, mutate, subset="training"):
    subsets = tiny_subsets(1)
    mutate(subsets[subset])
    return write_task_dirs(tmp_path / "src", subsets)


BAD_TASKS = {
    "grid larger than 30x30": (lambda t: t["tr1"]["train"][0].update(input=[[1] * 31] * 2), "tr1", "larger than"),
    "ragged grid": (lambda t: t["tr1"]["train"][1].update(output=[[1, 2], [3]]), "tr1", "ragged"),
    "colour outside 0-9": (lambda t: t["tr2"]["test"][0].update(input=[[1, 10]]), "tr2", "colour 10"),
    "colour not an integer": (lambda t: t["tr2"]["train"][0].update(output=[["3"]]), "tr2", "colour '3'"),
    "task without a test pair": (lambda t: t["tr3"].update(test=[]), "tr3", "no test pair"),
}


@pytest.mark.parametrize("case", BAD_TASKS)
def test_a_bad_task_is_named_with_its_file(case, tmp_path):
    mutate, task_id, needle = BAD_TASKS[case]
    source = _source_with(tmp_path, mutate)
    _fails(["--source", str(source), "--subsets", "training", "evaluation", "--test_set", "evaluation",
            "--out", str(tmp_path / "out")], f"task {task_id}", f"{task_id}.json", needle, tmp=tmp_path)


def test_malformed_json_is_named_with_its_line(tmp_path):
    source = write_task_dirs(tmp_path / "src", tiny_subsets())
    (source / "evaluation" / "ev1.json").write_text('{"train": [')
    _fails(["--source", str(source), "--subsets", "training", "evaluation", "--test_set", "evaluation",
            "--out", str(tmp_path / "out")], "ev1.json", "not valid JSON", "line 1", tmp=tmp_path)


def test_challenges_and_solutions_with_different_task_ids_are_refused(tmp_path):
    rng = np.random.default_rng(4)
    write_combined(tmp_path / "k", "training", {"a": random_task(rng), "b": random_task(rng)})
    solutions = tmp_path / "k" / "arc-agi_training_solutions.json"
    sols = json.loads(solutions.read_text())
    sols["zz"] = sols.pop("b")
    solutions.write_text(json.dumps(sols))
    _fails(["--source", str(tmp_path / "k"), "--subsets", "training", "--test_set", "training", "--out",
            str(tmp_path / "out")], "arc-agi_training_solutions.json", "no solution for b", "unknown zz", tmp=tmp_path)


def test_training_on_scored_tasks_is_refused_naming_them(tmp_path):
    """E.g. ARC-AGI-2's training set holds ARC-AGI-1's evaluation tasks under the same ids."""
    subsets = tiny_subsets()
    subsets["training"]["ev2"] = subsets["evaluation"]["ev2"]
    source = write_task_dirs(tmp_path / "src", subsets)
    _fails(["--source", str(source), "--subsets", "training", "evaluation", "--test_set", "evaluation",
            "--out", str(tmp_path / "out")], "overlap", "ev2", "training", tmp=tmp_path)


def test_missing_subsets_and_unknown_tasks_are_explained(tmp_path):
    source = write_task_dirs(tmp_path / "src", tiny_subsets())
    _fails(["--source", str(source), "--out", str(tmp_path / "out")], "subset concept", "--source", tmp=tmp_path)
    _fails(["--source", str(source), "--subsets", "training", "evaluation", "--test_set", "evaluation",
            "--tasks", "tr0,nope", "--out", str(tmp_path / "out")], "nope", tmp=tmp_path)


# ---------------------------------------------------------------------------- small canvases and configs

def test_a_small_canvas_keeps_every_rule(tmp_path):
    """--canvas 10 (the CPU quick start's): 100 tokens, grids and EOS fit, the oracle still scores 100%."""
    source = write_task_dirs(tmp_path / "src", tiny_subsets())
    out = build(tmp_path, source, "--canvas", "10")
    meta, sets = load_split(out, "train")
    assert meta["seq_len"] == 100
    tokens = np.asarray(sets["all"]["inputs"])
    assert tokens.shape[1] == 100 and tokens.max() < 12
    assert pa.score(out, "test", _oracle_records(out))["pass@1"] == 1.0
    loader = TrainLoader(out, 4, seed=0)
    assert loader.next_batch()["inputs"].shape == (4, 100)
    _fails(["--source", str(source), "--subsets", "training", "evaluation", "--test_set", "evaluation",
            "--canvas", "5", "--out", str(tmp_path / "out")], "larger than --canvas 5", tmp=tmp_path)


@needs_real
def test_the_quick_start_data_builds_from_real_tasks(tmp_path):
    out = tmp_path / "quick"
    pa.main(["--source", str(REAL), "--quick_start", "--out", str(out)])
    meta = load_split(out, "train")[0]
    assert meta["seq_len"] == 100 and meta["total_groups"] == len(pa.QUICK_START["tasks"].split(","))
    assert pa.score(out, "test", _oracle_records(out))["pass@2"] == 1.0


def test_configs_hold_the_paper_settings():
    import configurator
    for name in ("arc1", "arc2"):
        C = configurator.configure([str(ROOT / "config" / f"{name}.py")])
        model = (C["hidden_size"], C["H_cycles"], C["L_cycles"], C["pos_encodings"], C["mlp_t"])
        assert model == (512, 3, 4, "rope", False)
        assert (C["lr"], C["puzzle_emb_lr"], C["weight_decay"], C["puzzle_emb_weight_decay"]) == (1e-4, 1e-2, 0.1, 0.1)
        assert (C["epochs"], C["eval_interval"], C["global_batch_size"]) == (100000, 10000, 768)
        assert C["data_dir"] == f"data/{name}concept-aug-1000"
    cpu = configurator.configure([str(ROOT / "config" / "arc_cpu.py")])
    assert cpu["data_dir"] == pa.QUICK_START["out"] and cpu["max_minutes"] <= 10


# ---------------------------------------------------------------------------- missing outputs, odd ids, overlap

def _kaggle(tmp_path, solutions=True, subsets=None):
    """tiny_subsets in the Kaggle layout; the evaluation solutions only when asked."""
    subsets = subsets or tiny_subsets()
    write_combined(tmp_path / "k", "training", subsets["training"])
    write_combined(tmp_path / "k", "evaluation", subsets["evaluation"], solutions=solutions)
    return tmp_path / "k"


def test_a_scored_test_pair_without_its_output_stops_the_build_naming_it(tmp_path):
    solutions = _kaggle(tmp_path) / "arc-agi_evaluation_solutions.json"
    outputs = json.loads(solutions.read_text())
    outputs["ev1"][1] = None  # ev1 has two test inputs; the second one's output is lost
    solutions.write_text(json.dumps(outputs))
    argv = ["--subsets", "training", "evaluation", "--test_set", "evaluation", "--out", str(tmp_path / "out")]
    _fails(["--source", str(tmp_path / "k"), *argv], "task ev1 test pair 1 has no output",
           "3 of the set's 4 test pairs", "fix: add the output", "--tasks", tmp=tmp_path)
    source = _source_with(tmp_path, lambda t: t["ev2"]["test"][0].pop("output"), subset="evaluation")
    _fails(["--source", str(source), *argv], "task ev2 test pair 0 has no output", tmp=tmp_path)


def test_a_test_set_without_solutions_gives_predictions_and_submission_json_only(tmp_path, capsys):
    labelled = build(tmp_path, _kaggle(tmp_path / "with"))
    unlabelled = build(tmp_path, _kaggle(tmp_path / "without", solutions=False))
    assert "no test outputs" in capsys.readouterr().out
    assert pa.score(labelled, "test", _oracle_records(labelled))["labelled"] == 1.0
    # the same tasks and seeds give the same examples: the labelled build's right answers, shown to the other
    assert (labelled / "identifiers.json").read_text() == (unlabelled / "identifiers.json").read_text()
    result = pa.score(unlabelled, "test", _oracle_records(labelled), out_dir=tmp_path / "run")
    assert result == {"tasks_scored": 3, "tasks_total": 3, "labelled": 0.0}  # no pass@K without outputs
    submission = json.loads((tmp_path / "run" / "submission.json").read_text())
    truth = json.loads((labelled / "test_puzzles.json").read_text())
    assert sorted(submission) == sorted(truth)
    assert all(entry["attempt_1"] == pair["output"]
               for t in truth for entry, pair in zip(submission[t], truth[t]["test"]))


ODD_IDS = ["a|||b", "x|||t1|||0123456789", "ends with a bar|", "|||", "with spaces", "café ✓ 数独", "a/b"]


def test_any_task_id_survives_naming_scoring_and_the_submission(tmp_path):
    rng = np.random.default_rng(6)
    for task_id in ODD_IDS + ["plain"]:
        for view, mapping in ((0, pa.IDENTITY), (3, np.r_[0, rng.permutation(9) + 1])):
            task, v, m = pa.parse_identifier(pa.identifier_name(task_id, view, mapping))
            assert (task, v) == (task_id, view) and np.array_equal(m, mapping)
    assert pa.identifier_name("plain", 0, pa.IDENTITY) == "plain"  # ids without the separator keep official names
    write_combined(tmp_path / "k", "training", {"plain": random_task(rng)})
    write_combined(tmp_path / "k", "evaluation", {t: random_task(rng, n_test=2) for t in ODD_IDS})
    out = build(tmp_path, tmp_path / "k")
    result = pa.score(out, "test", _oracle_records(out), out_dir=tmp_path / "run")
    assert result["tasks_scored"] == result["tasks_total"] == len(ODD_IDS) and result["pass@1"] == 1.0
    assert sorted(json.loads((tmp_path / "run" / "submission.json").read_text())) == sorted(ODD_IDS)


def test_unreadable_task_files_are_one_line(tmp_path):
    source = write_task_dirs(tmp_path / "src", tiny_subsets())
    path = source / "evaluation" / "ev1.json"
    text = path.read_bytes()
    path.write_bytes(text.replace(b'"train"', b'"tr\xe9in"', 1))  # Latin-1, not UTF-8
    argv = ["--subsets", "training", "evaluation", "--test_set", "evaluation", "--out", str(tmp_path / "out")]
    _fails(["--source", str(source), *argv], f"{path}: byte {text.index(b'train') + 2} (0xe9) is not UTF-8",
           tmp=tmp_path)
    solutions = _kaggle(tmp_path) / "arc-agi_evaluation_solutions.json"
    solutions.write_text("[[1]]")
    _fails(["--source", str(tmp_path / "k"), *argv], "arc-agi_evaluation_solutions.json", "expected an object",
           tmp=tmp_path)


def test_a_scored_test_pair_that_is_a_training_pair_is_noted_and_recorded(tmp_path, monkeypatch, capsys):
    subsets = tiny_subsets()
    subsets["evaluation"]["ev0"]["test"][0] = dict(subsets["training"]["tr2"]["train"][1])
    metas, real = [], pa.write_dataset

    def spy(out, splits, *args, **kwargs):
        metas.append({name: meta for name, (meta, _) in splits.items()})
        return real(out, splits, *args, **kwargs)
    monkeypatch.setattr(pa, "write_dataset", spy)
    build(tmp_path, write_task_dirs(tmp_path / "src", subsets))
    assert "1 of the 4 test pairs of evaluation are also training pairs (task ev0 test pair 0 = train pair 1 of " \
           "task tr2)" in capsys.readouterr().out
    assert metas[-1]["train"]["train_test_overlap"] == 1  # kept, as the official dataset keeps ARC-AGI-1's copy
