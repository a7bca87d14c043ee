"""prepare_maze.py: path rules on hand-made mazes, generator invariants, augmentation, the three sources, bad input."""
import os
import re

import numpy as np
import pytest

import helpers_data  # (also puts the repository root on sys.path)

import prepare_common
import prepare_maze as pm
from dataset import check_split, load_split

# S to G takes 8 steps, by the top row and the right column, by the left column and the bottom row,
# or through the middle row: several shortest paths.
LADDER = ["#######",
          "#S    #",
          "# ### #",
          "#     #",
          "# ### #",
          "#    G#",
          "#######"]
# A corridor from S down to G, and apart from it a ring of open cells around one wall.
RING = ["#########",
        "#S#######",
        "# #######",
        "# ##   ##",
        "# ## # ##",
        "# ##   ##",
        "# #######",
        "#G#######",
        "#########"]


def tokens(rows):
    return pm.parse_maze(rows)


def draw(rows, cells):
    """The maze with 'o' on the (row, column) cells given."""
    grid = [list(r) for r in rows]
    for r, c in cells:
        grid[r][c] = "o"
    return tokens(["".join(g) for g in grid])


TOP_RIGHT = [(1, c) for c in range(2, 6)] + [(2, 5), (3, 5), (4, 5)]
LEFT_BOTTOM = [(2, 1), (3, 1), (4, 1)] + [(5, c) for c in range(1, 5)]


def _fails(argv, *needles):
    return helpers_data.one_line_error(pm.main, "prepare_maze.py", argv, *needles)


# ---------------------------------------------------------------------------- path rules, hand-made mazes

def test_the_bfs_label_is_a_valid_shortest_path():
    q = tokens(LADDER)
    label = pm.shortest_path(q, 7)
    assert (label == pm.PATH).sum() == 7  # 8 steps pass 7 cells between S and G
    assert pm.check_path(q, label, 7) == (True, True)
    assert pm.bfs_distances(q, 7)[5, 5] == 8 and pm.bfs_distances(q, 7)[0, 0] == -1


def test_a_different_shortest_path_counts_as_optimal():
    q, label = tokens(LADDER), pm.shortest_path(tokens(LADDER), 7)
    for cells in (TOP_RIGHT, LEFT_BOTTOM):
        other = draw(LADDER, cells)
        assert pm.check_path(q, other, 7) == (True, True)
    assert any((draw(LADDER, cells) != label).any() for cells in (TOP_RIGHT, LEFT_BOTTOM))


def test_a_longer_path_is_valid_but_not_optimal():
    # right along the top, back left through the middle row, down the left side, right along the bottom
    detour = [(1, c) for c in range(2, 6)] + [(2, 5)] + [(3, c) for c in range(1, 6)] + [(4, 1)] + \
             [(5, c) for c in range(1, 5)]
    q = tokens(LADDER)
    assert pm.check_path(q, draw(LADDER, detour), 7) == (True, False)
    assert "16 steps but the shortest takes 8" in pm.explain_path(q, draw(LADDER, detour), 7)


def test_a_path_through_a_wall_is_invalid():
    q = tokens(LADDER)
    through = [(1, 2), (1, 3), (2, 3), (3, 3), (4, 3), (5, 3), (5, 4)]  # (2, 3) and (4, 3) are walls
    assert pm.check_path(q, draw(LADDER, through), 7) == (False, False)
    assert "through a wall at row 3, column 4" in pm.explain_path(q, draw(LADDER, through), 7)


def test_a_broken_path_is_invalid():
    q = tokens(LADDER)
    broken = [c for c in TOP_RIGHT if c != (2, 5)]
    assert pm.check_path(q, draw(LADDER, broken), 7) == (False, False)
    assert "breaks off" in pm.explain_path(q, draw(LADDER, broken), 7)


def test_branches_and_loops_are_invalid():
    q = tokens(LADDER)
    branch = TOP_RIGHT + [(3, 4)]  # a spur off the right column
    assert pm.check_path(q, draw(LADDER, branch), 7) == (False, False)
    assert "branches" in pm.explain_path(q, draw(LADDER, branch), 7)
    loop = TOP_RIGHT + LEFT_BOTTOM  # both routes at once: S and G each touch two path cells
    assert pm.check_path(q, draw(LADDER, loop), 7) == (False, False)
    ring_q = tokens(RING)
    corridor = [(r, 1) for r in range(2, 7)]
    ring = [(r, c) for r in (3, 5) for c in (4, 5, 6)] + [(4, 4), (4, 6)]
    assert pm.check_path(ring_q, draw(RING, corridor), 9) == (True, True)
    # every path cell touches exactly two others, yet the ring is not part of the S-G path
    assert pm.check_path(ring_q, draw(RING, corridor + ring), 9) == (False, False)
    assert "loop apart" in pm.explain_path(ring_q, draw(RING, corridor + ring), 9)


def test_a_path_that_touches_itself_is_invalid():
    room = ["#######", "#S    #", "#     #", "#     #", "#G    #", "#######"][:5] + ["#######", "#######"]
    # S, right, right, down, left, left, down, G: each cell once, but (2, 1) touches S, so as a set of
    # cells it holds a loop and does not read as one path
    u_turn = [(1, 2), (1, 3), (2, 3), (2, 2), (2, 1), (3, 1)]
    q = tokens(room)
    assert pm.check_path(q, draw(room, u_turn), 7) == (False, False)
    assert "touches 2 path cells" in pm.explain_path(q, draw(room, u_turn), 7)
    assert pm.check_path(q, draw(room, [(2, 1), (3, 1)]), 7) == (True, True)


def test_a_prediction_must_keep_walls_start_and_goal():
    q = tokens(LADDER)
    label = pm.shortest_path(q, 7)
    for cell, token in ((8, pm.PATH), (0, pm.OPEN), (40, pm.PAD)):  # S drawn over, a wall opened, G lost
        spoiled = label.copy()
        spoiled[cell] = token
        assert pm.check_path(q, spoiled, 7) == (False, False)


def test_check_paths_agrees_with_check_path_row_by_row():
    q = tokens(LADDER)
    preds = [pm.shortest_path(q, 7), draw(LADDER, LEFT_BOTTOM), draw(LADDER, TOP_RIGHT[:-1]), q]
    valid, optimal = pm.check_paths(np.stack([q] * 4), np.stack(preds), 7)
    assert list(zip(valid, optimal)) == [pm.check_path(q, p, 7) for p in preds]


def test_steps_between_matches_single_maze_bfs():
    q, a, _ = pm.generate(20, 11, 5, braid=0.5, seed=3)
    grids = q.reshape(-1, 11, 11)
    steps = pm.steps_between(grids != pm.WALL, grids == pm.START, grids == pm.GOAL)
    expected = [pm.bfs_distances(row, 11)[row.reshape(11, 11) == pm.GOAL][0] for row in q]
    assert steps.tolist() == expected
    walled = grids.copy()
    walled[grids == pm.GOAL] = pm.WALL  # a target that cannot be entered is never reached
    assert (pm.steps_between(walled != pm.WALL, grids == pm.START, grids == pm.GOAL) == -1).all()


def test_score_rates_over_a_batch():
    q = tokens(LADDER)
    preds = [pm.shortest_path(q, 7), draw(LADDER, LEFT_BOTTOM), draw(LADDER, TOP_RIGHT[:-1]),
             draw(LADDER, [(1, c) for c in range(2, 6)] + [(2, 5)] + [(3, c) for c in range(1, 6)] + [(4, 1)] +
                  [(5, c) for c in range(1, 5)])]
    label = pm.shortest_path(q, 7).astype(np.int32)
    records = {"inputs": np.stack([q] * 4).astype(np.int32), "labels": np.stack([label] * 4),
               "preds": np.stack(preds).astype(np.int64), "puzzle_identifiers": np.zeros(4, np.int32),
               "q_halt_logits": np.zeros(4, np.float32)}
    assert pm.score("unused", "test", records) == {"valid_path_rate": 0.75, "optimal_path_rate": 0.5}


# ---------------------------------------------------------------------------- generator

def test_generated_mazes_meet_min_path_and_have_a_unique_bfs_label():
    q, a, steps = pm.generate(40, 11, 15, unique_path=True, braid=0.5, seed=1)
    assert (steps > 15).all() and ((a == pm.PATH).sum(1) + 1 == steps).all()
    valid, optimal = pm.check_paths(q, a, 11)
    assert valid.all() and optimal.all()
    for question, answer in zip(q, a):
        flat = question.tolist()
        dist, count = pm._bfs(flat, 11, flat.index(pm.START))
        assert count[flat.index(pm.GOAL)] == 1  # unique shortest path ...
        assert (pm.shortest_path(question, 11) == answer).all()  # ... so the label is the only right answer
    assert len({pm.canonical_key(x, 11) for x in q}) == 40  # distinct even up to the 8 dihedral images


def test_without_unique_path_ties_appear_and_any_shortest_label_is_kept():
    _, a, _ = pm.generate(60, 9, 4, unique_path=False, braid=1.0, seed=2)
    counts = []
    for answer in a:
        flat = np.where(answer == pm.PATH, pm.OPEN, answer).tolist()
        counts.append(pm._bfs(flat, 9, flat.index(pm.START))[1][flat.index(pm.GOAL)])
    assert max(counts) == 2  # some mazes have several shortest paths
    assert pm.check_paths(np.where(a == pm.PATH, pm.OPEN, a), a, 9)[1].all()


@pytest.mark.parametrize("size", [9, 10])
def test_carve_makes_a_perfect_maze_and_braiding_removes_dead_ends(size):
    import random
    k = (size + 1) // 2
    perfect = np.frombuffer(bytes(pm.carve(size, random.Random(0), braid=0.0)), np.uint8).reshape(1, size, size)
    open_ = perfect == pm.OPEN
    edges = int(pm._touching(open_)[open_].sum()) // 2
    assert open_.sum() == 2 * k * k - 1 and edges == open_.sum() - 1  # a spanning tree: connected, no loop
    braided = np.frombuffer(bytes(pm.carve(size, random.Random(0), braid=1.0)), np.uint8).reshape(1, size, size)
    lattice = np.zeros((1, size, size), bool)
    lattice[:, ::2, ::2] = True
    assert (pm._touching(braided == pm.OPEN)[lattice] >= 2).all()  # no dead end left among lattice cells


def test_an_impossible_min_path_stops_with_a_clear_message(tmp_path):
    message = _fails(["--generate", "5", "--num_test", "1", "--size", "5", "--min_path", "100",
                      "--out", str(tmp_path / "o")], "--min_path 100", "5x5", "fix: lower --min_path")
    longest = int(re.search(r"the longest seen: (\d+)", message).group(1))
    assert 0 < longest <= 100
    assert not (tmp_path / "o").exists()


def test_asking_for_more_mazes_than_a_tiny_grid_holds_is_refused():
    with pytest.raises(pm.InputError, match="only .* distinct 3x3 mazes"):
        pm.generate(500, 3, 0, seed=0)


def test_defaults_are_maze_hard_sized():
    args = pm.parse_args([])
    assert (args.generate, args.num_test, args.size, args.min_path, args.unique_path, args.aug) == \
        (1000, 1000, 30, 110, True, False)
    assert pm.parse_args(["--size", "15"]).min_path == 28  # 110 scaled by area
    assert pm.default_out(args) == os.path.join("data", "maze-30x30")
    assert pm.default_out(pm.parse_args(["--download", "--aug"])) == os.path.join("data", "maze-30x30-hard-1k-aug")


def test_every_flag_has_help_text():
    for action in pm.build_parser()._actions:
        assert action.help, action.option_strings


def test_generator_flags_are_refused_with_a_csv_source():
    with pytest.raises(SystemExit):
        pm.parse_args(["--source", "x.csv", "--min_path", "5"])


# ---------------------------------------------------------------------------- augmentation

def test_dihedral_transforms_invert_and_keep_paths_valid():
    q, a, _ = pm.generate(3, 9, 5, seed=4)
    grids = q.reshape(-1, 9, 9)
    images = [pm.dihedral(grids, k) for k in range(8)]
    assert len({img[0].tobytes() for img in images}) == 8  # an asymmetric maze has 8 different images
    for k in range(8):
        assert (prepare_common.dihedral_inverse(images[k], k) == grids).all()
        moved_a = pm.dihedral(a.reshape(-1, 9, 9), k).reshape(3, -1)
        assert pm.check_paths(images[k].reshape(3, -1), moved_a, 9)[1].all()
    assert (pm.dihedral(grids, 1)[0] == np.rot90(grids[0])).all()  # numbering as the official builder's


def test_aug_groups_hold_the_eight_images_original_first(tmp_path):
    out = tmp_path / "aug"
    pm.main(["--generate", "6", "--num_test", "3", "--size", "7", "--min_path", "4", "--aug", "--out", str(out)])
    meta, sets = load_split(out, "train")
    check_split(meta, sets)
    arrays = sets["all"]
    assert meta["total_groups"] == 6 and meta["total_puzzles"] == 48 and meta["mean_puzzle_examples"] == 1
    assert (np.asarray(arrays["group_indices"]) == np.arange(0, 49, 8)).all()
    inputs = np.asarray(arrays["inputs"]).reshape(6, 8, 7, 7)
    for k in range(8):
        assert (prepare_common.dihedral_inverse(inputs[:, k], k) == inputs[:, 0]).all()
    assert pm.check_paths(np.asarray(arrays["inputs"]), np.asarray(arrays["labels"]), 7)[1].all()
    assert load_split(out, "test")[0]["total_puzzles"] == 3  # the test split is never augmented


# ---------------------------------------------------------------------------- sources and format

def check_maze_dataset(out, size, n_train, n_test):
    for split, n in (("train", n_train), ("test", n_test)):
        meta, sets = load_split(out, split)
        check_split(meta, sets)
        assert (meta["task"], meta["vocab_size"], meta["seq_len"], meta["total_puzzles"]) == ("maze", 6, size * size, n)
        arrays = sets["all"]
        assert pm.check_paths(np.asarray(arrays["inputs"]), np.asarray(arrays["labels"]), size)[1].all()
        assert not (np.asarray(arrays["inputs"]) == pm.PATH).any()
    return [np.asarray(load_split(out, s)[1]["all"]["inputs"]) for s in ("train", "test")]


def test_generated_dataset_is_valid_disjoint_and_readable_again_as_csv(tmp_path):
    out = tmp_path / "gen"
    pm.main(["--generate", "20", "--num_test", "10", "--size", "9", "--out", str(out)])
    train, test = check_maze_dataset(out, 9, 20, 10)
    assert not {pm.canonical_key(x, 9) for x in train} & {pm.canonical_key(x, 9) for x in test}
    again = tmp_path / "again"
    pm.main(["--source", str(out), "--size", "9", "--out", str(again)])
    train2, test2 = check_maze_dataset(again, 9, 20, 10)
    assert (train2 == train).all() and (test2 == test).all()


@pytest.fixture(scope="module")
def csv_dir(tmp_path_factory):
    """A Maze-Hard style train.csv (12 rows) and test.csv (5 rows) of 9x9 mazes, written by to_csv."""
    q, a, steps = pm.generate(17, 9, 8, seed=5)
    root = tmp_path_factory.mktemp("csv")
    (root / "train.csv").write_text(pm.to_csv(q[:12], a[:12], steps[:12], "t", 9))
    (root / "test.csv").write_text(pm.to_csv(q[12:], a[12:], steps[12:], "t", 9))
    return root


def test_csv_directory_and_single_file_sources(csv_dir, tmp_path):
    pm.main(["--source", str(csv_dir), "--size", "9", "--subsample", "7", "--out", str(tmp_path / "dir")])
    train, _ = check_maze_dataset(tmp_path / "dir", 9, 7, 5)
    full = pm.read_csv(csv_dir / "train.csv", 9)["q"]
    assert {r.tobytes() for r in train} <= {r.tobytes() for r in full}
    pm.main(["--source", str(csv_dir / "train.csv"), "--size", "9", "--num_test", "4", "--out", str(tmp_path / "one")])
    train, test = check_maze_dataset(tmp_path / "one", 9, 8, 4)
    assert not {r.tobytes() for r in train} & {r.tobytes() for r in test}


def test_download_then_builds_from_the_fetched_files(csv_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(pm, "HF_URL", csv_dir.as_uri() + "/{}")  # a local stand-in for Hugging Face
    raw, out = tmp_path / "raw", tmp_path / "out"
    pm.main(["--download", "--size", "9", "--raw_dir", str(raw), "--out", str(out)])
    assert (raw / "test.csv").read_bytes() == (csv_dir / "test.csv").read_bytes()
    check_maze_dataset(out, 9, 12, 5)


def _spoil(rows, line, field, text):
    """rows with field 1 (question) or 2 (answer) of a data line (2 = first row) replaced."""
    parts = rows[line - 1].split(",")
    parts[field] = text
    return rows[:line - 1] + [",".join(parts)] + rows[line:]


def _put(text, size, r, c, char):
    i = r * size + c
    return text[:i] + char + text[i + 1:]


def _bad_cases(q, a):
    """name -> (how to spoil question text qt / answer text at, what the message says)."""
    path_cell = a.index("o")
    wall = q.index("#")
    s, g = q.index("S"), q.index("G")
    return {
        "not square": (lambda qt, at: (qt[:-1], at), ["not a square grid"]),
        "another size": (lambda qt, at: (qt[:49], at[:49]), ["7x7", "pass --size 7"]),
        "letter": (lambda qt, at: ("x" + qt[1:], "x" + at[1:]), ["'x' at position 1"]),
        "path in question": (lambda qt, at: (at, at), ["question has 'o'", "without its path"]),
        "two starts": (lambda qt, at: (qt[:wall] + "S" + qt[wall + 1:], at[:wall] + "S" + at[wall + 1:]),
                       ["2 'S' cells", "exactly one"]),
        "no goal": (lambda qt, at: (qt.replace("G", " "), at.replace("G", " ")), ["0 'G' cells"]),
        "broken answer": (lambda qt, at: (qt, at[:path_cell] + " " + at[path_cell + 1:]), ["not a shortest S-G path"]),
        "answer through a wall": (lambda qt, at: (qt, at[:wall] + "o" + at[wall + 1:]), ["through a wall"]),
        "unsolvable": (lambda qt, at: (_wall_in(qt, s, g), at), ["unsolvable"]),
    }


def _wall_in(text, s, g):
    """Close every open neighbour of S: G can no longer be reached."""
    cells = list(text)
    r, c = divmod(s, 9)
    for rr, cc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
        if 0 <= rr < 9 and 0 <= cc < 9 and rr * 9 + cc != g:
            cells[rr * 9 + cc] = "#"
    return "".join(cells)


def test_bad_rows_name_the_file_the_row_and_the_fix(csv_dir, tmp_path):
    rows = (csv_dir / "train.csv").read_text().splitlines()
    _, q, a, _ = rows[2].split(",")
    for name, (spoil, needles) in _bad_cases(q, a).items():
        qt, at = spoil(q, a)
        bad = _spoil(_spoil(rows, 3, 1, qt), 3, 2, at)
        path = tmp_path / f"{name.replace(' ', '_')}.csv"
        path.write_text("\n".join(bad) + "\n")
        out = tmp_path / "out"
        _fails(["--source", str(path), "--size", "9", "--num_test", "1", "--out", str(out)],
               f"{path}:3:", "fix:", *needles)
        assert not out.exists(), name


def test_a_valid_but_longer_answer_is_refused(tmp_path):
    q = pm.decode_grid(tokens(LADDER), 7)
    detour = [(1, c) for c in range(2, 6)] + [(2, 5)] + [(3, c) for c in range(1, 6)] + [(4, 1)] + \
             [(5, c) for c in range(1, 5)]
    path = tmp_path / "long.csv"
    path.write_text(f"source,question,answer,rating\nt,{q},{pm.decode_grid(draw(LADDER, detour), 7)},0\n")
    _fails(["--source", str(path), "--size", "7", "--num_test", "1", "--out", str(tmp_path / "o")],
           f"{path}:2:", "16 steps but the shortest takes 8")


def test_bad_header_empty_file_field_count_and_rating(csv_dir, tmp_path):
    rows = (csv_dir / "train.csv").read_text().splitlines()
    cases = {"header": (["source,questoin,answer,rating"] + rows[1:], ":1:", "header"),
             "fields": (rows[:2] + [rows[2] + ",extra"] + rows[3:], ":3:", "5 fields"),
             "rating": (rows[:2] + [rows[2].rsplit(",", 1)[0] + ",hard"] + rows[3:], ":3:", "not an integer")}
    for name, (lines, where, what) in cases.items():
        path = tmp_path / f"{name}.csv"
        path.write_text("\n".join(lines) + "\n")
        _fails(["--source", str(path), "--size", "9", "--num_test", "1", "--out", str(tmp_path / "o")],
               str(path) + where, what, "fix:")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    _fails(["--source", str(empty), "--out", str(tmp_path / "o")], str(empty), "empty", "fix:")
    _fails(["--source", str(tmp_path / "missing"), "--out", str(tmp_path / "o")], "not found")
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------- terminal and user files

def test_render_and_parse_round_trip_and_colour_marks_the_path():
    q = tokens(LADDER)
    label = pm.shortest_path(q, 7)
    assert (pm.parse_maze(pm.render(label, 7)) == label).all()
    assert pm.render(q, 7).splitlines() == LADDER
    coloured = pm.render(label, 7, question=q, color=True)
    assert "\033[1;32mo" in coloured and re.sub(r"\033\[[0-9;]*m", "", coloured) == pm.render(label, 7)
    through_wall = label.copy()
    through_wall[2 * 7 + 2] = pm.PATH
    assert "\033[41m" in pm.render(through_wall, 7, question=q, color=True)


def test_parse_maze_accepts_dots_stripped_lines_and_one_line_grids():
    stripped = [row.rstrip() for row in RING]  # what an editor does to trailing open cells
    dotted = [row.replace(" ", ".") for row in RING]
    expected = tokens(RING)
    assert (pm.parse_maze("\n".join(stripped) + "\n\n") == expected).all()
    assert (pm.parse_maze(dotted) == expected).all()
    assert (pm.parse_maze("".join(RING)) == expected).all()
    open_last_row = ["S#G", " # ", "   "]  # an editor turns the last row into an empty line
    assert (pm.parse_maze("S#G\n # \n\n") == tokens(open_last_row)).all()


@pytest.mark.parametrize("rows, what", [
    (LADDER[:3] + ["#S    ##"] + LADDER[4:], "8 characters in a maze of 7 rows"),
    (LADDER[:2] + ["# #x# #"] + LADDER[3:], "'x' at column 4"),
    ([LADDER[0], "#S   S#"] + LADDER[2:], "2 'S' cells"),
    (LADDER[:5] + ["#    ##"] + LADDER[6:], "0 'G' cells"),
    (["#######", "#S#   #", "###   #", "#     #", "# ### #", "#    G#", "#######"], "no path leads from S to G"),
    ([], "empty"),
    (LADDER + ["#######"], "the maze is 8x7 (rows x columns), 8 rows of at most 7 characters"),
])
def test_parse_maze_names_the_problem(rows, what):
    with pytest.raises(pm.InputError) as info:
        pm.parse_maze(rows, path="my.txt")
    assert str(info.value).startswith("my.txt") and what in str(info.value) and "fix:" in str(info.value)


# ---------------------------------------------------------------------------- speed

def test_a_thousand_30x30_mazes_are_read_and_scored(tmp_path):
    """The CSV reader and the path scorer at a real test set's size (their time: docs/measurements.md,
    never a timed assertion)."""
    q, a, steps = pm.generate(50, 30, 110, seed=6)
    reps = 20  # 1000 rows from 50 distinct mazes: reading does not care about repeats
    path = tmp_path / "big.csv"
    path.write_text(pm.to_csv(np.tile(q, (reps, 1)), np.tile(a, (reps, 1)), np.tile(steps, reps), "t", 30))
    data = pm.read_csv(path, 30)
    rates = pm.score(None, "test", {"inputs": data["q"], "preds": data["a"]})
    assert len(data["q"]) == 1000 and rates == {"valid_path_rate": 1.0, "optimal_path_rate": 1.0}


def test_a_maze_of_another_shape_names_its_rows_and_columns(tmp_path):
    with pytest.raises(pm.InputError, match=r"my.txt: the maze is 7x7; fix: give a 9x9 maze"):
        pm.parse_maze(LADDER, path="my.txt", size=9)
    with pytest.raises(pm.InputError, match=r"8x7 \(rows x columns\).*fix: give a 7x7 maze"):
        pm.parse_maze(LADDER + ["#######"], path="my.txt", size=7)
    q = pm.decode_grid(tokens(LADDER), 7)
    path = tmp_path / "tall.csv"  # a CSV row holds no line breaks: 56 cells read as rows of --size 7
    path.write_text(f"source,question,answer,rating\nt,{q + '#' * 7},{q + '#' * 7},0\n")
    _fails(["--source", str(path), "--size", "7", "--num_test", "1", "--out", str(tmp_path / "o")],
           f"{path}:2:", "56 characters, 8 rows of 7 (8x7, rows x columns)", "expected 7x7")


# ---------------------------------------------------------------------------- train/test overlap



def test_test_mazes_that_are_training_mazes_are_refused_unless_allowed(csv_dir, tmp_path, monkeypatch):
    train = pm.read_csv(csv_dir / "train.csv", 9)
    test = pm.read_csv(csv_dir / "test.csv", 9)
    turned_q, turned_a = (pm.dihedral(x[6].reshape(9, 9), 1).reshape(1, -1) for x in (train["q"], train["a"]))
    # test lines 7 and 8: train line 5 as it is, and train line 8 turned by 90 degrees
    q = np.concatenate([test["q"], train["q"][3:4], turned_q])
    a = np.concatenate([test["a"], train["a"][3:4], turned_a])
    source = tmp_path / "src"
    source.mkdir()
    (source / "train.csv").write_text((csv_dir / "train.csv").read_text())
    (source / "test.csv").write_text(pm.to_csv(q, a, np.zeros(len(q)), "t", 9))
    out = tmp_path / "out"
    _fails(["--source", str(source), "--size", "9", "--out", str(out)],
           f"{source / 'test.csv'}: 2 of 7 test mazes also appear in the training rows",
           "(exact: 1, up to a rotation or reflection: 1)", "test line 7 = train line 5, test line 8 = train line 8",
           "--allow_overlap")
    assert not out.exists()
    metas = helpers_data.spy_on_metas(monkeypatch)
    pm.main(["--source", str(source), "--size", "9", "--out", str(out), "--allow_overlap"])
    assert metas[-1]["train"]["train_test_overlap"] == 2
    check_maze_dataset(out, 9, 12, 7)


def test_a_single_maze_file_holds_out_only_mazes_without_copies(csv_dir, tmp_path, capsys):
    data = pm.read_csv(csv_dir / "train.csv", 9)
    flipped_q, flipped_a = (pm.dihedral(x[4:8].reshape(-1, 9, 9), 4).reshape(4, -1) for x in (data["q"], data["a"]))
    q = np.concatenate([data["q"], data["q"][:4], flipped_q])  # 20 rows: mazes 0-7 twice, 8-11 once
    a = np.concatenate([data["a"], data["a"][:4], flipped_a])
    one = tmp_path / "one.csv"
    one.write_text(pm.to_csv(q, a, np.zeros(len(q)), "t", 9))
    out = tmp_path / "out"
    pm.main(["--source", str(one), "--size", "9", "--num_test", "3", "--out", str(out)])
    train, test = check_maze_dataset(out, 9, 17, 3)
    assert not {pm.canonical_key(x, 9) for x in train} & {pm.canonical_key(x, 9) for x in test}
    printed = capsys.readouterr().out
    assert "16 of 20 rows have a copy in the file" in printed and "8 of 17 training mazes repeat" in printed
    _fails(["--source", str(one), "--size", "9", "--num_test", "5", "--out", str(tmp_path / "more")],
           "only 4 of the 20 rows have no copy", "fix: lower --num_test")


def test_bytes_that_are_not_utf8_are_one_line_naming_the_byte(csv_dir, tmp_path):
    good = (csv_dir / "train.csv").read_bytes()
    path = tmp_path / "latin1.csv"
    path.write_bytes(good[:100] + b"\xff" + good[101:])
    _fails(["--source", str(path), "--size", "9", "--num_test", "1", "--out", str(tmp_path / "o")],
           f"{path}: byte 100 (0xff) is not UTF-8", "fix:")
    assert not (tmp_path / "o").exists()
