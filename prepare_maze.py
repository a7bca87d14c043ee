"""Mazes -> the shared dataset format (dataset.py), from the Maze-Hard CSV, a download or the generator.

    python prepare_maze.py                  # 1000 train + 1000 test generated 30x30 mazes, offline
    python prepare_maze.py --download       # the paper's Maze-Hard (sapientinc/maze-30x30-hard-1k)
    python prepare_maze.py --size 7 --braid 0 --generate 10000 --num_test 500   # config/maze_cpu.py's data

Tokens (as the official dataset builders write them): PAD 0, then '#' wall 1, ' ' open 2, 'S' start 3,
'G' goal 4, 'o' path 5 (vocab 6); seq_len = size * size. The label is the question with one shortest S-G
path drawn with 'o'. Everything a maze rule needs lives here: check_path and check_paths (is a predicted
path a real, shortest S-G path), score (train.py's maze metrics), the BFS, render, parse_maze, the
generator, and the task interface that sample.py and train.py call (parse_puzzle, check, render_text, ...).
"""
import argparse
import functools
import math
import os
import random
import subprocess
import sys
import tempfile
import time

import numpy as np
from tqdm import tqdm

import plot
import prepare_common
from dataset import read_text
from prepare_common import (CSV_HEADER, InputError, add_csv_outputs, add_csv_sources, add_csv_splits, check_row_shapes,
                            csv_blocks, csv_ratings, dihedral, from_csv_source, require_at_least)

CHARSET = "# SGo"  # token = position + 1, as the official build_maze_dataset.py
PAD, WALL, OPEN, START, GOAL, PATH = range(6)
VOCAB_SIZE = len(CHARSET) + 1
HF_REPO = "sapientinc/maze-30x30-hard-1k"
HF_URL = f"https://huggingface.co/datasets/{HF_REPO}/resolve/main/{{}}"
HARD_SIZE, HARD_MIN_PATH = 30, 110  # Maze-Hard keeps 30x30 mazes whose shortest path is longer than 110
MAX_FAILED_TRIES = 500  # mazes in a row that miss --min_path (or repeat one) before the generator gives up
_TOKEN_OF = np.zeros(128, np.uint8)  # character code -> token, 0 for anything outside CHARSET
_TOKEN_OF[[ord(c) for c in CHARSET]] = np.arange(1, VOCAB_SIZE)


# ============================================================================ grids

def encode(texts):
    """Row-major strings of '# SGo' -> (N, len) uint8 tokens; any other character becomes PAD (0)."""
    codes = np.frombuffer("".join(texts).encode("utf-32-le"), dtype=np.uint32).reshape(len(texts), -1)
    return np.where(codes < 128, _TOKEN_OF[np.minimum(codes, 127)], PAD).astype(np.uint8)


def decode_grid(tokens, size):
    """Tokens -> the row-major string of the CSV, '?' for anything that is not a cell token."""
    table = np.frombuffer(b"?" + CHARSET.encode() + b"?" * 250, dtype=np.uint8)
    return table[np.asarray(tokens).reshape(-1)[: size * size].astype(np.intp)].tobytes().decode()


def _grids(tokens, size):
    return np.asarray(tokens).reshape(-1, size, size)


def _first_cell(mask):
    """(row, column), 1-based, of the first True cell of a 2-D mask, for messages."""
    r, c = np.argwhere(mask)[0]
    return f"row {r + 1}, column {c + 1}"


# ============================================================================ rules, vectorised over mazes

def _touching(mask):
    """Per cell, how many of its 4 neighbours lie in mask (N, H, W) -> uint8."""
    m = mask.astype(np.uint8)
    out = np.zeros_like(m)
    out[:, 1:] += m[:, :-1]
    out[:, :-1] += m[:, 1:]
    out[:, :, 1:] += m[:, :, :-1]
    out[:, :, :-1] += m[:, :, 1:]
    return out


def _bit_rows(mask):
    """(N, H, W) bools -> (N, H) uint64, bit c of a row = column c (W <= 64)."""
    n, h, w = mask.shape
    if w > 64:
        raise ValueError(f"mazes wider than 64 cells are not supported (got {w})")
    packed = np.zeros((n, h, 8), np.uint8)
    packed[:, :, :(w + 7) // 8] = np.packbits(mask, axis=2, bitorder="little")
    return packed.view("<u8")[:, :, 0].astype(np.uint64)


def steps_between(passable, sources, targets):
    """Per grid of a stack (N, H, W) of bools: the fewest steps from a source to a target through
    passable cells, -1 when no target is reachable. A breadth-first search on bit rows: each layer is a
    few operations on an (N, H) uint64 array, and a grid drops out once it hits a target or its
    frontier dies, so a thousand 30x30 mazes take a few milliseconds per layer."""
    passable = np.asarray(passable, bool)
    frontier, free = _bit_rows(np.asarray(sources, bool) & passable), _bit_rows(passable)
    goal = _bit_rows(np.asarray(targets, bool))
    steps = np.where((frontier & goal).any(axis=1), 0, -1)
    rows = np.flatnonzero(steps < 0)
    frontier, free, goal, step = frontier[rows], free[rows] & ~frontier[rows], goal[rows], 0
    while len(rows):
        step += 1
        grown = frontier | (frontier << np.uint64(1)) | (frontier >> np.uint64(1))
        grown[:, 1:] |= frontier[:, :-1]
        grown[:, :-1] |= frontier[:, 1:]
        frontier = grown & free
        free &= ~frontier
        hit = (frontier & goal).any(axis=1)
        steps[rows[hit]] = step
        alive = ~hit & frontier.any(axis=1)
        if not alive.all():
            rows, frontier, free, goal = rows[alive], frontier[alive], free[alive], goal[alive]
    return steps


def check_paths(inputs, preds, size):
    """check_path for every row of (N, size*size) token arrays: (valid (N,), optimal (N,)) bools."""
    q, p = _grids(inputs, size), _grids(preds, size)
    n = len(q)
    kept = ((p == q) | ((q == OPEN) & (p == PATH))).all(axis=(1, 2))  # walls, S, G untouched; o on open cells
    start, goal = q == START, q == GOAL
    one_each = (start.sum(axis=(1, 2)) == 1) & (goal.sum(axis=(1, 2)) == 1)
    drawn = (p == PATH) | start | goal
    valid, optimal = np.zeros(n, bool), np.zeros(n, bool)
    rows = np.flatnonzero(kept & one_each)
    if len(rows):
        # The drawn cells are one simple S-G path exactly when the shortest walk from S to G over them
        # steps on all of them: a gap leaves G unreached, a branch or a separate loop leaves cells
        # off the walk, and a cell touching the path elsewhere (a chord) shortens it.
        steps = drawn[rows].sum(axis=(1, 2)) - 1  # a path through k cells takes k - 1 steps
        walked = steps_between(drawn[rows], start[rows], goal[rows])
        valid[rows] = walked == steps
        rows, steps = rows[valid[rows]], steps[valid[rows]]
        passable = (q[rows] != WALL) & (q[rows] != PAD)
        shortest = steps_between(passable, start[rows], goal[rows])
        optimal[rows] = shortest == steps
    return valid, optimal


def check_path(input_tokens, pred_tokens, size):
    """(valid, optimal) for one maze. valid: the predicted 'o' cells and S and G form one connected
    simple path from S to G through open cells only (no branch, no loop, no cell touching the path
    elsewhere, no 'o' on a wall) and the prediction keeps every wall, S and G of the question.
    optimal: valid and exactly as long as the BFS shortest path (any shortest path counts)."""
    valid, optimal = check_paths(np.reshape(input_tokens, (1, -1)), np.reshape(pred_tokens, (1, -1)), size)
    return bool(valid[0]), bool(optimal[0])


def explain_path(question, answer, size):
    """Why `answer` is not a shortest S-G path of `question`, in words; None when it is one."""
    q, a = _grids(question, size)[0], _grids(answer, size)[0]
    for char, token in (("S", START), ("G", GOAL)):
        if (q == token).sum() != 1:
            return f"the question has {(q == token).sum()} '{char}' cells, expected exactly one"
    changed = ~((a == q) | ((q == OPEN) & (a == PATH)))
    if changed.any():
        r, c = np.argwhere(changed)[0]
        was, now = decode_grid([q[r, c]], 1), decode_grid([a[r, c]], 1)
        what = "draws the path through a wall" if q[r, c] == WALL and a[r, c] == PATH else \
            f"turns {was!r} into {now!r}"
        return f"the answer {what} at row {r + 1}, column {c + 1}"
    drawn = (a == PATH) | (q == START) | (q == GOAL)
    degree = _touching(drawn[None])[0]
    for char, token in (("S", START), ("G", GOAL)):
        if degree[q == token][0] != 1:
            return f"'{char}' at {_first_cell(q == token)} touches {degree[q == token][0]} path cells, expected 1"
    if ((a == PATH) & (degree > 2)).any():
        return f"the path branches or touches itself at {_first_cell((a == PATH) & (degree > 2))}"
    if ((a == PATH) & (degree < 2)).any():
        return f"the path breaks off at {_first_cell((a == PATH) & (degree < 2))}"
    valid, optimal = check_paths(q[None], a[None], size)
    if not valid[0]:
        return "some path cells form a loop apart from the S-G path"
    if not optimal[0]:
        shortest = bfs_distances(q, size)[q == GOAL][0]
        return f"the path takes {int(drawn.sum()) - 1} steps but the shortest takes {shortest}"
    return None


SCORE_FIELDS = ("inputs", "preds")  # what train.py's evaluation keeps for score()


def score(data_dir, split, records, out_dir=None):
    """train.py's maze metrics over every evaluated example: the share of predictions that draw a
    valid S-G path, and of those as short as the BFS shortest path (a different shortest path than
    the label counts; exact accuracy would miss it). data_dir, split, out_dir are unused here (the
    scorer signature is shared with ARC)."""
    inputs, preds = np.asarray(records["inputs"]), np.asarray(records["preds"])
    if not len(inputs):
        return {"valid_path_rate": 0.0, "optimal_path_rate": 0.0}
    valid, optimal = check_paths(inputs, preds, math.isqrt(inputs.shape[1]))
    return {"valid_path_rate": float(valid.mean()), "optimal_path_rate": float(optimal.mean())}


# ============================================================================ one maze at a time

@functools.lru_cache(maxsize=None)
def _neighbours(size):
    """Per flat cell index, its 4-neighbours' flat indices in a fixed order (up, left, right, down)."""
    cells = range(size * size)
    return tuple(tuple(i + d for d, ok in ((-size, i >= size), (-1, i % size), (1, i % size < size - 1),
                                           (size, i < size * (size - 1))) if ok) for i in cells)


def _bfs(grid, size, start):
    """Distances from start through non-wall cells (-1 unreachable) and the number of shortest paths
    to each cell, capped at 2, of a flat grid (plain Python: one maze is quicker this way than numpy)."""
    neighbours = _neighbours(size)
    dist, count = [-1] * (size * size), [0] * (size * size)
    dist[start], count[start] = 0, 1
    queue = [start]
    for v in queue:  # the list grows while it is read: a FIFO queue
        d, c = dist[v] + 1, count[v]
        for u in neighbours[v]:
            if grid[u] == WALL:
                continue
            if dist[u] < 0:
                dist[u], count[u] = d, c
                queue.append(u)
            elif dist[u] == d:
                count[u] = min(2, count[u] + c)
    return dist, count


def _trace(size, dist, goal):
    """The cells strictly between S and G of one shortest path (the first neighbour one step closer)."""
    neighbours, cells, v = _neighbours(size), [], goal
    while dist[v] > 1:
        v = next(u for u in neighbours[v] if dist[u] == dist[v] - 1)
        cells.append(v)
    return cells


def bfs_distances(question_tokens, size):
    """Steps from S to every cell of one maze: (size, size) int32, -1 on walls and unreachable cells."""
    grid = np.asarray(question_tokens).reshape(-1)
    dist, _ = _bfs(grid.tolist(), size, int(np.argmax(grid == START)))
    return np.array(dist, dtype=np.int32).reshape(size, size)


def shortest_path(question_tokens, size):
    """The question with one BFS shortest S-G path drawn with 'o' (uint8 tokens), None if G is unreachable."""
    grid = np.asarray(question_tokens).reshape(-1).astype(np.uint8)
    start, goal = int(np.argmax(grid == START)), int(np.argmax(grid == GOAL))
    dist, _ = _bfs(grid.tolist(), size, start)
    if dist[goal] < 0:
        return None
    answer = grid.copy()
    answer[_trace(size, dist, goal)] = PATH
    return answer


def render(tokens, size, question=None, color=False):
    """A maze as the text parse_maze reads (one character per cell, one line per row). With color:
    walls shaded, S and G bold, the path green when it is a shortest path of `question` (if given),
    yellow when valid but longer, red when not valid; cells that change the question on red."""
    grid = _grids(tokens, size)[0]
    text = decode_grid(grid, size)
    lines = [text[r * size:(r + 1) * size] for r in range(size)]
    if not color:
        return "\n".join(lines)
    path_colour = "36"  # cyan: nothing to judge it against
    changed = np.zeros_like(grid, bool)
    if question is not None:
        q = _grids(question, size)[0]
        valid, optimal = check_path(q, grid, size)
        path_colour = "32" if optimal else "33" if valid else "31"
        changed = ~((grid == q) | ((q == OPEN) & (grid == PATH)))
    style = {"#": "100", "S": "1", "G": "1", "o": "1;" + path_colour}
    return "\n".join("".join(f"\033[41m{ch}\033[0m" if changed[r, c] else
                             f"\033[{style[ch]}m{ch}\033[0m" if ch in style else ch
                             for c, ch in enumerate(line)) for r, line in enumerate(lines))


def parse_maze(text_or_lines, path="<maze>", size=None):
    """A user's maze -> 1-D uint8 tokens (size = isqrt(len)). Rows of '#' wall, ' ' or '.' open, 'S', 'G'
    ('o' path cells are kept as tokens), one line per row; rows shorter than the maze is tall are padded
    with open cells (editors drop trailing spaces); a single line of n*n characters (the CSV's form) also
    works. With `size`, the maze must be size x size. Raises InputError naming the file, the line and the fix."""
    lines = text_or_lines.splitlines() if isinstance(text_or_lines, str) else \
        [line.rstrip("\r\n") for line in text_or_lines]
    # Trailing blank lines go, but not a last row of open cells that an editor emptied: keep as many
    # rows as the widest row is long.
    while lines and not lines[-1].strip() and len(lines) > max(len(line.rstrip()) for line in lines):
        lines.pop()
    if not any(line.strip() for line in lines):
        raise InputError(f"{path}: empty; fix: write the maze one row per line: '#' walls, ' ' or '.' open, "
                         f"one S, one G")
    if len(lines) == 1 and len(lines[0]) > 1 and math.isqrt(len(lines[0])) ** 2 == len(lines[0]):
        side = math.isqrt(len(lines[0]))
        lines = [lines[0][r * side:(r + 1) * side] for r in range(side)]
    _check_shape(lines, path, size)
    size = len(lines)
    rows = [line.ljust(size).replace(".", " ") for line in lines]
    tokens = encode(rows)
    if (tokens == PAD).any():
        r, c = np.argwhere(tokens == PAD)[0]
        raise InputError(f"{path}:{r + 1}: character {lines[r][c]!r} at column {c + 1}; fix: use only '#' for a wall, "
                         f"' ' or '.' for an open cell, 'S', 'G' and 'o'")
    for char, token in (("S", START), ("G", GOAL)):
        if (tokens == token).sum() != 1:
            raise InputError(f"{path}: {(tokens == token).sum()} '{char}' cells; fix: mark exactly one start S "
                             f"and one goal G")
    tokens = tokens.reshape(-1)
    if shortest_path(np.where(tokens == PATH, OPEN, tokens), size) is None:
        raise InputError(f"{path}: no path leads from S to G; fix: open a way through the walls")
    return tokens


def _check_shape(lines, path, size):
    """A maze is square (size x size when given); the message names the real shape, rows x columns."""
    height, width = len(lines), max(len(line) for line in lines)
    expected = f"a {size}x{size} maze" if size else "a square maze, as many columns as rows"
    if width > height:
        i = next(i for i, line in enumerate(lines) if len(line) > height)
        raise InputError(f"{path}:{i + 1}: {len(lines[i])} characters in a maze of {height} rows, so it is "
                         f"{height}x{width} (rows x columns); fix: give {expected}, one line per row")
    if width < height:  # every row short: not an editor's dropped spaces (which leave the full rows alone)
        raise InputError(f"{path}: the maze is {height}x{width} (rows x columns), {height} rows of at most {width} "
                         f"characters; fix: give {expected} (write open cells at the end of a row as '.')")
    if size is not None and height != size:
        raise InputError(f"{path}: the maze is {height}x{height}; fix: give {expected}")


# ============================================================================ the task interface
# What sample.py and train.py call, under the same names in every prepare script (score and
# SCORE_FIELDS above). `size` is what puzzle_shape returns for a model: mazes are size x size.

SOLVED_WORDS = "a shortest path from S to G"


def puzzle_shape(vocab_size, seq_len, data_dir=None):
    return math.isqrt(seq_len)


def looks_like(text):
    """True when typed text reads as a maze: walls, open cells and S (ARC ids and Sudoku grids do not)."""
    return set(text) <= set("#SGo. \t\r\n") and "S" in text


def parse_puzzle(text, where, size):
    """A drawn maze -> [(where, question tokens, None)]; a drawn path ('o') is taken out of the question."""
    tokens = parse_maze(text, path=where)
    if len(tokens) != size * size:
        side = math.isqrt(len(tokens))
        raise InputError(f"{where}: a {side}x{side} maze; this checkpoint solves {size}x{size} mazes")
    return [(where, np.where(tokens == PATH, OPEN, tokens).astype(np.uint8), None)]


def read_puzzle_file(path, size):
    """One maze drawn in a file, or a Maze-Hard CSV (source,question,answer,rating): one puzzle a row."""
    text = read_text(path)
    if not text.lstrip().lower().startswith("source,question"):
        return parse_puzzle(text, path, size)
    d = read_csv(path, size)
    return [(f"{path}:{line}", q, a) for line, q, a in zip(d["line"].tolist(), d["q"], d["a"])]


def check(questions, preds, size):
    return check_paths(questions, preds, size)[1]


def explain(question, pred, size):
    return explain_path(question, pred, size) or SOLVED_WORDS


def describe_puzzle(question, size):
    return f"{size}x{size} maze"


def render_text(pred, question, prev, size, color):
    return render(pred, size, question=question, color=color)


def render_image(pred, question, prev, size):
    """Walls dark, S green, G red, the path blue (orange where it changed since the last step)."""
    cell = max(3, min(24, 320 // size))
    colours = np.array([plot.PAPER, (60, 60, 60), plot.PAPER, plot.GREEN, plot.RED, plot.MODEL_INK,
                        (240, 140, 20)], np.uint8)
    pred = np.asarray(pred).reshape(-1).astype(np.intp)
    index = np.where(pred < len(colours) - 1, pred, 0)
    if prev is not None:
        index = np.where((pred == PATH) & (np.asarray(prev).reshape(-1) != pred), len(colours) - 1, index)
    return np.kron(colours[index].reshape(size, size, 3), np.ones((cell, cell, 1), np.uint8))


# ============================================================================ generator

def carve(size, rng, braid=0.0):
    """A random maze as a flat bytearray of WALL/OPEN: lattice cells at even (row, column), a perfect
    maze (one path between any two cells) by randomised depth-first search, whose long winding
    corridors make long paths; then each dead end is opened into a neighbour with probability `braid`,
    which adds loops. An even size leaves its last row and column as wall."""
    k = (size + 1) // 2
    grid = bytearray([WALL]) * (size * size)
    seen = bytearray(k * k)
    i, j = rng.randrange(k), rng.randrange(k)
    seen[i * k + j], grid[2 * i * size + 2 * j] = 1, OPEN
    stack, steps = [(i, j)], ((-1, 0), (0, -1), (0, 1), (1, 0))
    while stack:
        i, j = stack[-1]
        options = [(di, dj) for di, dj in steps
                   if 0 <= i + di < k and 0 <= j + dj < k and not seen[(i + di) * k + j + dj]]
        if not options:
            stack.pop()
            continue
        di, dj = rng.choice(options)
        seen[(i + di) * k + j + dj] = 1
        grid[(2 * i + di) * size + 2 * j + dj] = grid[(2 * i + 2 * di) * size + 2 * j + 2 * dj] = OPEN
        stack.append((i + di, j + dj))
    if braid:
        for i in range(k):
            for j in range(k):
                inside = [(di, dj) for di, dj in steps if 0 <= i + di < k and 0 <= j + dj < k]
                closed = [(di, dj) for di, dj in inside if grid[(2 * i + di) * size + 2 * j + dj] == WALL]
                if len(inside) - len(closed) == 1 and rng.random() < braid:
                    di, dj = rng.choice(closed)
                    grid[(2 * i + di) * size + 2 * j + dj] = OPEN
    return grid


def make_maze(size, min_path, unique_path, braid, rng):
    """((question, answer, steps) or None, the longest shortest path seen in this maze). S is a random
    open cell, else the cell farthest from it (an end of a long path); G is drawn among the cells more
    than min_path steps away (with a unique shortest path when asked)."""
    grid = carve(size, rng, braid)
    open_cells = [i for i, t in enumerate(grid) if t == OPEN]
    start, longest = rng.choice(open_cells), 0
    for _ in range(2):
        dist, count = _bfs(grid, size, start)
        longest = max(longest, max(dist))
        far = [v for v in open_cells if dist[v] > min_path and (count[v] == 1 or not unique_path)]
        if far:
            goal = rng.choice(far)
            question = np.frombuffer(bytes(grid), dtype=np.uint8).copy()
            question[start], question[goal] = START, GOAL
            answer = question.copy()
            answer[_trace(size, dist, goal)] = PATH
            return (question, answer, dist[goal]), longest
        start = max(open_cells, key=dist.__getitem__)
    return None, longest


def canonical_key(question, size):
    """The same bytes for a maze and its 8 dihedral images: generated mazes are distinct up to --aug."""
    grid = _grids(question, size)[0]
    return min(np.ascontiguousarray(dihedral(grid, k)).tobytes() for k in range(8))


def generate(total, size, min_path, unique_path=True, braid=0.0, seed=0):
    """`total` distinct mazes (none a dihedral image of another): (questions, answers, steps)."""
    rng = random.Random(seed)
    rows, keys, failed, repeats, longest = [], set(), 0, 0, 0
    with tqdm(total=total, desc=f"generate {size}x{size}", disable=None) as bar:
        while len(rows) < total:
            maze, far = make_maze(size, min_path, unique_path, braid, rng)
            longest = max(longest, far)
            key = maze and canonical_key(maze[0], size)
            if maze is None or key in keys:
                failed, repeats = failed + 1, repeats + (maze is not None)
                if failed >= MAX_FAILED_TRIES:
                    raise InputError(_give_up(len(rows), size, min_path, unique_path, longest, repeats))
                continue
            failed, repeats = 0, 0
            keys.add(key)
            rows.append(maze)
            bar.update(1)
    return (np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows]),
            np.array([r[2] for r in rows], dtype=np.int64))


def _give_up(found, size, min_path, unique_path, longest, repeats):
    if repeats > MAX_FAILED_TRIES // 2:
        return (f"only {found} distinct {size}x{size} mazes found ({MAX_FAILED_TRIES} tries in a row gave repeats); "
                f"fix: ask for fewer with --generate / --num_test, or raise --size")
    unique = "unique " if unique_path else ""
    return (f"--min_path {min_path} cannot be met on a {size}x{size} grid: {MAX_FAILED_TRIES} mazes in a row had no "
            f"{unique}shortest path longer than {min_path} steps (the longest seen: {longest}); fix: lower "
            f"--min_path below {longest} or raise --size")


def default_min_path(size):
    """Maze-Hard's 110 steps at 30x30, scaled with the grid's area for other sizes."""
    return round(HARD_MIN_PATH * size * size / (HARD_SIZE * HARD_SIZE))


# ============================================================================ CSV source

def read_csv(path, size=HARD_SIZE):
    """Questions and answers as tokens, ratings and file line numbers of a Maze-Hard style CSV.
    Every row is checked; the first bad one raises InputError naming the file, the line and the fix."""
    rows = [row for block in csv_blocks(path, "maze") for row in block]  # checked all at once, as they are few
    return _convert_rows(path, rows, size)


def _convert_rows(path, rows, size):
    check_row_shapes(path, rows, size * size, functools.partial(_size_problem, size=size))
    lines = np.array([line for line, _ in rows])
    questions = _tokens_of(path, lines, [r[1] for _, r in rows], "question", "# SG")
    answers = _tokens_of(path, lines, [r[2] for _, r in rows], "answer", CHARSET)
    _check_questions(path, lines, questions, size)
    _, optimal = check_paths(questions, answers, size)
    if not optimal.all():
        i = int(np.argmax(~optimal))
        raise InputError(f"{path}:{lines[i]}: {explain_path(questions[i], answers[i], size)}, so the answer is not a "
                         f"shortest S-G path; fix: correct the answer or drop the row")
    ratings = csv_ratings(path, rows, int, 0, "is not an integer; fix: write a whole number")
    return {"q": questions, "a": answers, "rating": np.array(ratings, dtype=np.int64), "line": lines}


def _size_problem(length, size):
    root = math.isqrt(length)
    if root * root == length and root > 1:
        return (f"{length} characters, a {root}x{root} grid, expected {size}x{size} = {size * size}; "
                f"fix: pass --size {root} or correct the row")
    if length % size == 0:
        return (f"{length} characters, {length // size} rows of {size} ({length // size}x{size}, rows x columns), "
                f"which is not square (expected {size}x{size} = {size * size}); fix: write all {size * size} cells "
                f"row by row")
    return (f"{length} characters, which is not a square grid (expected {size * size} for {size}x{size}); "
            f"fix: write all {size * size} cells row by row")


def _tokens_of(path, lines, texts, name, allowed):
    tokens = encode(texts)
    ok = np.isin(tokens, [CHARSET.index(c) + 1 for c in allowed])
    if not ok.all():
        i, j = np.argwhere(~ok)[0]
        hint = " (the question is the maze without its path)" if texts[i][j] == "o" else ""
        raise InputError(f"{path}:{lines[i]}: {name} has {texts[i][j]!r} at position {j + 1}; fix: use only "
                         f"{', '.join(repr(c) for c in allowed)}{hint}")
    return tokens


def _check_questions(path, lines, questions, size):
    """Exactly one S and one G per question, and G reachable from S."""
    for char, token in (("S", START), ("G", GOAL)):
        counts = (questions == token).sum(axis=1)
        if (counts != 1).any():
            i = int(np.argmax(counts != 1))
            raise InputError(f"{path}:{lines[i]}: question has {counts[i]} '{char}' cells; fix: exactly one start S "
                             f"and one goal G per maze")
    q = _grids(questions, size)
    reached = steps_between(q != WALL, q == START, q == GOAL) >= 0
    if not reached.all():
        i = int(np.argmax(~reached))
        raise InputError(f"{path}:{lines[i]}: the maze is unsolvable, no path leads from S to G; fix: drop the row")


def maze_classes(questions, size):
    """Per row of (N, L) question tokens, the first row holding the same maze exactly (`exact`) and up to
    the 8 dihedral views --aug trains on (`same`, by canonical_key, which is exact), both (N,) int64."""
    exact, same, first_exact, first_same = np.arange(len(questions)), np.arange(len(questions)), {}, {}
    for i, question in enumerate(questions):
        exact[i] = first_exact.setdefault(question.tobytes(), i)
        same[i] = first_same.setdefault(canonical_key(question, size), i)
    return exact, same


# ============================================================================ building the dataset

def maze_split(questions, answers, aug, size):
    """One split in the official layout: a group per maze holding its 8 dihedral images with --aug
    (the original first), each its own puzzle of one example, all with identifier 0."""
    per = 8 if aug else 1
    q, a = _grids(questions, size), _grids(answers, size)
    inputs = np.stack([dihedral(q, k) for k in range(per)], axis=1).reshape(-1, size * size)
    labels = np.stack([dihedral(a, k) for k in range(per)], axis=1).reshape(-1, size * size)
    n_puzzles = len(inputs)
    meta = {"pad_id": PAD, "ignore_label_id": PAD, "blank_identifier_id": 0, "vocab_size": VOCAB_SIZE,
            "seq_len": size * size, "num_puzzle_identifiers": 1, "task": "maze"}
    arrays = {"inputs": inputs, "labels": labels, "puzzle_identifiers": np.zeros(n_puzzles, np.int32),
              "puzzle_indices": np.arange(n_puzzles + 1, dtype=np.int32),
              "group_indices": np.arange(0, n_puzzles + 1, per, dtype=np.int32)}
    return meta, {"all": arrays}


def to_csv(questions, answers, ratings, source, size):
    """The Maze-Hard CSV text of token grids (the generator's record, readable by --source)."""
    lines = [",".join(CSV_HEADER)]
    for q, a, rating in zip(questions, answers, np.asarray(ratings).tolist()):
        lines.append(f"{source},{decode_grid(q, size)},{decode_grid(a, size)},{int(rating)}")
    return "\n".join(lines) + "\n"


def describe(name, answers, size):
    steps = (np.asarray(answers) == PATH).sum(axis=1) + 1
    walls = (np.asarray(answers) == WALL).mean()
    return (f"{name}: {len(steps)} mazes {size}x{size}, shortest path {steps.min()}-{steps.max()} steps "
            f"(median {np.median(steps):g}), {walls:.0%} walls")


def default_out(args):
    name = "maze-30x30-hard-1k" if args.source or args.download else f"maze-{args.size}x{args.size}"
    if args.subsample:
        name += f"-sub{args.subsample}"
    return os.path.join("data", name + ("-aug" if args.aug else ""))


def run(args):
    def build(train, test):  # the test split is never augmented
        return {"train": maze_split(train["q"], train["a"], args.aug, args.size),
                "test": maze_split(test["q"], test["a"], False, args.size)}, 8 if args.aug else 1
    return prepare_common.run(args, args.out or default_out(args), HF_URL, _load, build, "mazes")


def _load(args):
    """(train, test, overlap, extra files): the --source CSV rows, or generated mazes and their CSV record."""
    extra, overlap = {}, 0
    if args.source:
        read = functools.partial(read_csv, size=args.size)
        classes = functools.partial(maze_classes, size=args.size)
        train, test, overlap = from_csv_source(args, read, classes, "mazes", "a rotation or reflection")
    else:
        q, a, steps = generate(args.generate + args.num_test, args.size, args.min_path, args.unique_path,
                               args.braid, args.seed)
        train = {"q": q[:args.generate], "a": a[:args.generate], "rating": steps[:args.generate]}
        test = {"q": q[args.generate:], "a": a[args.generate:], "rating": steps[args.generate:]}
        for split, d in (("train", train), ("test", test)):
            extra[f"{split}.csv"] = to_csv(d["q"], d["a"], d["rating"], "generated", args.size)
    for split, d in (("train", train), ("test", test)):
        print(describe(split, d["a"], args.size))
    return train, test, overlap, extra


# ============================================================================ benchmark

def bench():
    """Time the README's two workloads on this machine: generating Maze-Hard-sized mazes (the command
    as a user types it, in a fresh process) and reading a 1000-maze CSV (the generator's own)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "gen")
        argv = ["--generate", "1000", "--size", "30", "--min_path", "110"]
        start = time.time()
        done = subprocess.run([sys.executable, os.path.abspath(__file__), *argv, "--out", out],
                              capture_output=True, text=True)
        seconds = time.time() - start
        if done.returncode:
            raise SystemExit(done.stderr.strip().splitlines()[-1])
        print(f"prepare_maze.py {' '.join(argv)} (+1000 test mazes): {seconds:.1f} s")
        for line in done.stdout.splitlines():
            if "mazes" in line and "steps" in line:
                print(f"    {line}")
        start = time.time()
        data = read_csv(os.path.join(out, "train.csv"), 30)
        print(f"read_csv of {len(data['line'])} mazes 30x30 (every row checked): {time.time() - start:.2f} s")
        records = {"inputs": data["q"], "preds": data["a"]}
        start = time.time()
        rates = score(None, "test", records)
        print(f"score() of {len(data['line'])} predictions: {time.time() - start:.2f} s ({rates})")


# ============================================================================ command line

GENERATOR_ONLY = ("min_path", "braid", "unique_path")


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = add_csv_sources(p, HF_REPO, "Maze-Hard", "mazes", count=1000)
    src.add_argument("--bench", action="store_true",
                     help="time generating 1000 (+1000 test) 30x30 mazes with --min_path 110, and reading "
                          "1000 of them from CSV, then exit")
    p.add_argument("--size", type=int, default=HARD_SIZE,
                   help="grid side: the generated mazes' size, or the size the CSV's grids must have "
                        "(default %(default)s)")
    p.add_argument("--min_path", type=int, metavar="STEPS",
                   help=f"generated mazes' shortest S-G path is longer than this many steps (default "
                        f"{HARD_MIN_PATH} at {HARD_SIZE}x{HARD_SIZE} as Maze-Hard, scaled by area for other sizes)")
    p.add_argument("--unique_path", action=argparse.BooleanOptionalAction, default=None,
                   help="keep only generated mazes whose shortest path is unique, so exact accuracy is fair "
                        "(default on)")
    p.add_argument("--braid", type=float, metavar="P",
                   help="probability that a dead end of a generated (perfect) maze is opened, adding loops "
                        "(default 0.1; 0 = perfect mazes, one path between any two cells)")
    add_csv_splits(p, "mazes")
    p.add_argument("--aug", action="store_true",
                   help="add the 8 dihedral images of every training maze (off by default, as in the paper); "
                        "the test split is never augmented")
    p.add_argument("--out", help="output directory (default: data/maze-<size>x<size> when generating, "
                                 "data/maze-30x30-hard-1k for a CSV; -aug appended with --aug)")
    add_csv_outputs(p, HF_REPO, "mazes", copies="the same maze, or a rotation or reflection of it")
    p.add_argument("--seed", type=int, default=0, help="seed of the generator and of the subsample")
    return p


def parse_args(argv=None):
    p = build_parser()
    args = p.parse_args(argv)
    csv_source = args.source or args.download
    if csv_source and any(getattr(args, k) is not None for k in GENERATOR_ONLY):
        p.error("--min_path, --braid and --unique_path shape generated mazes; a CSV source keeps its own")
    if not csv_source and args.subsample:
        p.error("--subsample applies to a CSV source (--source or --download)")
    args.min_path = default_min_path(args.size) if args.min_path is None else args.min_path
    args.unique_path = True if args.unique_path is None else args.unique_path
    args.braid = 0.1 if args.braid is None else args.braid
    require_at_least(p, args, {"generate": 1, "num_test": 1, "subsample": 1, "size": 2, "min_path": 0})
    if args.size > 64:
        p.error("--size must be at most 64 (the path checks hold a grid row in 64 bits)")
    if not 0 <= args.braid <= 1:
        p.error("--braid is a probability: between 0 and 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    prepare_common.main("prepare_maze.py", lambda: bench() if args.bench else run(args))


if __name__ == "__main__":
    main()
