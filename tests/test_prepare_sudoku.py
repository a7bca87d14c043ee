"""prepare_sudoku.py: rules, augmentation, solver and rater, generator, CSV and download sources, bad input,
train/test overlap."""
import itertools
import os
import random
import re

import numpy as np
import pytest

import helpers_data  # (also puts the repository root on sys.path)

import prepare_common
import prepare_sudoku as ps
from dataset import check_split, load_split

# Arto Inkala's 2012 "world's hardest Sudoku": unique, and needs many guesses.
INKALA = "8..........36......7..9.2...5...7.......457.....1...3...1....68..85...1..9....4.."


@pytest.fixture(scope="module")
def easy():
    """40 easy 9x9 puzzles (questions, answers, ratings) as tokens."""
    return ps.generate(40, "easy", 9, seed=7)


def _csv(path, rows, header="source,question,answer,rating"):
    path.write_text("\n".join(([header] if header is not None else []) + rows) + ("\n" if rows or header else ""))
    return path


def _rows(questions, answers, ratings=None):
    ratings = np.zeros(len(questions), int) if ratings is None else ratings
    return [f"t,{ps.decode_grid(q, 9)},{ps.decode_grid(a, 9)},{r}" for q, a, r in zip(questions, answers, ratings)]


def _fails(argv, *needles):
    return helpers_data.one_line_error(ps.main, "prepare_sudoku.py", argv, *needles)


# ---------------------------------------------------------------------------- grids and rules

def test_tokens_follow_the_spec_and_round_trip():
    tokens = ps.encode_grid("1.9" + "0" * 78, 9)
    assert tokens[:4].tolist() == [2, 1, 10, 1]  # digit d -> d + 1, blank ('.' or '0') -> 1
    assert ps.decode_grid(tokens, 9) == "1.9" + "." * 78
    with pytest.raises(ValueError, match="'x' at position 2"):
        ps.encode_grid("1x" + "." * 79, 9)


def test_rule_check_accepts_solutions_and_rejects_broken_ones(easy):
    q, a, _ = easy
    assert all(ps.is_valid_solution(q[i], a[i], 9) for i in range(len(q)))
    swapped = a[0].copy()
    swapped[[0, 1]] = swapped[[1, 0]]  # breaks two columns and keeps rows
    assert not ps.is_valid_solution(np.full(81, ps.BLANK), swapped, 9)
    other = a[1]
    assert not ps.is_valid_solution(q[0], other, 9)  # a valid grid, but not this question's givens
    assert "repeats" in ps.explain_answer(np.full(81, ps.BLANK), swapped, 9)


def test_render_draws_boxes_and_render_text_colours_givens_changes_and_repeats(easy):
    q, a, _ = easy
    plain = ps.render(q[0], 9)
    assert plain.count("\n") == 10 and "-+-" in plain and "\033" not in plain
    assert ps.render_text(q[0], q[0], None, 9, color=False) == plain
    wrong = a[0].copy()
    blank = int(np.argmax(q[0] == ps.BLANK))
    wrong[blank] = 2 if wrong[blank] != 2 else 3
    coloured = ps.render_text(wrong, q[0], a[0], 9, color=True)  # one cell changed since the solution
    assert coloured.count(ps.CHANGED) == 1 and coloured.count(ps.DIM) == int((q[0] != ps.BLANK).sum())
    assert re.sub(r"\033\[[0-9;]*m", "", coloured) == ps.render(wrong, 9)
    assert ps.conflicts(wrong, 9)[blank] and not ps.conflicts(a[0], 9).any(), "the changed digit now repeats"


# ---------------------------------------------------------------------------- augmentation

@pytest.mark.parametrize("size", [4, 6, 9])
def test_augmentations_stay_valid_and_invert_exactly(size):
    q, a, _ = ps.generate(3, "easy", size, seed=1)
    rng = np.random.default_rng(0)
    for i in range(len(q)):
        for _ in range(30):
            q2, a2, transform = ps.augment(q[i], a[i], rng, size)
            assert ps.is_valid_solution(q2, a2, size)
            assert (ps.invert(q2, transform) == q[i]).all() and (ps.invert(a2, transform) == a[i]).all()


def test_transpose_is_used_only_where_boxes_are_square():
    def transposed_share(size):
        positions, _ = ps.random_transforms(np.random.default_rng(0), 400, size)
        # cell 1 is (row 0, col 1); after a transpose the new row 0 is drawn from one old column
        rows_of_new_row0 = positions[:, :size] // size
        return np.mean((rows_of_new_row0 != rows_of_new_row0[:, :1]).any(axis=1))
    assert 0.4 < transposed_share(9) < 0.6
    assert transposed_share(6) == 0


def test_augmented_groups_start_with_the_original(easy):
    q, a, _ = easy
    inputs, labels = ps.augment_groups(q[:5], a[:5], 3, np.random.default_rng(0), 9)
    assert inputs.shape == (20, 81) and inputs.dtype == np.uint8
    assert (inputs[::4] == q[:5]).all() and (labels[::4] == a[:5]).all()
    assert ps.valid_answers(inputs, labels, 9).all()
    assert len({row.tobytes() for row in inputs}) == 20


def test_symmetry_key_is_shared_by_all_augmentations(easy):
    q, a, _ = easy
    inputs, _ = ps.augment_groups(q[:10], a[:10], 20, np.random.default_rng(1), 9)
    keys = np.array(ps.symmetry_keys(inputs, 9)).reshape(10, 21)
    assert (keys == keys[:, :1]).all()
    assert len(set(keys[:, 0])) == 10


# ---------------------------------------------------------------------------- solver and rater

def test_rater_counts_zero_for_singles_and_many_for_a_famous_hard_puzzle(easy):
    q, _, ratings = easy
    assert np.median(ratings) == 0
    singles = next(ps._digits(p) for p in q if ps.rate(ps._digits(p), 9) == 0)
    assert ps.first_guesses(singles, 9) == 0 and ps.robust_rating(singles, 9) == 0
    digits = ps._digits(ps.encode_grid(INKALA, 9))
    solutions, guesses = ps.solve(digits, 9)
    assert len(solutions) == 1 and guesses >= 100
    assert ps.rate(digits, 9) == guesses
    # fewer guesses reach the first solution than the whole search tries; still a hard puzzle's count
    assert 50 <= ps.first_guesses(digits, 9) < guesses and ps.robust_rating(digits, 9) >= 50


def test_a_last_candidate_is_forced_not_a_guess():
    # Blank one cell of a full grid and a second whose row still has it: singles fill both, no guess. An
    # empty 4x4 grid: the first cell takes its first candidate (1 guess) and singles finish it, so the first
    # solution costs exactly one guess while rate counts that branch too.
    grid = ps._full_grid(4, random.Random(0))
    assert ps.first_guesses([0] + grid[1:], 4) == 0
    empty = [0] * 16
    assert ps.first_guesses(empty, 4) <= ps.solve(empty, 4, limit=1)[1]
    solutions, _ = ps.solve(empty, 4, limit=1)
    assert len(solutions) == 1 and ps.first_guesses(empty, 4) >= 1


def test_robust_rating_is_the_same_for_a_puzzle_and_its_augmentations():
    """Within the spread of the median: each form's median of 8 lies inside the quartiles of single forms."""
    puzzle = ps.encode_grid(INKALA, 9)
    rng = np.random.default_rng(0)
    singles = [ps.first_guesses(ps._digits(ps.augment(puzzle, puzzle, rng, 9)[0]), 9) for _ in range(48)]
    low, high = np.percentile(singles, [25, 75])
    for k in range(4):
        moved = ps.augment(puzzle, puzzle, rng, 9)[0]
        assert low <= ps.robust_rating(ps._digits(moved), 9, seed=k) <= high
    assert ps.robust_rating(ps._digits(puzzle), 9) == ps.robust_rating(ps._digits(puzzle), 9)  # seeded


def test_solver_finds_both_solutions_of_an_ambiguous_puzzle(easy):
    _, a, _ = easy
    digits = ps._digits(a[0])
    # Blank a rectangle x y / y x on two rows of one band: swapping its corners keeps every row,
    # column and box valid, so the puzzle has exactly two solutions.
    for r1 in range(9):
        for r2 in range(r1 + 1, r1 // 3 * 3 + 3):
            for c1 in range(9):
                for c2 in range(c1 + 1, 9):
                    x, y = digits[r1 * 9 + c1], digits[r1 * 9 + c2]
                    if digits[r2 * 9 + c1] == y and digits[r2 * 9 + c2] == x:
                        puzzle = list(digits)
                        for cell in (r1 * 9 + c1, r1 * 9 + c2, r2 * 9 + c1, r2 * 9 + c2):
                            puzzle[cell] = 0
                        assert len(ps.solve(puzzle, 9)[0]) == 2
                        return
    pytest.skip("no swappable rectangle in this grid")


# ---------------------------------------------------------------------------- generator

@pytest.mark.parametrize("level,size,low,high", [("easy", 9, 36, 40), ("medium", 9, 26, 30),
                                                 ("easy", 6, 16, 18), ("medium", 4, 5, 6)])
def test_clue_levels_have_their_givens_and_a_unique_solution(level, size, low, high):
    q, a, _ = ps.generate(6, level, size, seed=3)
    givens = (q != ps.BLANK).sum(1)
    assert ((givens >= low) & (givens <= high)).all()
    for i in range(len(q)):
        solutions, _ = ps.solve(ps._digits(q[i]), size)
        assert len(solutions) == 1 and (np.array(solutions[0]) + 1 == a[i]).all()


def test_hard_puzzles_are_minimal_and_need_a_guess():
    q, _, ratings = ps.generate(2, "hard", 9, seed=4)
    assert (ratings >= 1).all()
    for puzzle in q:
        digits = ps._digits(puzzle)
        for cell in np.flatnonzero(puzzle != ps.BLANK):
            fewer = list(digits)
            fewer[cell] = 0
            assert len(ps.solve(fewer, 9)[0]) == 2  # no given can be removed


@pytest.mark.parametrize("level", ["extreme", "diabolical"])
def test_search_levels_give_unique_puzzles_that_meet_their_thresholds(level, monkeypatch):
    # the real gates cost seconds to minutes a puzzle; lower ones run the same search in seconds
    monkeypatch.setitem(ps.SEARCH_LEVELS, level, {**ps.SEARCH_LEVELS[level], "gate": 6, "least": 4})
    monkeypatch.setitem(ps.CHUNK, level, 3)  # a work unit asks for no more than the test needs
    q, a, ratings = ps.generate(3, level, 9, seed=5)
    assert (ratings >= 4).all()
    for puzzle, answer, rating in zip(q, a, ratings):
        solutions, _ = ps.solve(ps._digits(puzzle), 9)
        assert len(solutions) == 1 and (np.array(solutions[0]) + 1 == answer).all()
        assert ps.robust_rating(ps._digits(puzzle), 9) == rating  # the recorded figure is the robust one
        # the gate was passed on the search's own forms: many fresh forms agree the puzzle is not easy
        assert np.median(ps.fast_form_guesses([ps._digits(puzzle)], 9, np.random.default_rng(1), 24)) >= 3


@pytest.mark.parametrize("level", ["hard", "extreme", "diabolical"])
def test_searched_levels_on_small_grids_are_one_line(level, tmp_path):
    _fails(["--generate", "2", "--difficulty", level, "--size", "6", "--out", str(tmp_path / "g")],
           "needs --size 9", "fix:")


def test_fast_rater_equals_the_reference_or_undercuts_it_on_a_dead_subtree():
    """fast_first_guesses closes a contradiction _propagate can miss (a cell holding two hidden singles and
    nothing else), so it may count fewer guesses, never more; on almost every form the two agree."""
    rng = random.Random(11)
    puzzles = [ps.make_puzzle("hard", 9, rng)[0] for _ in range(40)] + [ps._digits(ps.encode_grid(INKALA, 9))]
    forms = np.concatenate([ps.apply_transforms(np.repeat(np.array([p], np.uint8) + 1, 8, 0),
                                                *ps.random_transforms(np.random.default_rng(k), 8, 9))
                            for k, p in enumerate(puzzles)]).astype(np.int64) - 1
    reference = np.array([ps.first_guesses(f.tolist(), 9) for f in np.maximum(forms, 0)])
    fast = ps.fast_first_guesses(np.maximum(forms, 0), 9)
    assert (fast <= reference).all() and (fast == reference).mean() >= 0.97
    assert reference.max() >= 50  # the sample reaches deep searches (Inkala's puzzle)
    for size in (4, 6):  # other box shapes, and an empty grid (one guess then singles, 4x4)
        grids = [ps.make_puzzle("medium", size, random.Random(k))[0] for k in range(20)] + [[0] * size ** 2]
        assert list(ps.fast_first_guesses(np.array(grids), size)) == [ps.first_guesses(g, size) for g in grids]
    assert ps.fast_first_guesses(np.array([[1, 1] + [0] * 79]), 9)[0] == 0  # givens clash: no search


def test_batched_search_counts_solutions_and_returns_them():
    rng = random.Random(12)
    puzzle, solution = ps.make_puzzle("hard", 9, rng)
    fewer = list(puzzle)
    fewer[next(c for c, d in enumerate(puzzle) if d)] = 0  # a minimal puzzle less a given: two solutions
    clash = [1, 1] + [0] * 79
    _, found, solutions = ps._search_many(np.array([puzzle, fewer, clash]), 9, 2)
    assert list(found) == [1, 2, 0]
    assert ps._digits_of_masks(solutions[0][1], 9).tolist() == solution and solutions[0][0] == 0
    listed, _ = ps.solve(fewer, 9, limit=100)  # the reference: every solution
    _, found, solutions = ps._search_many(np.array([fewer]), 9, 100)
    assert found[0] == len(listed) >= 2
    assert sorted(ps._digits_of_masks(m, 9).tolist() for _, m in solutions) == sorted(listed)


def test_neighbours_are_unique_and_one_given_dropped_and_at_most_one_cell_added():
    # a child's uniqueness is read off the listed solutions of the puzzle less a given, not searched:
    # the reference solver must agree for every one
    rng = random.Random(3)
    members = [ps.make_puzzle("hard", 9, rng) for _ in range(3)]
    out = ps._neighbours(members, 9, rng)
    grown = 0
    for child, solution in out:
        solutions, _ = ps.solve(child, 9)
        assert solutions == [solution]
        moves = [sum(a != b for a, b in zip(child, m)) for m, _ in members]
        added = [sum(1 for a, b in zip(child, m) if a and not b) for m, _ in members]
        assert any(n in (1, 2) and k == n - 1 for n, k in zip(moves, added))
        grown += max(added)
    assert grown > 0 and len(out) > 3 * 2  # children came, not only unique drops


def test_generation_does_not_depend_on_the_number_of_workers():
    one = ps.generate(70, "easy", 9, seed=9, workers=1)
    two = ps.generate(70, "easy", 9, seed=9, workers=2)
    assert all((x == y).all() for x, y in zip(one, two))


def test_splits_from_one_pool_are_each_splits_own_stream_and_disjoint():
    # train and test share a pool (test's units queued before train's last one ends); each split still
    # draws its own stream, so it is what generating it alone gives, and test loses its train look-alikes
    train, test = ps.generate_splits([40, 25], "easy", 9, seed=11, workers=2)
    alone = ps.generate(40, "easy", 9, seed=11, workers=1)
    assert all((x == y).all() for x, y in zip(train, alone))
    keys = set(ps.symmetry_keys(train[0], 9))
    assert len(test[0]) == 25 and not keys & set(ps.symmetry_keys(test[0], 9))
    test_alone = ps.generate(25, "easy", 9, seed=11, workers=1, stream=1, keys=keys)
    assert all((x == y).all() for x, y in zip(test, test_alone))


def test_generated_dataset_has_disjoint_train_and_test(tmp_path):
    out = tmp_path / "gen"
    ps.main(["--generate", "30", "--num_test", "20", "--num_aug", "2", "--out", str(out), "--workers", "1"])
    train_meta, train = load_split(out, "train")
    test_meta, test = load_split(out, "test")
    check_split(train_meta, train)
    check_split(test_meta, test)
    assert train_meta["total_groups"] == 30 and train_meta["total_puzzles"] == 90
    assert test_meta["total_puzzles"] == 20  # the test split is never augmented
    train_keys = set(ps.symmetry_keys(np.asarray(train["all"]["inputs"]), 9))
    assert not train_keys & set(ps.symmetry_keys(np.asarray(test["all"]["inputs"]), 9))
    assert ps.valid_answers(np.asarray(train["all"]["inputs"]), np.asarray(train["all"]["labels"]), 9).all()
    # the generated puzzles are kept as a sudoku-extreme style CSV, readable as a --source
    again = ps.read_csv(out / "train.csv")
    assert (again["q"] == np.asarray(train["all"]["inputs"])[::3]).all()
    assert (again["rating"] == [ps.robust_rating(ps._digits(p), 9) for p in again["q"]]).all()


def test_two_solutions_while_generating_is_refused(tmp_path, monkeypatch):
    def ambiguous(difficulty, size, rng):
        return [0] * 81, ps._full_grid(9, rng)
    monkeypatch.setattr(ps, "make_puzzle", ambiguous)
    _fails(["--generate", "2", "--num_test", "1", "--out", str(tmp_path / "g"), "--workers", "1"],
           "2 solutions", "generator bug")
    assert os.listdir(tmp_path) == []


def test_puzzles_equal_up_to_augmentation_are_generated_once(monkeypatch, easy):
    q, a, _ = easy
    puzzle, solution = ps._digits(q[0]), ps._digits(a[0])

    def relabelled(difficulty, size, rng):  # always the same puzzle, digits renamed
        names = [0] + rng.sample(range(1, 10), 9)
        return [names[d] for d in puzzle], [names[d] for d in solution]
    monkeypatch.setattr(ps, "make_puzzle", relabelled)
    with pytest.raises(ps.InputError, match="only 1 distinct"):
        ps.generate(3, "easy", 9, seed=0)


def test_defaults_make_the_quick_start_dataset():
    args = ps.parse_args([])
    assert (args.generate, args.num_test, args.difficulty, args.size, args.num_aug) == (3000, 1000, "easy", 9, 100)
    assert ps.default_out(args) == os.path.join("data", "sudoku-easy")
    csv_args = ps.parse_args(["--source", "x.csv", "--subsample", "1000", "--num_aug", "1000"])
    assert ps.default_out(csv_args) == os.path.join("data", "sudoku-extreme-1k-aug-1000")


def test_every_flag_has_help_text():
    parser = ps.build_parser()
    for action in parser._actions:
        assert action.help, action.option_strings


# ---------------------------------------------------------------------------- CSV source

@pytest.fixture()
def csv_dir(tmp_path, easy):
    q, a, r = easy
    _csv(tmp_path / "train.csv", _rows(q[:30], a[:30], np.arange(30)))
    _csv(tmp_path / "test.csv", _rows(q[30:], a[30:], np.full(10, 50)))
    return tmp_path


def test_csv_directory_builds_subsampled_augmented_train_and_plain_test(csv_dir, easy):
    out = csv_dir / "out"
    ps.main(["--source", str(csv_dir), "--subsample", "8", "--num_aug", "4", "--min_difficulty", "10",
             "--out", str(out)])
    meta, sets = load_split(out, "train")
    check_split(meta, sets)
    inputs = np.asarray(sets["all"]["inputs"])
    assert meta["total_groups"] == 8 and len(inputs) == 40 and meta["vocab_size"] == 11
    originals = {row.tobytes(): i for i, row in enumerate(easy[0][:30])}
    picked = [originals[row.tobytes()] for row in inputs[::5]]
    assert all(i >= 10 for i in picked) and picked == sorted(picked)  # rating >= 10, in file order
    test_meta, test = load_split(out, "test")
    assert test_meta["total_puzzles"] == 10 and (np.asarray(test["all"]["inputs"]) == easy[0][30:]).all()


def test_a_single_csv_file_holds_out_its_test_split(csv_dir, tmp_path):
    out = tmp_path / "one"
    ps.main(["--source", str(csv_dir / "train.csv"), "--num_test", "5", "--out", str(out)])
    train_meta, train = load_split(out, "train")
    test_meta, test = load_split(out, "test")
    assert (train_meta["total_puzzles"], test_meta["total_puzzles"]) == (25, 5)
    rows = {r.tobytes() for r in np.asarray(train["all"]["inputs"])}
    assert not rows & {r.tobytes() for r in np.asarray(test["all"]["inputs"])}


BAD_ROWS = {
    "misspelled header": ("source,questoin,answer,rating", None, ":1:", "header"),
    "question of 80 characters": (None, lambda q, a: (q[:-1], a), ":3:", "80 characters"),
    "a letter in the question": (None, lambda q, a: ("x" + q[1:], a), ":3:", "'x' at position 1"),
    "answer that breaks a rule": (None, lambda q, a: (q, _swap_blanks_in_a_row(q, a)), ":3:", "repeats a digit in column"),
    "answer that changes a given": (None, lambda q, a: (q, _change_given(q, a)), ":3:", "changes the given"),
}


def _swap_blanks_in_a_row(q, a):
    """Swap two filled-in cells of one row: the row stays a permutation, two columns break."""
    for r in range(9):
        blanks = [r * 9 + c for c in range(9) if q[r * 9 + c] == "."]
        if len(blanks) >= 2:
            i, j = blanks[:2]
            a = list(a)
            a[i], a[j] = a[j], a[i]
            return "".join(a)
    raise AssertionError("no row with two blanks")


def _change_given(q, a):
    i = next(k for k, c in enumerate(q) if c != ".")
    return a[:i] + str(int(a[i]) % 9 + 1) + a[i + 1:]


@pytest.mark.parametrize("case", BAD_ROWS)
def test_bad_rows_name_the_file_the_row_and_the_fix(case, tmp_path, easy):
    header, spoil, where, what = BAD_ROWS[case]
    rows = _rows(*easy[:2])[:4]
    if spoil:
        src, q, a, r = rows[1].split(",")
        q, a = spoil(q, a)
        rows[1] = ",".join([src, q, a, r])
    path = _csv(tmp_path / "p.csv", rows, header=header or "source,question,answer,rating")
    _fails(["--source", str(path), "--num_test", "1", "--out", str(tmp_path / "o")], str(path) + where, what, "fix:")
    assert sorted(os.listdir(tmp_path)) == ["p.csv"]


def test_missing_header_empty_file_and_oversized_subsample(tmp_path, easy):
    rows = _rows(*easy[:2])[:3]
    no_header = _csv(tmp_path / "nh.csv", rows, header=None)
    _fails(["--source", str(no_header), "--num_test", "1", "--out", str(tmp_path / "o")], f"{no_header}:1:", "header")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    _fails(["--source", str(empty), "--out", str(tmp_path / "o")], str(empty), "empty", "fix:")
    fine = _csv(tmp_path / "fine.csv", rows)
    _fails(["--source", str(fine), "--num_test", "1", "--subsample", "5", "--out", str(tmp_path / "o")],
           "--subsample 5", "at most 2")
    assert not (tmp_path / "o").exists()


def test_an_output_holding_a_different_dataset_is_refused_unless_overwrite(csv_dir, tmp_path):
    out = tmp_path / "out"
    ps.main(["--source", str(csv_dir), "--out", str(out)])
    _fails(["--source", str(csv_dir), "--num_aug", "1", "--out", str(out)], str(out), "--overwrite")
    assert load_split(out, "train")[0]["total_puzzles"] == 30
    ps.main(["--source", str(csv_dir), "--num_aug", "1", "--out", str(out), "--overwrite"])
    assert load_split(out, "train")[0]["total_puzzles"] == 60


# ---------------------------------------------------------------------------- download (no network)

def test_download_restarts_when_the_server_ignores_the_range(tmp_path):
    source = tmp_path / "remote.csv"
    source.write_bytes(os.urandom(3000))
    dest = tmp_path / "raw" / "train.csv"
    dest.parent.mkdir()
    (tmp_path / "raw" / "train.csv.part").write_bytes(b"garbage")
    prepare_common.download(source.as_uri(), str(dest))  # file:// answers without a 206, like a server without ranges
    assert dest.read_bytes() == source.read_bytes()
    assert not (tmp_path / "raw" / "train.csv.part").exists()


def test_download_resumes_a_partial_file(tmp_path):
    payload = os.urandom(5000)
    dest = tmp_path / "train.csv"
    (tmp_path / "train.csv.part").write_bytes(payload[:1200])
    asked = {}

    class Partial:  # what a server answers to "Range: bytes=1200-"
        status, headers = 206, {"Content-Length": str(len(payload) - 1200)}

        def __init__(self):
            self.left = payload[1200:]

        def read(self, n):
            block, self.left = self.left[:n], self.left[n:]
            return block

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def opener(request, timeout):
        asked["range"] = request.get_header("Range")
        return Partial()

    prepare_common.download("https://example.invalid/train.csv", str(dest), urlopen=opener)
    assert asked["range"] == "bytes=1200-" and dest.read_bytes() == payload


def test_download_then_builds_from_the_fetched_files(csv_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(ps, "HF_URL", csv_dir.as_uri() + "/{}")  # a local stand-in for Hugging Face
    raw, out = tmp_path / "raw", tmp_path / "out"
    ps.main(["--download", "--raw_dir", str(raw), "--subsample", "5", "--out", str(out)])
    assert (raw / "train.csv").read_bytes() == (csv_dir / "train.csv").read_bytes()
    assert load_split(out, "train")[0]["total_puzzles"] == 5 and load_split(out, "test")[0]["total_puzzles"] == 10


def test_download_failure_is_one_line_with_the_fix(tmp_path):
    def offline(request, timeout):
        raise prepare_common.urllib.error.URLError("no network")
    with pytest.raises(ps.InputError, match="download failed.*--source DIR"):
        prepare_common.download("https://example.invalid/x.csv", str(tmp_path / "x.csv"), urlopen=offline)


# ---------------------------------------------------------------------------- train/test overlap



def test_test_puzzles_that_are_training_rows_are_refused_unless_allowed(tmp_path, easy, monkeypatch, capsys):
    q, a, _ = easy
    moved_q, moved_a, _ = ps.augment(q[7], a[7], np.random.default_rng(0), 9)
    assert (moved_q != q[7]).any()
    _csv(tmp_path / "train.csv", _rows(q[:30], a[:30]) + _rows(q[3:4], a[3:4]))  # line 32 repeats line 5
    # test lines 7 and 8 copy train lines 4 and 7; line 9 is train line 9 relabelled and permuted
    _csv(tmp_path / "test.csv", _rows(q[30:35], a[30:35]) + _rows(q[[2, 5]], a[[2, 5]]) +
         _rows(moved_q[None], moved_a[None]))
    out = tmp_path / "out"
    _fails(["--source", str(tmp_path), "--out", str(out)],
           f"{tmp_path / 'test.csv'}: 3 of 8 test puzzles also appear in the training rows",
           "(exact: 2, up to digits relabelled",
           "test line 7 = train line 4, test line 8 = train line 7, test line 9 = train line 9", "--allow_overlap")
    assert not out.exists()
    metas = helpers_data.spy_on_metas(monkeypatch)
    ps.main(["--source", str(tmp_path), "--out", str(out), "--allow_overlap"])
    assert metas[-1]["train"]["train_test_overlap"] == 3 and "train_test_overlap" not in metas[-1]["test"]
    assert load_split(out, "test")[0]["total_puzzles"] == 8
    assert "1 of 31 training puzzles repeat another training row" in capsys.readouterr().out  # reported, kept


def test_puzzles_sharing_a_symmetry_key_are_copies_only_when_a_symmetry_maps_one_onto_the_other(tmp_path, easy):
    _, a, _ = easy
    # Every full grid has the same symmetry key (each cell: 9 givens in its row, column and box, its digit
    # 9 times), so full grids as questions collide: the check must tell them apart exactly.
    assert ps.symmetry_keys(a[0], 9) == ps.symmetry_keys(a[1], 9)
    assert not ps.equivalent(a[0], a[1], 9)
    assert ps.equivalent(a[0], ps.augment(a[0], a[0], np.random.default_rng(2), 9)[0], 9)
    _csv(tmp_path / "train.csv", _rows(a[:3], a[:3]))
    _csv(tmp_path / "test.csv", _rows(a[3:5], a[3:5]))
    ps.main(["--source", str(tmp_path), "--out", str(tmp_path / "out")])
    assert load_split(tmp_path / "out", "test")[0]["total_puzzles"] == 2


@pytest.mark.parametrize("size", [4, 6])
def test_equivalence_agrees_with_trying_every_symmetry(size):
    """Brute force: a puzzle's image under every line, block and transpose move, its digits renamed in order
    of first appearance (so that relabellings compare equal), against `other` renamed the same way."""
    br, bc = ps.BOX_SHAPES[size]

    def orders(block):
        n = size // block
        return [[k * block + j for k, js in zip(order, inner) for j in js]
                for order in itertools.permutations(range(n))
                for inner in itertools.product(itertools.permutations(range(block)), repeat=n)]

    def renamed(tokens):
        names = {}
        return bytes(t if t == ps.BLANK else names.setdefault(t, len(names) + 2) for t in tokens.tolist())
    cells = np.arange(size * size).reshape(size, size)
    moves = [m[np.ix_(r, c)].reshape(-1) for m in ([cells, cells.T] if br == bc else [cells])
             for r in orders(br) for c in orders(bc)]
    q, a, _ = ps.generate(12, "easy", size, seed=2)
    rng = np.random.default_rng(3)
    for i in range(len(q)):
        moved = ps.augment(q[i], a[i], rng, size)[0]
        spoiled = moved.copy()
        spoiled[np.flatnonzero(moved != ps.BLANK)[0]] = ps.BLANK  # one given fewer: no longer a copy
        images = {renamed(q[i][move]) for move in moves}
        for other in (moved, spoiled, q[(i + 1) % len(q)], a[i]):
            assert ps.equivalent(q[i], other, size) == (renamed(other) in images)
        assert renamed(moved) in images


def test_a_single_file_holds_out_only_puzzles_without_copies(tmp_path, easy, capsys):
    q, a, _ = easy
    rng = np.random.default_rng(1)
    moved = [ps.augment(q[i], a[i], rng, 9) for i in range(10, 20)]
    # 50 rows: puzzles 0-9 twice as they are, 10-19 twice (once relabelled and permuted), 20-29 once
    rows = _rows(q[:30], a[:30]) + _rows(q[:10], a[:10]) + _rows([m[0] for m in moved], [m[1] for m in moved])
    one = _csv(tmp_path / "one.csv", rows)
    out = tmp_path / "out"
    ps.main(["--source", str(one), "--num_test", "6", "--out", str(out)])
    train = np.asarray(load_split(out, "train")[1]["all"]["inputs"])
    test = np.asarray(load_split(out, "test")[1]["all"]["inputs"])
    assert (len(train), len(test)) == (44, 6)
    assert {t.tobytes() for t in test} <= {t.tobytes() for t in q[20:30]}
    assert not any(ps.equivalent(t, r, 9) for t in test for r in train)
    printed = capsys.readouterr().out
    assert "40 of 50 rows have a copy in the file" in printed and "20 of 44 training puzzles repeat" in printed
    _fails(["--source", str(one), "--num_test", "11", "--out", str(tmp_path / "more")],
           "--num_test 11", "only 10 of the 50 rows have no copy", "fix: lower --num_test")


def test_the_overlap_check_finds_planted_copies_among_200k_puzzles(easy):
    """200k distinct puzzles (random givens on permuted grids) and 5 planted copies under random symmetries."""
    _, a, _ = easy
    rng = np.random.default_rng(4)
    _, grids = ps.augment_groups(a[:20], a[:20], 9999, rng, 9)
    keep = rng.random(grids.shape) < 25 / 81
    questions = np.where(keep, grids, ps.BLANK).astype(np.uint8)
    questions[-5:] = ps.apply_transforms(questions[:5], *ps.random_transforms(rng, 5, 9))
    exact, same = ps.puzzle_classes(questions, 9)
    assert (same[-5:] == np.arange(5)).all() and (exact[-5:] == np.arange(len(questions) - 5, len(questions))).all()
    assert len(np.unique(same)) == len(questions) - 5


# ---------------------------------------------------------------------------- unreadable input

def test_bytes_that_are_not_utf8_and_unreadable_files_are_one_line(tmp_path, easy):
    good = "\n".join(["source,question,answer,rating"] + _rows(*easy[:2])[:3]).encode() + b"\n"
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes(good[:40] + b"\xe9" + good[41:])
    _fails(["--source", str(latin1), "--num_test", "1", "--out", str(tmp_path / "o")],
           f"{latin1}: byte 40 (0xe9) is not UTF-8", "fix:")
    bom = tmp_path / "bom.csv"  # what some editors save: UTF-8 with a byte order mark, read as UTF-8
    bom.write_bytes(b"\xef\xbb\xbf" + good)
    assert len(ps.read_csv(bom)["q"]) == 3
    folder = tmp_path / "folder.csv"
    folder.mkdir()
    with pytest.raises(ps.InputError, match="folder.csv: cannot be read"):
        ps.read_csv(folder)
    assert not (tmp_path / "o").exists()
