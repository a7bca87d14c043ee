"""Sudoku puzzles -> the shared dataset format (dataset.py), from a CSV, a download or the generator.

    python prepare_sudoku.py                                    # 3000 easy train + 1000 test puzzles, offline
    python prepare_sudoku.py --generate 1000 --difficulty extreme --num_aug 1000
    python prepare_sudoku.py --download --subsample 1000 --num_aug 1000   # the paper's Sudoku-Extreme-1K

Tokens (as the official dataset builders write them): PAD 0, blank 1, digit d -> d + 1; vocab = size + 2,
seq_len = size * size. Everything a Sudoku rule needs lives here: the grid codec, the rules, augmentation,
the solver, its difficulty rater and the generator, and the task interface that sample.py and train.py
call (parse_puzzle, read_puzzle_file, check, explain, render_text, render_image, score, ...).
"""
import argparse
import functools
import itertools
import math
import multiprocessing
import os
import random
import signal
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
                            csv_blocks, csv_ratings, from_csv_source, require_at_least)

BOX_SHAPES = {4: (2, 2), 6: (2, 3), 9: (3, 3)}  # box rows x box columns
PAD, BLANK = 0, 1  # tokens; digit d is token d + 1
HF_REPO = "sapientinc/sudoku-extreme"
HF_URL = f"https://huggingface.co/datasets/{HF_REPO}/resolve/main/{{}}"
# Givens per difficulty for the clue-count levels, scaled from 9x9 (36-40 and 26-30 of 81 cells).
GIVENS = {9: {"easy": (36, 40), "medium": (26, 30)}, 6: {"easy": (16, 18), "medium": (12, 13)},
          4: {"easy": (7, 8), "medium": (5, 6)}}
ROBUST_FORMS = 8  # equivalent forms the robust rating takes the median over
# Search levels (extreme, diabolical): a puzzle is kept when its fast robust rating over 24 of the generator's
# own random forms reaches `gate` (more forms than the record uses, so a set's recorded figures are not the
# lucky draws it was picked by), and written when its recorded robust rating (robust_rating: 8 seeded forms)
# reaches `least`. `steps`: search nodes after which a form's fast rating stops counting (None: never).
SEARCH_LEVELS = {"extreme": {"gate": 16, "least": 5, "steps": 120},
                 "diabolical": {"gate": 62, "least": 60, "steps": None}}
SCREEN_FORMS = 8  # fast-rated forms per candidate, three times that near the gate
POPULATION = 24  # puzzles whose neighbours a search generation tries
DROPS = 10  # givens dropped per population member and generation
CHILDREN = (4, 2)  # cells added back per dropped given: with another solution's digit, with the member's
AGE = 8  # generations a puzzle stays in the population
STALL = 30  # generations without a new best or a kept puzzle before a search starts over
STRAGGLERS = 3  # searches left in a batch at which the rest is finished by the reference solver
UNIQUE_STEPS = 150  # search nodes after which the generator gives up listing a candidate's solutions
ALL_SOLUTIONS = 32  # solutions of a puzzle less a given, at most, that the generator lists to add a cell back
CHUNK = {"easy": 32, "medium": 16, "hard": 8, "extreme": 100, "diabolical": 5}  # puzzles per work unit of the generator


# ============================================================================ grids and rules

def encode_grid(text, size=None):
    """'4.1..' -> tokens (uint8): '.' or '0' is a blank, digit d is d + 1."""
    if size is not None and len(text) != size * size:
        raise ValueError(f"grid has {len(text)} characters, expected {size * size}")
    chars = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    bad = ~((chars == ord(".")) | ((chars >= ord("0")) & (chars <= ord("9"))))
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"character {text[i]!r} at position {i + 1} is not '.' or a digit")
    digits = np.where(chars == ord("."), 0, chars.astype(np.int64) - ord("0"))
    if size is not None and digits.max(initial=0) > size:
        raise ValueError(f"digit {digits.max()} does not fit a {size}x{size} grid")
    return (digits + 1).astype(np.uint8)


def decode_grid(tokens, size):
    """Tokens -> row-major string, '.' for blanks and '?' for anything that is not a cell token."""
    tokens = np.asarray(tokens).reshape(-1)[: size * size]
    return "".join("." if t == BLANK else str(t - 1) if 2 <= t <= size + 1 else "?" for t in tokens.tolist())


@functools.lru_cache(maxsize=None)
def units(size):
    """(3*size, size) cell indices of every row, column and box."""
    br, bc = BOX_SHAPES[size]
    cells = np.arange(size * size).reshape(size, size)
    boxes = [cells[r:r + br, c:c + bc].reshape(-1) for r in range(0, size, br) for c in range(0, size, bc)]
    return np.concatenate([cells, cells.T, np.stack(boxes)])


def valid_answers(questions, answers, size):
    """Per row: the answer is a full grid, every row/column/box holds each digit once, givens kept."""
    questions, answers = np.atleast_2d(questions), np.atleast_2d(answers)
    digits = answers.astype(np.int64) - 1
    filled = ((digits >= 1) & (digits <= size)).all(axis=1)
    seen = np.bitwise_or.reduce(np.left_shift(1, np.clip(digits, 0, size))[:, units(size)], axis=2)
    complete = (seen == (1 << (size + 1)) - 2).all(axis=1)
    kept = ((questions == BLANK) | (questions == answers)).all(axis=1)
    return filled & complete & kept


def is_valid_solution(question_tokens, answer_tokens, size):
    """True when answer_tokens is a complete Sudoku that keeps every given of question_tokens."""
    return bool(valid_answers(np.asarray(question_tokens).reshape(1, -1),
                              np.asarray(answer_tokens).reshape(1, -1), size)[0])


def repeats(tokens, size):
    """(3*size, size) bool, one row per row, column and box (as units): True where that unit's cell
    holds a digit that occurs in the unit again. Blanks never repeat."""
    cells = np.asarray(tokens).reshape(-1)[units(size)]
    return (cells >= 2) & ((cells[:, :, None] == cells[:, None, :]).sum(2) > 1)


def _unit_name(i, size):
    return f"{('row', 'column', 'box')[i // size]} {i % size + 1}"


def explain_answer(question, answer, size):
    """Why an answer is not a valid solution of its question, in words (for error messages)."""
    digits = np.asarray(answer).astype(np.int64) - 1
    if not ((digits >= 1) & (digits <= size)).all():
        return f"answer cell {int(np.argmax((digits < 1) | (digits > size))) + 1} is not a digit 1-{size}"
    changed = (np.asarray(question) != BLANK) & (np.asarray(question) != np.asarray(answer))
    if changed.any():
        return f"answer changes the given at cell {int(np.argmax(changed)) + 1}"
    repeated = repeats(answer, size).any(1)
    if repeated.any():
        return f"answer repeats a digit in {_unit_name(int(np.argmax(repeated)), size)}"
    return "answer is valid"


def render(tokens, size):
    """A grid as text with box rules, '.' for blanks (parse_puzzle reads it back)."""
    br, bc = BOX_SHAPES[size]
    text = decode_grid(tokens, size)
    rule = "-+-".join("-" * (2 * bc - 1) for _ in range(size // bc))
    lines = []
    for r in range(size):
        if r and r % br == 0:
            lines.append(rule)
        lines.append(" | ".join(" ".join(text[r * size + s:r * size + s + bc]) for s in range(0, size, bc)))
    return "\n".join(lines)


# ============================================================================ the task interface
# What sample.py and train.py call, under the same names in every prepare script (dataset.TASKS maps a
# task to its script). `size` is what puzzle_shape returns for a model: the grid is size x size.

SOLVED_WORDS = "the rules hold and the givens are kept"
SCORE_FIELDS = ()  # train.py's exact accuracy is the score: a valid answer keeping the givens is the answer
score = None
BOX_RULES = str.maketrans("", "", " \t\r\n|-+")  # a printed grid's rules, ignored when a grid is typed in


def sudoku_size(seq_len):
    size = math.isqrt(seq_len)
    return size if size * size == seq_len and size in BOX_SHAPES else None


def puzzle_shape(vocab_size, seq_len, data_dir=None):
    """The grid size a model of this shape solves; InputError if it is no Sudoku."""
    size = sudoku_size(seq_len)
    if size is None or vocab_size != size + 2:
        raise InputError(f"the checkpoint's shape (vocab_size={vocab_size}, seq_len={seq_len}) is no Sudoku this "
                         f"code knows (4x4, 6x6, 9x9: vocab size + 2, seq_len size*size)")
    return size


def looks_like(text):
    """True when typed text reads as a Sudoku grid (ARC task ids can be all digits too: 00576224)."""
    return set(text) <= set("0123456789.|-+ \t\r\n") and sudoku_size(len(text.translate(BOX_RULES))) is not None


def parse_puzzle(text, where, size):
    """A typed grid -> [(where, question tokens, None)]; wrong length, stray characters and givens that
    break the rules are refused."""
    return [(where, parse_question(text, size, where), None)]


def parse_question(text, size, where):
    tokens = parse_cells(text, size, where)
    repeated = repeats(tokens, size)
    if repeated.any():
        unit = int(np.argmax(repeated.any(1)))
        digit = int(np.asarray(tokens).reshape(-1)[units(size)[unit]][repeated[unit]].min()) - 1
        raise InputError(f"{where}: breaks the rules as given: digit {digit} twice in {_unit_name(unit, size)}; "
                         f"fix the givens")
    return tokens


def parse_cells(text, size, where):
    cells = text.translate(BOX_RULES)
    if len(cells) != size * size:
        raise InputError(f"{where}: {len(cells)} cells, a {size}x{size} Sudoku has {size * size}; write the grid "
                         f"row by row with '.' or '0' for a blank")
    bad = [c for c in cells if c not in ".0" + "123456789"[:size]]
    if bad:
        raise InputError(f"{where}: {bad[0]!r} at cell {cells.index(bad[0]) + 1} is not a blank ('.' or '0') "
                         f"or a digit 1-{size}")
    return encode_grid(cells.replace("0", "."), size)


def read_puzzle_file(path, size):
    """One puzzle a line, `question` or `question,answer`; a CSV header line (sudoku-extreme's
    source,question,answer,rating) picks its columns. Blank lines and # comments are skipped."""
    rows, columns = [], (0, 1)
    lines = read_text(path).splitlines()  # a BOM dropped; bytes not UTF-8: one line naming the offset
    for n, line in enumerate(lines, 1):
        fields = [s.strip() for s in line.split(",")]
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if "question" in fields:
            columns = (fields.index("question"), fields.index("answer") if "answer" in fields else None)
            continue
        where = f"{path}:{n}"
        if columns[0] >= len(fields):
            raise InputError(f"{where}: no question column (the header puts it in column {columns[0] + 1}); "
                             f"fix the line or the header")
        question = parse_question(fields[columns[0]], size, where)
        answer = fields[columns[1]] if columns[1] is not None and columns[1] < len(fields) else ""
        rows.append((where, question, parse_answer(answer, question, size, where) if answer else None))
    if not rows:
        raise InputError(f"{path}: no puzzles in it; write one grid a line (question, or question,answer)")
    return rows


def parse_answer(text, question, size, where):
    answer = parse_cells(text, size, where + " (answer)")
    if not is_valid_solution(question, answer, size):
        raise InputError(f"{where}: the answer given is not a solution ({explain_answer(question, answer, size)}); "
                         f"fix it or leave it out")
    return answer


def check(questions, preds, size):
    """Per puzzle: a full grid, each digit once per row, column and box, the givens kept."""
    return valid_answers(questions, preds, size)


def explain(question, pred, size):
    return explain_answer(question, pred, size)


def describe_puzzle(question, size):
    return f"{int((np.asarray(question) != BLANK).sum())} givens"


def conflicts(tokens, size):
    """Per cell: its digit repeats in one of its units (drawn red: wrong whatever the answer)."""
    bad = np.zeros(size * size, bool)
    bad[units(size)[repeats(tokens, size)]] = True
    return bad


DIM, CHANGED, CONFLICT, FILLED, RESET = "\033[2m", "\033[1;30;43m", "\033[1;31m", "\033[36m", "\033[0m"


def render_text(pred, question, prev, size, color):
    """render's layout, each cell painted: givens dim, cells changed since the last step highlighted,
    digits repeated in a row, column or box red."""
    text = render(pred, size)
    if not color:
        return text
    question, pred = np.asarray(question).reshape(-1), np.asarray(pred).reshape(-1)
    bad = conflicts(pred, size)
    styles = [DIM if question[i] != BLANK else CHANGED if prev is not None and prev[i] != pred[i]
              else CONFLICT if bad[i] else FILLED for i in range(size * size)]
    out, cell = [], 0
    for char in text:  # the cells are the characters that are not box rules; blanks stay plain
        if char in " |-+\n":
            out.append(char)
            continue
        out.append(char if char == "." else f"{styles[cell]}{char}{RESET}")
        cell += 1
    return "".join(out)


GIVEN_BG, GIVEN_INK, CHANGED_BG = (225, 225, 225), (90, 90, 90), (255, 230, 120)


def render_image(pred, question, prev, size):
    """The grid as an image: givens on grey, cells changed since the last step on yellow, repeats in red."""
    cell = 30
    img = np.full((size * cell + 1, size * cell + 1, 3), plot.PAPER, np.uint8)
    question, pred = np.asarray(question).reshape(-1), np.asarray(pred).reshape(-1)
    bad, text = conflicts(pred, size), decode_grid(pred, size)
    for i in range(size * size):
        y, x = (i // size) * cell, (i % size) * cell
        given, changed = question[i] != BLANK, prev is not None and prev[i] != pred[i]
        img[y:y + cell, x:x + cell] = GIVEN_BG if given else CHANGED_BG if changed else plot.PAPER
        ink = GIVEN_INK if given else plot.RED if bad[i] else plot.MODEL_INK
        if text[i] != ".":
            plot.draw_text(img, x + (cell - 9) // 2, y + (cell - 15) // 2, text[i] if text[i] != "?" else "-", ink,
                           scale=3)
    br, bc = BOX_SHAPES[size]
    for k in range(size + 1):  # thin cell lines, thick box lines
        for axis, box in ((0, br), (1, bc)):
            lo, hi = (k * cell - 1, k * cell + 1) if k % box == 0 else (k * cell, k * cell + 1)
            index = (slice(max(lo, 0), hi), slice(None)) if axis == 0 else (slice(None), slice(max(lo, 0), hi))
            img[index] = plot.INK if k % box == 0 else plot.GREY
    return img


# ============================================================================ augmentation (as the official builders)

def random_transforms(rng, count, size):
    """`count` random symmetries: digit relabelling, band/stack and row-in-band/column-in-stack
    permutations, and a transpose with p=0.5 where boxes are square (a 2x3 box forbids it).

    Returns (positions (count, L), token_maps (count, size + 2)): new[i] = token_map[old[positions[i]]]."""
    br, bc = BOX_SHAPES[size]
    rows = _line_orders(rng, count, size // br, br)
    cols = _line_orders(rng, count, size // bc, bc)
    positions = rows[:, :, None] * size + cols[:, None, :]  # new (i, j) <- old (rows[i], cols[j])
    if br == bc:
        transposed = rng.random(count) < 0.5
        positions[transposed] = (cols[:, None, :] * size + rows[:, :, None])[transposed]
    digit_perm = np.argsort(rng.random((count, size)), axis=1) + 2  # new token of digit token 2..size+1
    token_maps = np.concatenate([np.tile([PAD, BLANK], (count, 1)), digit_perm], axis=1).astype(np.uint8)
    return positions.reshape(count, size * size).astype(np.int32), token_maps


def _line_orders(rng, count, n_blocks, block):
    """Per transform, the old line shown at each new line: blocks shuffled, lines shuffled inside a block."""
    block_order = np.argsort(rng.random((count, n_blocks)), axis=1)
    inner = np.argsort(rng.random((count, n_blocks, block)), axis=2)
    return (block_order[:, :, None] * block + inner).reshape(count, n_blocks * block)


def apply_transforms(tokens, positions, token_maps):
    """Row k of `tokens` (K, L) through transform k, vectorised (no Python loop over cells)."""
    moved = np.take_along_axis(tokens, positions.astype(np.intp), axis=1)
    return np.take_along_axis(token_maps, moved.astype(np.intp), axis=1)


def augment(question, answer, rng, size):
    """One random symmetry applied to a (question, answer) pair: (question, answer, transform)."""
    positions, token_maps = random_transforms(rng, 1, size)
    pair = np.stack([np.asarray(question).reshape(-1), np.asarray(answer).reshape(-1)])
    out = apply_transforms(pair, np.repeat(positions, 2, 0), np.repeat(token_maps, 2, 0))
    return out[0], out[1], (positions[0], token_maps[0])


def invert(tokens, transform):
    """Undo `augment`'s transform on a token grid (e.g. to read a prediction in the original frame)."""
    positions, token_map = transform
    original = np.empty_like(np.asarray(tokens).reshape(-1))
    original[positions] = np.argsort(token_map)[np.asarray(tokens).reshape(-1)]
    return original


def augment_groups(questions, answers, num_aug, rng, size, chunk=64):
    """(N*(1+num_aug), L) inputs and labels, group by group: the original, then its augmentations."""
    n, length = questions.shape
    per = 1 + num_aug
    inputs = np.empty((n * per, length), np.uint8)
    labels = np.empty_like(inputs)
    for lo in tqdm(range(0, n, chunk), desc="augment", disable=None, leave=False):
        hi = min(n, lo + chunk)
        out = slice(lo * per, hi * per)
        inputs[out] = np.repeat(questions[lo:hi], per, axis=0)
        labels[out] = np.repeat(answers[lo:hi], per, axis=0)
        if num_aug:
            positions, token_maps = random_transforms(rng, (hi - lo) * num_aug, size)
            augmented = np.arange(lo * per, hi * per).reshape(hi - lo, per)[:, 1:].reshape(-1)
            inputs[augmented] = apply_transforms(inputs[augmented], positions, token_maps)
            labels[augmented] = apply_transforms(labels[augmented], positions, token_maps)
    return inputs, labels


def symmetry_keys(questions, size):
    """A key per puzzle that every augmentation of it shares: the sorted multiset, over its givens,
    of (row and column given counts as an unordered pair, box given count, count of the same digit).
    Distinct puzzles rarely collide; when they do the generator drops one, which only costs a retry."""
    return [c.tobytes() for c in _symmetry_codes(questions, size)]


def _symmetry_codes(questions, size):
    """symmetry_keys as an (N, L) int32 array, one sorted row per puzzle (int32 sums and broadcasting, as a
    CSV holds millions of rows)."""
    questions = np.atleast_2d(questions)
    n, (br, bc) = len(questions), BOX_SHAPES[size]
    given = (questions != BLANK).astype(np.int32)
    grid = given.reshape(n, size, size)
    row, col = grid.sum(2, dtype=np.int32)[:, :, None], grid.sum(1, dtype=np.int32)[:, None, :]
    box = grid.reshape(n, size, size // bc, bc).sum(3, dtype=np.int32)  # per row and stack, then per band
    box = box.reshape(n, size // br, br, -1).sum(2, dtype=np.int32)
    box = np.repeat(np.repeat(box, br, axis=1), bc, axis=2)
    where = np.arange(n)[:, None] * (size + 2) + questions  # (puzzle, token) -> a flat counter
    same = np.bincount(where.reshape(-1), minlength=n * (size + 2))[where].astype(np.int32)
    code = (((np.minimum(row, col) * 16 + np.maximum(row, col)) * 16 + box) * 16).reshape(n, -1) + same
    return np.sort(np.where(given == 1, code, -1), axis=1)


def row_hashes(rows):
    """A 64-bit FNV-1a style hash of each row of an integer array, vectorised: equal rows hash equal
    (a prefilter; matches are confirmed exactly)."""
    h = np.full(len(rows), 0xCBF29CE484222325, np.uint64)
    for column in np.ascontiguousarray(np.asarray(rows).T, dtype=np.uint64):
        h = (h ^ column) * np.uint64(0x100000001B3)  # wraps modulo 2**64, as the hash intends
    return h


def equivalent(a, b, size):
    """Is puzzle b an augmentation of puzzle a (tokens): does a symmetry of random_transforms' group
    (band/stack and row-in-band/column-in-stack permutations, a transpose where boxes are square) with a
    digit relabelling map a exactly onto b? An exhaustive search, pruned first by per-line invariants,
    then by b's fullest band alone (few candidates survive it), so distinct puzzles are told apart
    whatever symmetry_keys says."""
    br, bc = BOX_SHAPES[size]
    b = np.asarray(b).reshape(size, size)
    fullest = int(np.argmax((b != BLANK).reshape(size // br, -1).sum(1)))
    b = b[np.r_[fullest * br + np.arange(br), [r for r in range(size) if r // br != fullest]]]  # a band move
    b_rows, b_cols = _line_signatures(b, size)
    rows, cols = _line_perms(size, br), _line_perms(size, bc)
    a = np.asarray(a).reshape(size, size)
    for grid in (a, a.T) if br == bc else (a,):
        g_rows, g_cols = _line_signatures(grid, size)
        row_ok = rows[(g_rows[rows[:, :br]] == b_rows[:br]).all(axis=(1, 2))]
        col_ok = cols[(g_cols[cols] == b_cols).all(axis=(1, 2))]
        if not len(row_ok) or not len(col_ok):
            continue
        firsts, which = np.unique(row_ok[:, :br], axis=0, return_inverse=True)
        band = grid[firsts[:, None, :, None], col_ok[None, :, None, :]].reshape(-1, br * size)
        for hit in np.flatnonzero(_relabels(band, b[:br].reshape(-1), size)).tolist():
            first, c = divmod(hit, len(col_ok))
            full = row_ok[which.reshape(-1) == first]
            whole = grid[full[:, :, None], col_ok[c][None, None, :]].reshape(len(full), -1)
            if _relabels(whole, b.reshape(-1), size).any():
                return True
    return False


@functools.lru_cache(maxsize=None)
def _line_perms(size, block):
    """Every line order the augmentation can make (blocks of `block` lines permuted, lines permuted inside
    each block): (P, size), new line i <- old line perms[p, i], as _line_orders draws them."""
    inner = list(itertools.permutations(range(block)))
    return np.array([[k * block + j for k, js in zip(order, inners) for j in js]
                     for order in itertools.permutations(range(size // block))
                     for inners in itertools.product(inner, repeat=size // block)], np.intp)


def _line_signatures(grid, size):
    """Per row and per column of a (size, size) token grid, the sorted codes of its givens: given count of
    their column (for a row) or row (for a column), of their box, and how often their digit appears.
    The group's moves and relabellings carry each line's signature along with the line."""
    given = grid != BLANK
    box = given.reshape(-1)[units(size)[2 * size:]].sum(1)[_box_of(size)].reshape(size, size)
    same = np.bincount(grid.reshape(-1), minlength=size + 2)[grid]
    in_row = np.where(given, (given.sum(0)[None, :] * 16 + box) * 16 + same, -1)
    in_col = np.where(given, (given.sum(1)[:, None] * 16 + box) * 16 + same, -1)
    return np.sort(in_row, axis=1), np.sort(in_col.T, axis=1)


def _relabels(x, y, size):
    """Per row of x (K, L): does one bijection of tokens, blank to blank, map it onto y (L,)?"""
    k = np.arange(len(x))[:, None]
    y = np.broadcast_to(y, x.shape)
    forward, backward = np.zeros((len(x), size + 2), x.dtype), np.zeros((len(x), size + 2), x.dtype)
    forward[k, x], backward[k, y] = y, x  # on a clash some value wins; the checks below catch the clash
    return (((x == BLANK) == (y == BLANK)).all(1) & (forward[k, x] == y).all(1) & (backward[k, y] == x).all(1))


def puzzle_classes(questions, size, chunk=100_000):
    """Per row of (N, L) question tokens, the first row holding the same puzzle exactly (`exact`) and up to
    augmentation (`same`), both (N,) int64. Rows are grouped by a hash of symmetry_keys (vectorised);
    inside a group, rows equal as bytes are copies, and any other pair is decided by `equivalent`."""
    n = len(questions)
    exact, same = np.arange(n), np.arange(n)
    hashes = np.concatenate([row_hashes(_symmetry_codes(questions[lo:lo + chunk], size))
                             for lo in range(0, n, chunk)] or [np.zeros(0, np.uint64)])
    order = np.argsort(hashes, kind="stable")  # stable: file order inside a group
    starts = np.flatnonzero(np.r_[True, hashes[order][1:] != hashes[order][:-1]]) if n else np.zeros(0, int)
    ends = np.r_[starts[1:], n]
    for lo, hi in zip(starts[ends - starts > 1].tolist(), ends[ends - starts > 1].tolist()):
        seen, firsts = {}, []
        for i in order[lo:hi].tolist():
            key = questions[i].tobytes()
            if key in seen:
                exact[i] = seen[key]
                same[i] = same[seen[key]]
                continue
            seen[key] = i
            match = next((f for f in firsts if equivalent(questions[f], questions[i], size)), None)
            if match is None:
                firsts.append(i)
            else:
                same[i] = match
    return exact, same


@functools.lru_cache(maxsize=None)
def _box_of(size):
    box_of = np.empty(size * size, np.intp)
    for b, cells in enumerate(units(size)[2 * size:]):
        box_of[cells] = b
    return box_of


# ============================================================================ solver and difficulty rater
# Candidates are bitmasks (bit d-1 = digit d). Propagation is naked singles (a cell with one candidate
# removes it from its peers) and hidden singles (a digit with one place left in a unit goes there).

@functools.lru_cache(maxsize=None)
def _tables(size):
    cells = units(size).tolist()
    peers = tuple(tuple(sorted({p for u in cells if c in u for p in u} - {c})) for c in range(size * size))
    return tuple(map(tuple, cells)), peers, (1 << size) - 1


def _place(cand, cell, bit, peers):
    """Put digit `bit` in `cell` and chase the naked singles it creates; False on a contradiction."""
    cand[cell] = bit
    todo = [cell]
    while todo:
        c = todo.pop()
        b = cand[c]
        for p in peers[c]:
            m = cand[p]
            if m & b:
                m ^= b
                if not m:
                    return False
                cand[p] = m
                if not m & (m - 1):
                    todo.append(p)
    return True


def _propagate(cand, unit_cells, peers, full):
    """Hidden singles until nothing changes (each placement chases naked singles); False on contradiction."""
    while True:
        placed = False
        for unit in unit_cells:
            once = twice = 0
            for c in unit:
                m = cand[c]
                twice |= once & m
                once |= m
            if once != full:
                return False  # some digit has no place left in this unit
            only = once & ~twice
            if not only:
                continue
            for c in unit:
                m = cand[c] & only
                if m and cand[c] != m:
                    if m & (m - 1) or not _place(cand, c, m, peers):
                        return False
                    placed = True
        if not placed:
            return True


def _start(digits, size):
    """Candidate masks for a digit grid (0 = blank), or None if the givens already clash."""
    unit_cells, peers, full = _tables(size)
    cand = [full] * (size * size)
    for cell, d in enumerate(digits):
        if d and (not cand[cell] >> (d - 1) & 1 or not _place(cand, cell, 1 << (d - 1), peers)):
            return None
    return cand


def _search(cand, size, limit, solutions, counter, rng):
    """Depth-first search, branching on the first cell with the fewest candidates, its digits in increasing
    order (shuffled by rng). counter: [branches tried, guesses, guesses when the first solution was found];
    a guess is a branch that is not its cell's last candidate (by then the others failed, so it is forced)."""
    unit_cells, peers, full = _tables(size)
    if not _propagate(cand, unit_cells, peers, full):
        return
    best, fewest = -1, size + 1
    for c, m in enumerate(cand):
        if m & (m - 1):
            k = m.bit_count()
            if k < fewest:
                best, fewest = c, k
                if k == 2:
                    break
    if best < 0:
        if not solutions:
            counter[2] = counter[1]
        solutions.append([m.bit_length() for m in cand])
        return
    bits = [1 << i for i in range(size) if cand[best] >> i & 1]
    if rng is not None:
        rng.shuffle(bits)
    last = bits[-1]
    for bit in bits:
        counter[0] += 1
        counter[1] += bit != last
        child = cand[:]
        if _place(child, best, bit, peers):
            _search(child, size, limit, solutions, counter, rng)
            if len(solutions) >= limit:
                return


def solve(digits, size, limit=2, rng=None):
    """(up to `limit` solutions as digit lists, guesses made). digits: row-major, 0 = blank."""
    cand = _start(list(digits), size)
    solutions, counter = [], [0, 0, 0]
    if cand is not None:
        _search(cand, size, limit, solutions, counter, rng)
    return solutions, counter[0]


def rate(digits, size):
    """Difficulty = branches a backtracking solver with naked- and hidden-singles propagation tries to
    find every solution (the search that proves uniqueness), with one fixed branching order. 0 = solvable by
    singles alone. Independent of digit relabelling, but not of cell order: a generator climbing it learns
    the order (see robust_rating)."""
    return solve(digits, size, limit=2)[1]


def first_guesses(digits, size):
    """Guesses made before the first solution is found, the last candidate of a branch not counted (it is
    forced); 0 = singles alone solve it."""
    cand = _start(list(digits), size)
    counter = [0, 0, 0]
    if cand is not None:
        _search(cand, size, 1, [], counter, None)
    return counter[2]


def robust_rating(digits, size, seed=0, forms=ROBUST_FORMS):
    """The median of first_guesses over `forms` random equivalent forms (random_transforms, seeded): a
    puzzle's difficulty does not depend on how it is written down, and one fixed order can be gamed."""
    tokens = np.asarray(digits, dtype=np.uint8).reshape(1, -1) + 1
    positions, token_maps = random_transforms(np.random.default_rng(seed), forms, size)
    moved = apply_transforms(np.repeat(tokens, forms, axis=0), positions, token_maps)
    return float(np.median([first_guesses(_digits(m), size) for m in moved]))


def _digits(tokens):
    return [max(int(t) - 1, 0) for t in np.asarray(tokens).reshape(-1)]


# ============================================================================ batched solver (numpy)
# The same search as _search with first-solution counting, run on many grids at once: candidate masks are
# an (L, B) int16 array, one column per grid, so every rule is a few whole-array operations instead of a
# Python loop per cell (about 5x faster per search node). The generator rates with it; recorded ratings
# still come from first_guesses. Its propagation reaches the closure of naked and hidden singles, where a
# cell holding two hidden singles is a contradiction; _propagate misses that when the cell has no other
# candidate, and then searches a dead subtree. So fast_first_guesses <= first_guesses, equal almost always
# (a lower bound: a gate on it never lets a puzzle through that the recorded figure would fail).

def _masks(grids, size):
    """(N, L) digits (0 = blank) -> (L, N) int16 candidate masks (a given is its own bit)."""
    grids = np.asarray(grids, np.int16)
    return np.where(grids > 0, 1 << np.maximum(grids - 1, 0), (1 << size) - 1).astype(np.int16).T.copy()


def _fold(parts):
    """Bits present in some part (once) and in two or more (twice), over equal-shape arrays."""
    once, twice = parts[0] | parts[1], parts[0] & parts[1]
    for m in parts[2:]:
        twice |= once & m
        once |= m
    return once, twice


@functools.lru_cache(maxsize=None)
def _unit_tables(size):
    """(size, 3*size): the k-th cell of every unit; (L, 3): the units of every cell."""
    cells = units(size)
    of_cell = np.zeros((size * size, 3), np.intp)
    for u, members in enumerate(cells):
        of_cell[members, u // size] = u
    return np.ascontiguousarray(cells.T), of_cell


def _unit_folds(x, size):
    """(once, twice), (3*size, B), over the cells of every unit: one row gather (whole B-long rows), then
    a fold over the size cells of all units at once."""
    return _fold(list(x[_unit_tables(size)[0]]))


def _spread(values, size):
    """Per cell, the OR of its three units' values (3*size, B): (L, B)."""
    rows = values[_unit_tables(size)[1]]
    return rows[:, 0] | rows[:, 1] | rows[:, 2]


def _close(x, size):
    """Naked and hidden singles on every column of x until none changes (x is updated in place; columns
    that settle leave the working set). Returns alive (B,): False where a contradiction showed."""
    full = (1 << size) - 1
    alive = np.ones(x.shape[1], bool)
    todo, y = np.arange(x.shape[1]), x
    while len(todo):
        single = (y & (y - 1)) == 0  # arithmetic masks, not np.where: a random mask makes where slow
        once, twice = _unit_folds(y * single, size)
        dead = (y == 0).any(0) | twice.any(0)  # an empty cell, or a unit holding a digit twice
        y2 = y & ~(_spread(once, size) * ~single)
        once, twice = _unit_folds(y2, size)
        dead |= (once != full).any(0)  # a digit with no place left in a unit
        hidden = y2 & _spread(once & ~twice, size)
        dead |= (hidden & (hidden - 1)).any(0)  # one cell must take two digits
        y3 = hidden | (y2 * (hidden == 0))
        changed = (y3 != y).any(0) & ~dead
        x[:, todo] = y3
        alive[todo[dead]] = False
        todo, y = todo[changed], y3[:, changed]
    return alive


@functools.lru_cache(maxsize=None)
def _popcounts(size):
    return np.array([bin(m).count("1") for m in range(1 << size)], np.int8)


class _Stacks:
    """The depth-first stacks of many searches at once: per search and depth, the grid before a branch,
    its branching cell and the candidates of that cell not tried yet."""

    def __init__(self, n, cells, depth=24):
        self.state = np.zeros((n, depth, cells), np.int16)
        self.cell = np.zeros((n, depth), np.intp)
        self.left = np.zeros((n, depth), np.int16)
        self.top = np.zeros(n, np.intp)

    def push(self, tasks, grids, cells):
        depth = self.top[tasks]
        if depth.max() >= self.state.shape[1]:  # grow: depth is bounded by the blank cells
            self.state = np.concatenate([self.state, np.zeros_like(self.state)], 1)
            self.cell = np.concatenate([self.cell, np.zeros_like(self.cell)], 1)
            self.left = np.concatenate([self.left, np.zeros_like(self.left)], 1)
        self.state[tasks, depth] = grids
        self.cell[tasks, depth] = cells
        self.left[tasks, depth] = grids[np.arange(len(tasks)), cells]
        self.top[tasks] += 1

    def pop(self, tasks):
        """Each task's next branch: its smallest untried digit placed (a frame is dropped with its last).
        Returns the child grids (L, T) and whether each was a guess (not its cell's last candidate)."""
        depth = self.top[tasks] - 1
        left = self.left[tasks, depth]
        bit = left & -left
        left ^= bit
        self.left[tasks, depth] = left
        self.top[tasks] -= left == 0
        grids = self.state[tasks, depth]
        grids[np.arange(len(tasks)), self.cell[tasks, depth]] = bit
        return grids.T.copy(), left != 0


def _search_many(grids, size, limit=1, steps=None):
    """_search on every grid (N, L) at once, the first cell with fewest candidates branched in increasing
    digit order: (guesses before the first solution, solutions found up to `limit`, [(grid index, solution
    masks)] in the order found). A grid whose givens clash has 0 solutions and 0 guesses. With `steps`, a
    search still running after that many nodes is given up: its solution count is -1 (unknown) and its
    first-solution guesses, if no solution came yet, are those made so far (a lower bound)."""
    n, cells = len(grids), size * size
    guesses, first = np.zeros(n, np.int64), np.zeros(n, np.int64)
    found, solutions = np.zeros(n, np.int64), []
    stacks, pop = _Stacks(n, cells), _popcounts(size)
    tasks, x = np.arange(n), _masks(grids, size)
    while True:
        alive = _close(x, size)
        grids_t = x.T
        open_cell = (grids_t & (grids_t - 1)) != 0
        solved = alive & ~open_cell.any(1)
        done = tasks[solved]
        first[done[found[done] == 0]] = guesses[done[found[done] == 0]]
        found[done] += 1
        solutions.extend(zip(done.tolist(), grids_t[solved]))
        branch = alive & ~solved
        if branch.any():
            counts = np.where(open_cell[branch], pop[grids_t[branch]], size + 1)
            stacks.push(tasks[branch], grids_t[branch], np.argmin(counts, axis=1))  # argmin: the first
        tasks = np.flatnonzero((found >= 0) & (found < limit) & (stacks.top > 0))
        if steps is not None:
            steps -= 1
            if steps <= 0:  # guesses so far: a lower bound of the first-solution count
                first[tasks[found[tasks] == 0]] = guesses[tasks[found[tasks] == 0]]
                found[tasks] = -1
                return first, found, solutions
        if len(tasks) <= STRAGGLERS:
            return _finish_in_python(grids, size, limit, tasks, first, found, solutions)
        x, guess = stacks.pop(tasks)
        guesses[tasks] += guess


def _finish_in_python(grids, size, limit, tasks, first, found, solutions):
    """The last few searches of a batch, redone from the start by _search: a step costs the batch's
    whole-array overhead however few searches are left, so a long tail is cheaper one by one."""
    redo = set(tasks.tolist())
    solutions = [(i, masks) for i, masks in solutions if i not in redo]
    for i in sorted(redo):
        cand, counter, found_i = _start([int(d) for d in grids[i]], size), [0, 0, 0], []
        if cand is not None:
            _search(cand, size, limit, found_i, counter, None)
        first[i], found[i] = counter[2], len(found_i)
        solutions.extend((i, np.left_shift(1, np.array(s, np.int16) - 1).astype(np.int16)) for s in found_i)
    return first, found, solutions


def _digits_of_masks(masks, size):
    """Solved masks (..., L) -> digits."""
    return np.log2(np.maximum(masks, 1)).round().astype(np.int64) + 1


def fast_first_guesses(grids, size, steps=None):
    """first_guesses of every grid (N, L) at once (see the section comment: equal but for a rare dead
    subtree that _propagate searches, so never more). With `steps`, a search is cut after that many
    nodes and counts the guesses made so far: still a lower bound, and the long searches are the costly
    ones."""
    return _search_many(np.asarray(grids).reshape(-1, size * size), size, 1, steps)[0]


def fast_form_guesses(puzzles, size, rng, forms, steps=None):
    """fast_first_guesses (cut after `steps` nodes) of `forms` random forms (numpy Generator rng) of every
    puzzle (N, L digits): (N, forms)."""
    tokens = np.repeat(np.asarray(puzzles, np.uint8).reshape(len(puzzles), -1) + 1, forms, axis=0)
    moved = apply_transforms(tokens, *random_transforms(rng, len(tokens), size)).astype(np.int16) - 1
    return fast_first_guesses(np.maximum(moved, 0), size, steps).reshape(len(puzzles), forms)


# ============================================================================ generator

def _full_grid(size, rng):
    """A random solution grid: the boxes on the diagonal share no row or column, so they are filled
    with free permutations first, which leaves the search little to do."""
    br, bc = BOX_SHAPES[size]
    while True:
        grid = [0] * (size * size)
        for b in range(min(size // br, size // bc)):
            digits = rng.sample(range(1, size + 1), size)
            for k, d in enumerate(digits):
                grid[(b * br + k // bc) * size + b * bc + k % bc] = d
        solutions, _ = solve(grid, size, limit=1, rng=rng)
        if solutions:  # always for 9x9; small grids can paint themselves into a corner
            return solutions[0]


def _forced(puzzle, cell, digit, size):
    """Cheap sufficient test for `_keeps_unique`: the other givens in the cell's row, column and box
    already rule out every other digit (naked single)."""
    seen = 0
    for p in _tables(size)[1][cell]:
        seen |= 1 << puzzle[p]
    return seen | 1 | (1 << digit) == (1 << (size + 1)) - 1


def _keeps_unique(puzzle, cell, digit, size):
    """Would `puzzle` without `cell` still have one solution? (no solution may put another digit there)"""
    if _forced(puzzle, cell, digit, size):
        return True
    puzzle[cell] = 0
    cand = _start(puzzle, size)
    puzzle[cell] = digit
    cand[cell] &= ~(1 << (digit - 1))
    found = []
    _search(cand, size, 1, found, [0, 0, 0], None)
    return not found


def _dig(solution, size, rng, stop_at=0):
    """Remove givens in random order while the solution stays unique, until `stop_at` givens are left
    (0: until no given can go, i.e. a minimal puzzle). Removal only ever adds solutions, so one pass
    over the cells is enough for minimality."""
    puzzle = list(solution)
    order = list(range(size * size))
    rng.shuffle(order)
    left = size * size
    for cell in order:
        if left == stop_at:
            break
        if _keeps_unique(puzzle, cell, puzzle[cell], size):
            puzzle[cell] = 0
            left -= 1
    return puzzle


def _neighbours(members, size, rng):
    """Unique puzzles one move from the members (puzzle, solution): drop a given (kept if still unique);
    otherwise list every solution of what is left (when there are fewer than ALL_SOLUTIONS, found within
    UNIQUE_STEPS search nodes) and add back one cell whose digit in one of them is in no other, which
    leaves that one the only solution: the member's own (the same grid) or another (a new solution
    grid). With every solution listed, a child's uniqueness is known without a search of its own.
    Neighbours of hard puzzles tend to be hard, and the solution grid may drift, so the search is not
    tied to one grid."""
    drops = []
    for puzzle, solution in members:
        givens = [c for c, d in enumerate(puzzle) if d]
        for cell in rng.sample(givens, min(DROPS, len(givens))):
            fewer = list(puzzle)
            fewer[cell] = 0
            drops.append((fewer, solution, cell))
    _, found, solutions = _search_many(np.array([d for d, _, _ in drops]), size, ALL_SOLUTIONS, UNIQUE_STEPS)
    listed = {}
    for i, masks in solutions:
        listed.setdefault(i, []).append(masks)
    out = []
    for i, (fewer, solution, dropped) in enumerate(drops):
        if found[i] == 1:
            out.append((fewer, solution))
        if not 2 <= found[i] < ALL_SOLUTIONS:
            continue  # unique, given up, or too many solutions to list
        grids = _digits_of_masks(np.array(listed[i]), size)  # (k, L): every solution of `fewer`
        lonely = ((grids[:, None] == grids[None]).sum(1) == 1) & (np.array(fewer) == 0)  # digit in no other
        own = [tuple(g) for g in grids.tolist()].index(tuple(solution))
        pairs = [(j, c) for j, c in zip(*np.nonzero(lonely)) if j != own]
        picks = rng.sample(pairs, min(CHILDREN[0], len(pairs)))
        cells = [c for c in np.flatnonzero(lonely[own]).tolist() if c != dropped]  # not the member again
        picks += [(own, c) for c in rng.sample(cells, min(CHILDREN[1], len(cells)))]
        for j, c in picks:
            child = list(fewer)
            child[c] = int(grids[j, c])
            out.append((child, grids[j].tolist()))
    return out


def _screen(puzzles, size, nrng, level):
    """Fast robust ratings on the generator's own random forms: the median over SCREEN_FORMS forms, or over
    3 * SCREEN_FORMS for a puzzle within 3 of the level's gate after the first ones (a median of 8 spreads
    widely, and the best of many candidates is mostly a lucky draw of forms, not a hard puzzle). A form's
    search is cut at the level's `steps` nodes: the scores are lower bounds, and an extreme search does not
    pay for climbing far past its gate."""
    gate, steps = SEARCH_LEVELS[level]["gate"], SEARCH_LEVELS[level]["steps"]
    guesses = fast_form_guesses(puzzles, size, nrng, SCREEN_FORMS, steps)
    scores = np.median(guesses, axis=1)
    close = np.flatnonzero(scores >= gate - 3)
    if len(close):
        more = fast_form_guesses([puzzles[i] for i in close], size, nrng, 2 * SCREEN_FORMS, steps)
        scores[close] = np.median(np.concatenate([guesses[close], more], axis=1), axis=1)
    return scores


def _seeds(size, rng):
    """A fresh population: random minimal puzzles (POPULATION * 2, the better half kept by the caller)."""
    members = []
    for _ in range(2 * POPULATION):
        solution = _full_grid(size, rng)
        members.append((_dig(solution, size, rng), solution))
    return members


def _evolve(level, size, rng, count):
    """A population search: each generation rates the unique neighbours of the POPULATION best-scored
    puzzles and keeps every puzzle whose score reaches the level's `gate` and whose recorded robust rating
    reaches its `least`. A member leaves after AGE generations (its neighbourhood is mostly tried by then,
    and a population that never changes finds nothing new); after STALL generations with neither a new
    best score nor a kept puzzle the search starts over from new minimal puzzles. Returns up to `count`
    (puzzle, solution, recorded rating) in the order found."""
    gate, least = SEARCH_LEVELS[level]["gate"], SEARCH_LEVELS[level]["least"]
    nrng = np.random.default_rng(rng.getrandbits(64))
    kept, population, seen, best, stall = [], [], set(), -1.0, STALL
    while len(kept) < count:
        if stall >= STALL or not population:
            fresh, population, best, stall = _seeds(size, rng), [], -1.0, 0
        else:
            fresh = [c for c in _neighbours([(p, s) for _, _, _, p, s in population], size, rng)
                     if tuple(c[0]) not in seen]
        seen.update(tuple(p) for p, _ in fresh)
        scores = _screen([p for p, _ in fresh], size, nrng, level).tolist() if fresh else []
        stall += 1
        for score, (puzzle, solution) in zip(scores, fresh):
            if score >= gate and len(kept) < count:
                rating = robust_rating(puzzle, size)  # the recorded figure: the reference rater, seeded forms
                if rating >= least:
                    kept.append((puzzle, solution, rating))
                    stall = 0
            if score > best:
                best, stall = score, 0
        ranked = [(s, rng.random(), 0, p, sol) for s, (p, sol) in zip(scores, fresh)]  # random tie-break
        older = [(s, r, age + 1, p, sol) for s, r, age, p, sol in population if age + 1 < AGE]
        population = sorted(older + ranked, key=lambda m: m[:2], reverse=True)[:POPULATION]
    return kept


def make_puzzle(difficulty, size, rng):
    """One (puzzle, solution) of a clue level or `hard`, as digit lists (0 = blank)."""
    while True:
        solution = _full_grid(size, rng)
        if difficulty in ("easy", "medium"):
            target = rng.randint(*GIVENS[size][difficulty])
            puzzle = _dig(solution, size, rng, stop_at=target)
            if sum(1 for d in puzzle if d) == target:
                return puzzle, solution
            continue  # went minimal above the target; rare, try another grid
        puzzle = _dig(solution, size, rng)
        if rate(puzzle, size) >= 1:
            return puzzle, solution


def _candidates(difficulty, size, rng, count):
    """A batch of (puzzle, solution, recorded rating or None): one puzzle of a clue level or `hard`, or
    `count` of a search level."""
    if difficulty not in SEARCH_LEVELS:
        return [(*make_puzzle(difficulty, size, rng), None)]
    return _evolve(difficulty, size, rng, count)


def _generate_chunk(job):
    """A work unit: `count` puzzles from their own seed, so results do not depend on the worker count.
    Rows: (puzzle, solution, robust rating), every puzzle proven unique by the reference solver."""
    difficulty, size, seed, index, count = job
    rng = random.Random(seed * 1_000_003 + index)
    rows = []
    while len(rows) < count:
        for puzzle, solution, rating in _candidates(difficulty, size, rng, count - len(rows)):
            solutions, _ = solve(puzzle, size)
            if len(solutions) != 1 or solutions[0] != solution:
                raise InputError(f"generated {difficulty} puzzle {''.join(map(str, puzzle))} has "
                                 f"{len(solutions)} solutions; this is a generator bug, please report it")
            rows.append((puzzle, solution, robust_rating(puzzle, size) if rating is None else rating))
    return rows[:count]


def _pool(workers):
    """A process pool whose threads and workers start with SIGINT blocked: Ctrl-C is for the main
    thread, which terminates the pool (a worker interrupted while it holds the pool's queue lock would
    leave the others, and terminate, waiting on it)."""
    unblocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        return multiprocessing.Pool(workers)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, unblocked)


def _results(pool, jobs):
    """_generate_chunk over jobs, in order; with a pool, waiting in slices of 0.2 s, so that the main
    thread sees a Ctrl-C at once (a wait without a timeout can sleep through a signal that another
    thread received)."""
    if pool is None:
        yield from map(_generate_chunk, jobs)
        return
    results = pool.imap(_generate_chunk, jobs)
    while True:
        try:
            yield results.next(timeout=0.2)
        except multiprocessing.TimeoutError:
            continue
        except StopIteration:
            return


def generate(total, difficulty, size, seed=0, workers=1, stream=0, keys=None):
    """`total` distinct puzzles (no two equal up to augmentation, nor to one in `keys`, which gains theirs):
    (questions, answers, robust ratings), from work-unit stream `stream` (see generate_splits)."""
    return generate_splits([total], difficulty, size, seed, workers, keys, first_stream=stream)[0]


def _jobs(difficulty, size, seed, need, workers, first_index):
    """The work units for `need` more puzzles, numbered from first_index."""
    chunk = CHUNK[difficulty]
    if difficulty in SEARCH_LEVELS:  # costly units ask for no more than is missing
        counts = [min(chunk, need - lo) for lo in range(0, need, chunk)]
    else:  # cheap ones: spares keep every worker busy
        counts = [chunk] * max(workers, -(-need // chunk))
    return [(difficulty, size, seed, first_index + i, n) for i, n in enumerate(counts)]


def generate_splits(totals, difficulty, size, seed=0, workers=1, keys=None, first_stream=0):
    """generate for each split of `totals` (train, test ...): split k draws the work units of stream
    first_stream + k, so no search gives puzzles (sharing a solution grid) to two splits, and no puzzle of
    a split equals one of an earlier split up to augmentation. One pool serves all splits, with every
    split's units queued from the start: no worker waits while another finishes the last unit of a split."""
    if (difficulty == "hard" or difficulty in SEARCH_LEVELS) and size != 9:
        raise InputError(f"--difficulty {difficulty} needs --size 9: smaller grids hardly ever need a guess; "
                         f"fix: use easy or medium for --size {size}")
    keys = set() if keys is None else keys
    rows = [[] for _ in totals]
    next_index = [(first_stream + k) << 40 for k in range(len(totals))]
    pool = _pool(workers) if workers > 1 else None
    try:
        with tqdm(total=sum(totals), desc=f"generate {difficulty}", disable=None) as bar:
            while True:
                rounds = []  # (split, its jobs) for every split still short
                for k, total in enumerate(totals):
                    if len(rows[k]) < total:
                        rounds.append((k, _jobs(difficulty, size, seed, total - len(rows[k]), workers, next_index[k])))
                        next_index[k] += len(rounds[-1][1])
                if not rounds:
                    break
                results = _results(pool, [job for _, jobs in rounds for job in jobs])
                for k, jobs in rounds:  # results come in job order: the splits in turn
                    before = len(rows[k])
                    for _ in jobs:
                        for puzzle, solution, guesses in next(results):
                            key = symmetry_keys(np.array(puzzle) + 1, size)[0]
                            if key not in keys and len(rows[k]) < totals[k]:
                                keys.add(key)
                                rows[k].append((puzzle, solution, guesses))
                                bar.update(1)
                    if len(rows[k]) == before:
                        raise InputError(f"only {len(rows[k])} distinct {size}x{size} {difficulty} puzzles found; "
                                         f"fix: ask for fewer with --generate / --num_test")
    finally:
        if pool:
            pool.terminate()
    return [(np.array([r[0] for r in split], dtype=np.uint8) + 1, np.array([r[1] for r in split], dtype=np.uint8) + 1,
             np.array([r[2] for r in split], dtype=np.float64)) for split in rows]


# ============================================================================ CSV source

def read_csv(path, size=9, min_difficulty=None):
    """Questions and answers as tokens, ratings and file line numbers of a sudoku-extreme style CSV.
    Every row is checked; the first bad one raises InputError naming the file, the line and the fix."""
    parts = {"q": [], "a": [], "rating": [], "line": []}
    for rows in csv_blocks(path, "puzzle"):
        _convert_rows(path, rows, size, parts)
    data = {k: np.concatenate(v) for k, v in parts.items()}
    if min_difficulty is not None:  # applied to both splits, as the official builder does
        keep = data["rating"] >= min_difficulty
        if not keep.any():
            raise InputError(f"{path}: no puzzle has a rating >= {min_difficulty} (the highest is "
                             f"{data['rating'].max()}); fix: lower --min_difficulty")
        data = {k: v[keep] for k, v in data.items()}
    return data


def _convert_rows(path, rows, size, parts):
    """Check and convert a block of CSV rows (vectorised, so millions of rows stay quick)."""
    cells = size * size
    check_row_shapes(path, rows, cells, lambda length: f"{length} characters, expected {cells}; "
                                                       f"fix: write all {cells} cells row by row, '.' for a blank")
    lines = np.array([line for line, _ in rows])
    questions = _tokens_of(path, lines, [r[1] for _, r in rows], size, "question", blanks=True)
    answers = _tokens_of(path, lines, [r[2] for _, r in rows], size, "answer", blanks=False)
    bad = ~valid_answers(questions, answers, size)
    if bad.any():
        i = int(np.argmax(bad))
        raise InputError(f"{path}:{lines[i]}: {explain_answer(questions[i], answers[i], size)}, so it does not "
                         f"solve the question; fix: correct the answer or drop the row")
    # float: the generated sets' robust ratings are medians, which can end in .5
    ratings = csv_ratings(path, rows, float, 0.0, "is not a number; fix: write a number such as 12 or 12.5")
    parts["q"].append(questions)
    parts["a"].append(answers)
    parts["rating"].append(np.array(ratings, dtype=np.float64))
    parts["line"].append(lines)


def _tokens_of(path, lines, texts, size, name, blanks):
    chars = np.frombuffer("".join(texts).encode("utf-32-le"), dtype=np.uint32).reshape(len(texts), -1)
    digit = (chars >= ord("1")) & (chars <= ord("0") + size)
    blank = (chars == ord(".")) | (chars == ord("0"))
    ok = digit | blank if blanks else digit
    if not ok.all():
        i, j = np.argwhere(~ok)[0]
        allowed = f"'.' or '0' for a blank and digits 1-{size}" if blanks else f"only digits 1-{size}"
        raise InputError(f"{path}:{lines[i]}: {name} has {chr(chars[i, j])!r} at position {j + 1}; "
                         f"fix: use {allowed}")
    return np.where(blank, BLANK, chars.astype(np.int64) - ord("0") + 1).astype(np.uint8)


# ============================================================================ building the dataset

def sudoku_split(questions, answers, num_aug, rng, size):
    """One split in the official layout: each augmentation is its own puzzle (one example, identifier 0)
    inside the original puzzle's group, as the official builder does."""
    inputs, labels = augment_groups(questions, answers, num_aug, rng, size)
    n_puzzles = len(inputs)
    meta = {"pad_id": PAD, "ignore_label_id": PAD, "blank_identifier_id": 0, "vocab_size": size + 2,
            "seq_len": size * size, "num_puzzle_identifiers": 1, "task": "sudoku"}
    arrays = {"inputs": inputs, "labels": labels,
              "puzzle_identifiers": np.zeros(n_puzzles, np.int32),
              "puzzle_indices": np.arange(n_puzzles + 1, dtype=np.int32),
              "group_indices": np.arange(0, n_puzzles + 1, 1 + num_aug, dtype=np.int32)}
    return meta, {"all": arrays}


def to_csv(questions, answers, ratings, source, size):
    """The sudoku-extreme CSV text of token grids (the generator's record, readable by --source)."""
    table = np.frombuffer(b"?." + b"123456789"[:size] + b"?" * (254 - size), dtype=np.uint8)
    q_text, a_text = table[questions].tobytes().decode(), table[answers].tobytes().decode()
    cells = size * size
    lines = [",".join(CSV_HEADER)]
    for i, rating in enumerate(np.asarray(ratings).tolist()):
        lines.append(f"{source},{q_text[i * cells:(i + 1) * cells]},{a_text[i * cells:(i + 1) * cells]},{rating:g}")
    return "\n".join(lines) + "\n"


def describe(name, questions, size, robust=None, limit=300):
    """The difficulty claims: the robust rating (given, or measured on the first `limit` puzzles) and the
    fixed-order full-search figure of `rate` (on the first `limit`, as it costs a search each)."""
    givens = (questions != BLANK).sum(1)
    if robust is None:
        robust = np.array([robust_rating(_digits(q), size) for q in questions[:limit]])
    fixed = np.array([rate(_digits(q), size) for q in questions[:limit]])
    return (f"{name}: {len(questions)} puzzles, givens {givens.min()}-{givens.max()} (median {np.median(givens):g}); "
            f"robust rating{'' if len(robust) == len(questions) else f' (first {len(robust)})'} median "
            f"{np.median(robust):g} p10 {np.percentile(robust, 10):g} mean {robust.mean():.1f} max {robust.max():g}, "
            f"{100 * np.mean(robust > 0):.0f}% need a guess; fixed-order full search (first {len(fixed)}) "
            f"median {np.median(fixed):g} mean {fixed.mean():.1f} max {fixed.max()}")


SYMMETRIES = "digits relabelled, rows, columns, bands or stacks permuted, transposed"  # random_transforms' group


def default_out(args):
    if args.source or args.download:
        name = "sudoku-extreme"
        if args.subsample:
            name += f"-{args.subsample // 1000}k" if args.subsample % 1000 == 0 else f"-{args.subsample}"
        return os.path.join("data", name + (f"-aug-{args.num_aug}" if args.num_aug else ""))
    grid = "" if args.size == 9 else f"-{args.size}x{args.size}"
    return os.path.join("data", f"sudoku{grid}-{args.difficulty}")


def run(args):
    rng = np.random.default_rng(args.seed)

    def build(train, test):  # the test split is never augmented
        return {"train": sudoku_split(train["q"], train["a"], args.num_aug, rng, args.size),
                "test": sudoku_split(test["q"], test["a"], 0, rng, args.size)}, 1 + args.num_aug
    return prepare_common.run(args, args.out or default_out(args), HF_URL, _load, build, "puzzles")


def _load(args):
    """(train, test, overlap, extra files): the --source CSV rows, or generated puzzles and their CSV record."""
    if args.source:
        read = functools.partial(read_csv, size=args.size, min_difficulty=args.min_difficulty)
        classes = functools.partial(puzzle_classes, size=args.size)
        train, test, overlap = from_csv_source(args, read, classes, "puzzles", SYMMETRIES, " (after --min_difficulty)")
        print(describe("test", test["q"], args.size))
        return train, test, overlap, {}
    extra = {}
    made = [{"q": q, "a": a, "rating": r} for q, a, r in
            generate_splits([args.generate, args.num_test], args.difficulty, args.size, args.seed, args.workers)]
    for split, d in zip(("train", "test"), made):
        print(describe(f"{split} {args.difficulty}", d["q"], args.size, d["rating"]))
        extra[f"{split}.csv"] = to_csv(d["q"], d["a"], d["rating"], f"generated-{args.difficulty}", args.size)
    return made[0], made[1], 0, extra


# ============================================================================ benchmark

def bench(which):
    """Time the three workloads of the README on this machine, each in a fresh process (peak RSS)."""
    with tempfile.TemporaryDirectory() as tmp:
        jobs = []
        if "aug" in which:
            q, a, _ = generate(1000, "easy", 9, seed=12345, workers=os.cpu_count() or 1)
            with open(os.path.join(tmp, "train.csv"), "w") as f:
                f.write(to_csv(q, a, np.zeros(len(q)), "bench", 9))
            with open(os.path.join(tmp, "test.csv"), "w") as f:
                f.write(to_csv(q[:100], a[:100], np.zeros(100), "bench", 9))
            jobs.append(("1000 puzzles x 1000 augmentations", ["--source", tmp, "--num_aug", "1000"]))
        # diabolical costs minutes a puzzle: a few, not the default 1000 test puzzles
        for level, n, tests in (("easy", 2000, 1000), ("medium", 2000, 1000), ("hard", 1000, 1000),
                                ("extreme", 1000, 1000), ("diabolical", 4, 2)):
            if level in which:
                jobs.append((f"--generate {n} --difficulty {level} (+{tests} test)",
                             ["--generate", str(n), "--num_test", str(tests), "--difficulty", level]))
        for title, extra in jobs:
            cmd = [sys.executable, os.path.abspath(__file__), *extra, "--out", os.path.join(tmp, "out"), "--overwrite"]
            log_path = os.path.join(tmp, "log.txt")
            with open(log_path, "w") as log:
                start = time.time()
                child = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
                _, status, usage = os.wait4(child.pid, 0)  # the child's own peak memory
                child.returncode = os.waitstatus_to_exitcode(status)
                seconds = time.time() - start
            with open(log_path) as log:
                output = log.read().splitlines()
            if status:
                raise SystemExit(output[-1] if output else f"{title}: failed")
            print(f"{title}: {seconds:.1f} s, peak RSS {usage.ru_maxrss / 1024:.0f} MB")
            for line in output:
                if "robust rating" in line:
                    print(f"    {line}")


# ============================================================================ command line

def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = add_csv_sources(p, HF_REPO, "sudoku-extreme", "puzzles", count=3000)
    src.add_argument("--bench", nargs="?", const="aug,easy,medium", metavar="LIST",
                     help="time the workloads in LIST (aug,easy,medium,hard,extreme,diabolical; default "
                          "aug,easy,medium) "
                          "and exit")
    p.add_argument("--difficulty", choices=["easy", "medium", "hard", *SEARCH_LEVELS], default="easy",
                   help="generator level: easy 36-40 givens, medium 26-30, hard minimal and needing a guess; "
                        "extreme and diabolical are found by a search against the robust rating (median over "
                        f"{ROBUST_FORMS} equivalent forms of the guesses to a first solution): a kept puzzle scores "
                        f"at least {SEARCH_LEVELS['extreme']['gate']} (diabolical "
                        f"{SEARCH_LEVELS['diabolical']['gate']}) on the search's own forms and has a recorded "
                        f"rating of at least {SEARCH_LEVELS['extreme']['least']} (diabolical "
                        f"{SEARCH_LEVELS['diabolical']['least']}); 9x9 only (default %(default)s)")
    p.add_argument("--size", type=int, choices=sorted(BOX_SHAPES), default=9,
                   help="grid size: 4 (2x2 boxes), 6 (2x3 boxes) or 9 (3x3 boxes) (default %(default)s)")
    add_csv_splits(p, "puzzles", subsample_note=" (the paper uses 1000)")
    p.add_argument("--num_aug", type=int, default=None, metavar="K",
                   help="augmentations added per training puzzle (paper: 1000; default 100 when generating, "
                        "0 for a CSV); the test split is never augmented")
    p.add_argument("--min_difficulty", type=int, metavar="R", help="keep only CSV rows with rating >= R")
    p.add_argument("--out", help="output directory (default: data/sudoku-<difficulty> when generating, "
                                 "data/sudoku-extreme[-1k][-aug-K] for a CSV)")
    add_csv_outputs(p, HF_REPO, "puzzles", copies="exactly or up to augmentation")
    p.add_argument("--seed", type=int, default=0, help="seed of the subsample, generator and augmentations")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="generator processes (default: all cores, %(default)s)")
    return p


def parse_args(argv=None):
    p = build_parser()
    args = p.parse_args(argv)
    if not (args.source or args.download) and (args.subsample or args.min_difficulty is not None):
        p.error("--subsample and --min_difficulty apply to a CSV source (--source or --download)")
    if args.num_aug is None:
        args.num_aug = 0 if (args.source or args.download) else 100
    require_at_least(p, args, {"generate": 1, "num_test": 1, "num_aug": 0, "subsample": 1, "workers": 1})
    return args


def main(argv=None):
    args = parse_args(argv)
    prepare_common.main("prepare_sudoku.py", lambda: bench(args.bench.split(",")) if args.bench else run(args))


if __name__ == "__main__":
    main()
