"""prepare_common.py: the dihedral transforms on single grids and stacks, CSV blocks, the shared flag checks
and the one-line errors of the prepare scripts' main."""
import argparse

import numpy as np
import pytest

import helpers_data  # noqa: F401  (puts the repository root on sys.path)

import prepare_common as pc
from dataset import DatasetError


def test_dihedral_numbering_and_inverse_on_a_grid_and_on_a_stack():
    grid = np.arange(12).reshape(3, 4)
    expected = [grid, np.rot90(grid, 1), np.rot90(grid, 2), np.rot90(grid, 3), np.fliplr(grid), np.flipud(grid),
                grid.T, np.fliplr(np.rot90(grid, 1))]  # the official dihedral_transform
    stack = np.stack([grid, grid + 100])
    for k in range(8):
        assert np.array_equal(pc.dihedral(grid, k), expected[k])
        assert np.array_equal(pc.dihedral_inverse(pc.dihedral(grid, k), k), grid)
        assert np.array_equal(pc.dihedral(stack, k)[1], pc.dihedral(grid + 100, k))  # each grid of a stack alike


def _csv(path, n_rows):
    path.write_text("source,question,answer,rating\n" + "".join(f"s,q{i},a{i},{i}\n" for i in range(n_rows)))
    return path


def test_csv_blocks_split_the_rows_and_refuse_a_header_alone(tmp_path):
    blocks = list(pc.csv_blocks(_csv(tmp_path / "five.csv", 5), "maze", block=2))
    assert [len(b) for b in blocks] == [2, 2, 1]
    assert [line for b in blocks for line, _ in b] == [2, 3, 4, 5, 6]  # file line numbers, after the header
    assert [len(b) for b in pc.csv_blocks(_csv(tmp_path / "four.csv", 4), "maze", block=2)] == [2, 2]
    with pytest.raises(pc.InputError, match="no mazes after the header; fix: use a CSV with one maze per row"):
        list(pc.csv_blocks(_csv(tmp_path / "none.csv", 0), "maze"))


def test_ratings_and_row_shapes_name_the_line(tmp_path):
    rows = [(2, ["s", "ab", "cd", "3"]), (3, ["s", "ab", "cd", ""])]
    assert pc.csv_ratings("f.csv", rows, int, 0, "is not an integer") == [3, 0]
    with pytest.raises(pc.InputError, match=r"f.csv:4: rating 'x' is not an integer$"):
        pc.csv_ratings("f.csv", rows + [(4, ["s", "ab", "cd", "x"])], int, 0, "is not an integer")
    pc.check_row_shapes("f.csv", rows, 2, str)
    with pytest.raises(pc.InputError, match=r"f.csv:5: answer has 3$"):
        pc.check_row_shapes("f.csv", [(5, ["s", "ab", "cde", "1"])], 2, str)


def test_require_at_least_names_the_first_flag_too_low(capsys):
    p = argparse.ArgumentParser(prog="x")
    pc.require_at_least(p, argparse.Namespace(a=1, b=None), {"a": 1, "b": 5})  # unset flags are not checked
    with pytest.raises(SystemExit):
        pc.require_at_least(p, argparse.Namespace(a=0, b=0), {"a": 1, "b": 5})
    assert "--a must be at least 1" in capsys.readouterr().err


@pytest.mark.parametrize("error, message", [(pc.InputError("bad row"), "x.py: bad row"),
                                            (DatasetError("bad dir"), "x.py: bad dir"),
                                            (KeyboardInterrupt(), "x.py: interrupted; no dataset was written")])
def test_main_ends_with_one_line(error, message):
    def work():
        raise error
    with pytest.raises(SystemExit) as info:
        pc.main("x.py", work)
    assert info.value.code == message
