"""ARC-AGI tasks -> the shared dataset format (dataset.py's canvas layout), and ARC's scoring.

    python prepare_arc.py --source DIR                  # ARC-AGI-1 + ConceptARC, 1000 augmentations (the paper's)
    python prepare_arc.py --source DIR --version 2      # ARC-AGI-2 + ConceptARC
    python prepare_arc.py --source ARC-AGI/data --subsets training evaluation --test_set evaluation
    python prepare_arc.py --source DIR --official_layout   # full token arrays, as the official builder writes them

A subset NAME is read from DIR/arc-agi_NAME_challenges.json (+ _solutions.json: the Kaggle "combined"
files) or from the task files DIR/NAME/**/*.json (the ARC-AGI, ARC-AGI-2 and ConceptARC repositories);
NAME=PATH points at either directly. Tasks of --test_set give their demonstration pairs to the training
split and their test inputs to the test split; the other subsets' tasks give all their pairs to training.

Tokens (as the official dataset builders write them): PAD 0, EOS 1, colour c -> c + 2 (vocab 12), grids on
a 30x30 canvas (seq_len 900). Everything ARC needs lives here: to_canvas, crop, augment_grid / invert_grid,
identifier names, render, load_task, score (voting, pass@K, submission.json), and the task interface that
sample.py and train.py call (parse_puzzle, read_puzzle_file, render_text, render_image, score, ...).
"""
import argparse
import glob
import json
import math
import os
import time
import zlib

import numpy as np
from tqdm import tqdm

import plot
import prepare_common
from dataset import IGNORE_LABEL_ID, Canvas, DatasetError, FIELDS, TrainLoader, load_split, read_text, write_dataset
from prepare_common import InputError, add_overwrite, dihedral, dihedral_inverse, require_at_least

SIDE = 30  # the canvas; ARC grids are at most 30x30 (--canvas makes a smaller one for small CPU runs)
PAD, EOS, COLOUR0 = 0, 1, 2  # tokens; colour c is token c + 2
VOCAB = 12
NUM_VIEWS = 8  # the dihedral transforms
RETRIES = 5  # official ARCAugmentRetriesFactor: at most 5 * num_aug draws per task
SEPARATOR = "|||"  # official PuzzleIdSeparator: identifier names are "task|||t<view>|||<colour map>"
PASS_KS = (1, 2, 5, 10, 100, 1000)  # the official evaluator's
ATTEMPTS = 2  # ARC Prize submissions hold two attempts per test input
DEFAULT_SUBSETS = {1: (["training", "evaluation", "concept"], "evaluation"),
                   2: (["training2", "evaluation2", "concept"], "evaluation2")}
DEFAULT_SOURCE = os.path.join("data", "raw", "arc")
# The CPU quick start (config/arc_cpu.py): easy ARC-AGI-1 training tasks with grids up to 7x7 (flips,
# rotations, transposes, recolourings, a shift, a tiling), 15 augmentations each, on a 10x10 canvas.
QUICK_START = dict(subsets=["training"], test_set="training", num_aug=15, canvas=10,
                   out=os.path.join("data", "arc-cpu"),
                   tasks="74dd1130,3c9b0459,6150a2bd,9dfd6313,67a3c6ac,68b16354,a416b8f3,c8f0f002,d511f180,"
                         "b1948b0a,0d3d703e,25ff71a9")
IDENTITY = np.arange(10, dtype=np.uint8)
# ARC's colours (black, blue, red, green, yellow, grey, magenta, orange, azure, maroon) as xterm-256 codes.
ANSI = (16, 26, 196, 34, 226, 248, 201, 208, 117, 88)


# ============================================================================ grids

def augment_grid(grid, view, mapping):
    """Colour c -> mapping[c], then the dihedral view (the official aug(); the two commute)."""
    return np.ascontiguousarray(dihedral(np.asarray(mapping, np.uint8)[np.asarray(grid)], view))


def invert_grid(grid, view, mapping):
    """Undo augment_grid: map an augmented grid (e.g. a prediction) back to the task's own frame."""
    return np.ascontiguousarray(np.argsort(mapping).astype(np.uint8)[dihedral_inverse(grid, view)])


def identifier_name(task_id, view, mapping):
    """The official name of an augmented task; the original keeps its plain id."""
    return identifier_names(task_id, [view], [mapping])[0]


def identifier_names(task_id, views, mappings):
    """identifier_name for many augmentations of one task at once. A task id that holds the separator itself
    gets the suffix on its original too ("id|||t0|||0123456789"), so that parse_identifier, splitting the
    suffix off from the right, gives back any id; official ids never hold it and keep the official names."""
    digits = (np.asarray(mappings, np.uint8).reshape(-1, 10) + ord("0")).tobytes().decode()
    plain = SEPARATOR not in task_id
    return [task_id if plain and view == 0 and digits[10 * i:10 * i + 10] == "0123456789" else
            f"{task_id}{SEPARATOR}t{view}{SEPARATOR}{digits[10 * i:10 * i + 10]}" for i, view in enumerate(views)]


def parse_identifier(name):
    """(task_id, view, mapping) of an identifier name (the official inverse_aug's reading)."""
    if SEPARATOR not in name:
        return name, 0, IDENTITY
    task_id, view, mapping = name.rsplit(SEPARATOR, 2)
    return task_id, int(view[1:]), np.array([int(c) for c in mapping], np.uint8)


def to_canvas(grid, offset=(0, 0), side=SIDE):
    """(side * side,) uint8 tokens: the grid at `offset`, EOS on the row below it and the column right of it
    (within its extent, where they fall on the canvas; the corner stays PAD), PAD elsewhere."""
    grid = np.asarray(grid)
    canvas = np.zeros((side, side), np.uint8)
    (r, c), (h, w) = offset, grid.shape
    canvas[r:r + h, c:c + w] = grid + COLOUR0
    if r + h < side:
        canvas[r + h, c:c + w] = EOS
    if c + w < side:
        canvas[r:r + h, c + w] = EOS
    return canvas.reshape(-1)


def _side(tokens):
    """The canvas side of token rows (30 for ARC's 900 tokens)."""
    side = int(round(np.shape(tokens)[-1] ** 0.5))
    if side * side != np.shape(tokens)[-1]:
        raise ValueError(f"{np.shape(tokens)[-1]} tokens do not make a square canvas")
    return side


def crop_shapes(tokens):
    """(N, 2) height and width read back from (N, 900) tokens: the official _crop, vectorised. Row by row
    from the top, the usable width shrinks to the first non-colour token (PAD, EOS); the answer is the
    first row count whose rectangle has the largest area."""
    side = _side(tokens)
    grids = np.asarray(tokens).reshape(-1, side, side)
    colour = (grids >= COLOUR0) & (grids < VOCAB)
    run = np.where(colour.all(axis=2), side, np.argmin(colour, axis=2))  # colours before the first stop, per row
    widths = np.minimum.accumulate(run, axis=1)
    areas = widths * np.arange(1, side + 1)
    heights = np.argmax(areas, axis=1) + 1
    shapes = np.stack([heights, widths[np.arange(len(widths)), heights - 1]], axis=1)
    shapes[areas.max(axis=1) == 0] = 0
    return shapes


def crop(grid_tokens):
    """The grid a (900,) token sequence holds, as colours 0-9 (uint8, possibly 0x0)."""
    tokens = np.asarray(grid_tokens).reshape(1, -1)
    h, w = crop_shapes(tokens)[0]
    side = _side(tokens)
    return (tokens.reshape(side, side)[:h, :w] - COLOUR0).astype(np.uint8)


def render(grid, color=True):
    """A grid as text: coloured cells (ARC's 10 colours as ANSI backgrounds) or digits."""
    grid = np.asarray(grid)
    if grid.size == 0:
        return "(empty grid)"
    if not color:
        return "\n".join(" ".join(str(int(c)) for c in row) for row in grid)
    return "\n".join("".join(f"\033[48;5;{ANSI[int(c)]}m  " for c in row) + "\033[0m" for row in grid)


# ============================================================================ reading tasks

def read_json(path, fix="fix the file or download it again"):
    try:
        return json.loads(read_text(path))
    except DatasetError as e:  # unreadable, or not UTF-8 (the message names the byte)
        raise InputError(str(e)) from None
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); {fix}") from None


def to_grid(value, where):
    """A JSON grid (list of equally long rows of colours 0-9, at most 30x30) -> uint8 array."""
    if not isinstance(value, list) or not value or not all(isinstance(row, list) for row in value):
        raise InputError(f"{where}: is not a grid (a non-empty list of rows)")
    widths = sorted({len(row) for row in value})
    if len(widths) > 1 or widths[0] == 0:
        raise InputError(f"{where}: ragged grid, rows of lengths {widths}; every row needs the same length")
    if len(value) > SIDE or widths[0] > SIDE:
        raise InputError(f"{where}: grid is {len(value)}x{widths[0]}, larger than ARC's {SIDE}x{SIDE}")
    bad = next((c for row in value for c in row if type(c) is not int or not 0 <= c <= 9), None)
    if bad is not None:
        raise InputError(f"{where}: colour {bad!r} is not an integer 0-9")
    return np.array(value, dtype=np.uint8)


def parse_task(task_id, raw, where, outputs=None):
    """A task {"train": [(input, output)], "test": [(input, output or None)]} with uint8 grids;
    `outputs` (from a solutions file) fill the test outputs."""
    if not isinstance(raw, dict) or not isinstance(raw.get("train"), list) or not isinstance(raw.get("test"), list):
        raise InputError(f"{where}: task {task_id} needs 'train' and 'test' lists")
    if not raw["test"]:
        raise InputError(f"{where}: task {task_id} has no test pair; every task needs at least one")
    if not raw["train"]:
        raise InputError(f"{where}: task {task_id} has no train (demonstration) pair; every task needs one")

    def pair(kind, i, p, output):
        if not isinstance(p, dict) or "input" not in p:
            raise InputError(f"{where}: task {task_id} {kind} pair {i} has no 'input'")
        output = p.get("output") if output is None else output
        if output is None and kind == "train":
            raise InputError(f"{where}: task {task_id} train pair {i} has no 'output'")
        return (to_grid(p["input"], f"{where}: task {task_id} {kind} pair {i} input"),
                None if output is None else to_grid(output, f"{where}: task {task_id} {kind} pair {i} output"))

    outputs = outputs or [None] * len(raw["test"])
    return {"train": [pair("train", i, p, None) for i, p in enumerate(raw["train"])],
            "test": [pair("test", i, p, o) for i, (p, o) in enumerate(zip(raw["test"], outputs))]}


def read_combined(challenges):
    """{task_id: task} from a Kaggle challenges file and its solutions file (when present)."""
    solutions_path = challenges[: -len("_challenges.json")] + "_solutions.json"
    raw = read_json(challenges)
    if not isinstance(raw, dict):
        raise InputError(f"{challenges}: expected an object {{task_id: task}}")
    solutions = read_json(solutions_path) if os.path.isfile(solutions_path) else None
    if solutions is not None and not isinstance(solutions, dict):
        raise InputError(f"{solutions_path}: expected an object {{task_id: [output grid per test input]}}")
    if solutions is not None:
        missing, extra = sorted(set(raw) - set(solutions)), sorted(set(solutions) - set(raw))
        if missing or extra:
            raise InputError(f"{solutions_path}: task ids differ from {os.path.basename(challenges)} (no solution for "
                             f"{_some(missing)}; solutions for unknown {_some(extra)}); use the files of one release")
    tasks = {}
    for task_id, task in raw.items():
        outputs = None if solutions is None else solutions[task_id]
        tests = task.get("test") if isinstance(task, dict) else None
        if outputs is not None and isinstance(tests, list) and (not isinstance(outputs, list)
                                                                or len(outputs) != len(tests)):
            raise InputError(f"{solutions_path}: task {task_id} needs a list of one solution per test input "
                             f"({len(tests)} in {os.path.basename(challenges)})")
        tasks[task_id] = parse_task(task_id, task, challenges, outputs)
    return tasks


def read_directory(directory):
    """{task_id: task} from task files DIR/**/*.json (the id is the file name)."""
    paths = sorted(glob.glob(os.path.join(directory, "**", "*.json"), recursive=True))
    if not paths:
        raise InputError(f"{directory}: no *.json task files here")
    tasks, where = {}, {}
    for path in paths:
        task_id = os.path.splitext(os.path.basename(path))[0]
        if task_id in tasks:
            raise InputError(f"{path}: task {task_id} is also {where[task_id]}; task file names must be unique")
        tasks[task_id], where[task_id] = parse_task(task_id, read_json(path), path), path
    return tasks


def subset_path(source, subset):
    """(name, where its tasks are or None) of a subset NAME (under `source`) or NAME=PATH."""
    name, _, path = subset.partition("=")
    candidates = [path] if path else [os.path.join(source, f"arc-agi_{name}_challenges.json"),
                                      os.path.join(source, name)]
    return name, next((c for c in candidates if os.path.exists(c)), None), candidates


def load_subset(source, subset):
    """(name, {task_id: task}) of a subset NAME (under `source`) or NAME=PATH."""
    name, path, candidates = subset_path(source, subset)
    if path is None:
        raise InputError(f"subset {name}: found neither {' nor '.join(candidates)}; fix --source, or give "
                         f"{name}=PATH (a *_challenges.json file or a directory of task files)")
    if os.path.isdir(path):
        return name, read_directory(path)
    if not path.endswith("_challenges.json"):
        raise InputError(f"{path}: expected a *_challenges.json file or a directory of task files")
    return name, read_combined(path)


def load_subsets(source, subsets, test_set, keep=None):
    """[(name, {task_id: task})] in order, checked: task ids unique, none of the test set also trained on."""
    loaded = [load_subset(source, s) for s in subsets]
    names = [name for name, _ in loaded]
    if test_set not in names:
        raise InputError(f"--test_set {test_set} is not among --subsets {' '.join(names)}; add it to --subsets")
    if keep:
        unknown = sorted(set(keep) - {t for _, tasks in loaded for t in tasks})
        if unknown:
            raise InputError(f"--tasks: {_some(unknown)} not found in subsets {' '.join(names)}")
        loaded = [(name, {t: task for t, task in tasks.items() if t in keep}) for name, tasks in loaded]
    scored = dict(loaded)[test_set]
    if not scored:
        raise InputError(f"--tasks keeps no task of --test_set {test_set}: nothing to score; add one of its tasks")
    _check_outputs(scored, test_set)
    for i, (name, tasks) in enumerate(loaded):
        for other, other_tasks in loaded[:i]:
            both = sorted(set(tasks) & set(other_tasks))
            if both and test_set in (name, other):
                train_name = other if name == test_set else name
                raise InputError(f"training and scoring sets overlap: {len(both)} task(s) of --test_set {test_set} "
                                 f"are also in {train_name} ({_some(both)}), e.g. ARC-AGI-2's training set holds "
                                 f"ARC-AGI-1's evaluation tasks; drop {train_name} from --subsets or score another set")
            if both:
                raise InputError(f"subsets {other} and {name} share {len(both)} task(s) ({_some(both)}); "
                                 f"a task may appear in one subset only: drop one of them")
    return loaded


def _check_outputs(scored, test_set):
    """The scored test pairs have outputs, all of them (pass@K) or none (a submission: predictions and
    submission.json only). A mix is refused rather than scored around: pass@K over part of the test inputs
    is not the benchmark's number, and one output missing from a labelled set is a mistake in the data
    (a solutions file cut short, a task edited by hand), best fixed where it is."""
    missing = [(t, k) for t, task in scored.items() for k, (_, out) in enumerate(task["test"]) if out is None]
    total = sum(len(task["test"]) for task in scored.values())
    if missing and len(missing) < total:
        (task_id, k), more = missing[0], f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise InputError(f"--test_set {test_set}: task {task_id} test pair {k} has no output{more}, while "
                         f"{total - len(missing)} of the set's {total} test pairs have one; fix: add the output (the "
                         f"pair's 'output', or the task's entry in the _solutions.json file) or leave the task out "
                         f"with --tasks (a test set with no outputs at all builds, for predictions only)")
    if missing:
        print(f"--test_set {test_set}: no test outputs (challenges without solutions): the test split gives "
              f"predictions and submission.json only, no pass@K")


def _note_copies(loaded, test_set):
    """How many scored test pairs are also training pairs (the same input and output), said in one line:
    ARC-AGI-1's evaluation task 070dd51e's test pair is a pair of training task 40853293. Kept and recorded
    (dataset.json's train_test_overlap), not refused: the official dataset keeps it, the paper's number
    includes it. Pairs equal only up to a view and a recolouring are not counted: several tasks' test pairs
    are such images of their own demonstrations, which is the task, not a leak."""
    def key(inp, out):
        return inp.tobytes() + out.tobytes() + bytes(inp.shape + out.shape)
    seen, copies, total = {}, [], 0
    for name, tasks in loaded:
        for task_id, task in tasks.items():
            pairs = [("train", task["train"])] + ([] if name == test_set else [("test", task["test"])])
            for kind, kind_pairs in pairs:
                for k, (inp, out) in enumerate(kind_pairs):
                    if out is not None:
                        seen.setdefault(key(inp, out), f"{kind} pair {k} of task {task_id}")
    for task_id, task in dict(loaded)[test_set].items():
        for k, (inp, out) in enumerate(task["test"]):
            total += 1
            if out is not None and key(inp, out) in seen:
                copies.append(f"task {task_id} test pair {k} = {seen[key(inp, out)]}")
    if copies:
        print(f"note: {len(copies)} of the {total} test pairs of {test_set} are also training pairs "
              f"({', '.join(copies[:3])}{', ...' if len(copies) > 3 else ''}); kept, as in the official dataset, "
              f"and recorded in dataset.json as train_test_overlap")
    return len(copies)


def _some(ids, n=5):
    ids = list(ids)
    return ", ".join(ids[:n]) + (f" and {len(ids) - n} more" if len(ids) > n else "") if ids else "none"


def load_task(path_or_id, source=DEFAULT_SOURCE, subsets=None):
    """One task by file path (a per-task JSON file) or by id, looked up in `source`'s subsets."""
    if os.path.isfile(path_or_id):
        task_id = os.path.splitext(os.path.basename(path_or_id))[0]
        return dict(parse_task(task_id, read_json(path_or_id), path_or_id), id=task_id)
    names = subsets or sorted({s for v in DEFAULT_SUBSETS.values() for s in v[0]} | {"test"})
    for name in names:
        if subset_path(source, name)[1] is None:
            continue
        _, tasks = load_subset(source, name)
        if path_or_id in tasks:
            return dict(tasks[path_or_id], id=path_or_id, subset=name)
    raise InputError(f"task {path_or_id}: not a file, and not found in {source} (subsets {' '.join(names)})")


# ============================================================================ the task interface
# What sample.py and train.py call, under the same names in every prepare script (score and
# SCORE_FIELDS below). `shape` is what puzzle_shape returns for a model: its canvas side and dataset.

SOLVED_WORDS = ""  # ARC has no rule to check an answer by, only the known output when a task has one
COLOURS = [(0, 0, 0), (0, 116, 217), (255, 65, 54), (46, 204, 64), (255, 220, 0), (170, 170, 170),
           (240, 18, 190), (255, 133, 27), (127, 219, 255), (135, 12, 37)]  # ARC's own palette, 0-9


def puzzle_shape(vocab_size, seq_len, data_dir):
    """The canvas side (30 in the paper, smaller for CPU runs) and the dataset holding the tasks'
    identifiers: a puzzle is answered only for a task the model trained on."""
    return dict(side=math.isqrt(seq_len), data_dir=data_dir)


def looks_like(text):
    return text.endswith(".json")


def parse_puzzle(path, where, shape):
    """A task JSON file (or a task id found in the default source) -> one row per test input:
    (name, question canvas, known output canvas or None, the task's puzzle identifier)."""
    task = load_task(path)  # through dataset.read_text: a BOM dropped, other encodings one line
    names = trained_identifiers(shape["data_dir"])
    own = identifier_name(task["id"], 0, IDENTITY)  # the task's unaugmented identifier
    if own not in names:
        raise InputError(f"{where}: task {task['id']} is not among the {len(names)} tasks this checkpoint "
                         f"learned ({shape['data_dir']}/identifiers.json); TRM answers only tasks it trained on")
    rows, side = [], shape["side"]
    for i, (question, answer) in enumerate(task["test"]):
        too_big = [g.shape for g in (question, answer) if g is not None and max(g.shape) > side]
        if too_big:
            raise InputError(f"{where}: test {i} has a {too_big[0][0]}x{too_big[0][1]} grid, larger than this "
                             f"checkpoint's {side}x{side} canvas")
        label = None if answer is None else to_canvas(answer, side=side).astype(np.int32)
        if label is not None:
            label[label == PAD] = IGNORE_LABEL_ID  # as the dataset's ignore_label_id
        rows.append((f"{where} test {i}", to_canvas(question, side=side), label, names.index(own)))
    return rows


def read_puzzle_file(path, shape):
    return parse_puzzle(path, path, shape)


def trained_identifiers(data_dir):
    path = os.path.join(data_dir, "identifiers.json")
    if not os.path.isfile(path):
        raise InputError(f"{path} not found; an ARC puzzle needs the dataset the checkpoint trained on (--data_dir)")
    return read_json(path, fix="rebuild the dataset with prepare_arc.py")


def check(questions, preds, shape):
    return None  # no rule: verdicts compare with the known output


def explain(question, pred, shape):
    return ""


def describe_puzzle(question, shape):
    return "{}x{} input".format(*crop(question).shape)


def render_text(pred, question, prev, shape, color):
    return render(crop(pred), color=color)


def render_image(pred, question, prev, shape):
    grid = crop(pred)
    cell = max(4, min(20, 300 // max(1, *grid.shape)))
    return np.kron(np.array(COLOURS, np.uint8)[grid], np.ones((cell, cell, 1), np.uint8)) if grid.size \
        else np.full((cell, cell, 3), plot.PAPER, np.uint8)


# ============================================================================ augmentation (as the official builders)

def augmentations(pairs, num_aug, rng):
    """Up to num_aug distinct augmentations of a task: views (P,) and colour mappings (P, 10), the original
    first. As the official builder: draw a dihedral view and a permutation of colours 1-9 (0 fixed), keep
    it unless the augmented task (its pairs as a multiset) equals one kept before, at most RETRIES * num_aug
    draws (tasks with few colours and symmetries have fewer than num_aug distinct versions). Equality is
    decided on the pairs' exact contents (the official compares SHA-256 hashes of them)."""
    if num_aug == 0:
        return np.zeros(1, np.uint8), IDENTITY[None]
    trials = RETRIES * num_aug
    drawn_views = rng.integers(0, NUM_VIEWS, trials)
    drawn_maps = np.concatenate([np.zeros((trials, 1), np.int64), np.argsort(rng.random((trials, 9)), axis=1) + 1],
                                axis=1)
    candidates = _first_draws(pairs, drawn_views, drawn_maps)
    flats, segments, tied = _task_bytes(pairs)
    if not tied and not any(np.array_equal(_canonical(flats[v]), _canonical(flats[0])) for v in range(1, 8)):
        # No augmentation but the identity maps this task onto itself, so draws that differ in view or in
        # the mapping of its colours make different tasks: no need to compare contents.
        kept = candidates[:num_aug]
        return (np.concatenate([[0], drawn_views[kept]]).astype(np.uint8),
                np.concatenate([IDENTITY[None], drawn_maps[kept]]).astype(np.uint8))
    # Table indices 10.. stand for shape bytes in the flattened task (see _task_bytes): never recoloured.
    tables = np.concatenate([drawn_maps, np.broadcast_to(np.arange(10, 10 + SIDE + 1), (trials, SIDE + 1))], axis=1)
    tables = tables.astype(np.uint8)
    size = flats.shape[1]

    def key(data):
        return b"".join(sorted(data[a:b] for a, b in segments)) if tied else data

    seen, kept = {key(flats[0].astype(np.uint8).tobytes())}, []  # the original: table indices are its colours
    for lo in range(0, len(candidates), 256):
        chunk = candidates[lo:lo + 256]
        keys = np.empty((len(chunk), size), np.uint8)
        for view in range(NUM_VIEWS):
            chosen = np.flatnonzero(drawn_views[chunk] == view)
            keys[chosen] = tables[chunk[chosen]][:, flats[view]]
        data = keys.tobytes()
        for i, trial in enumerate(chunk.tolist()):
            k = key(data[i * size:(i + 1) * size])
            if k not in seen:
                seen.add(k)
                kept.append(trial)
                if len(kept) == num_aug:
                    break
        if len(kept) == num_aug:
            break
    return (np.concatenate([[0], drawn_views[kept]]).astype(np.uint8),
            np.concatenate([IDENTITY[None], drawn_maps[kept]]).astype(np.uint8))


def _first_draws(pairs, views, maps):
    """Draws worth comparing, in order: a draw repeating an earlier one's view and its mapping of the colours
    the task uses (or the original's) makes the same augmented task, so it is dropped without a look."""
    used = np.unique(np.concatenate([g.reshape(-1) for pair in pairs for g in pair]))
    used = used[used > 0]
    rows = np.concatenate([[np.concatenate([[0], used])], np.concatenate([views[:, None], maps[:, used]], axis=1)])
    codes = (rows.astype(np.uint64) << (4 * np.arange(rows.shape[1], dtype=np.uint64))).sum(axis=1)  # 4 bits each
    _, first = np.unique(codes, return_index=True)  # the original is row 0
    return np.sort(first[first > 0]) - 1


def _canonical(flat):
    """Colours 1-9 renamed in order of first appearance (shape entries >= 10 kept): two flattened tasks
    get the same result exactly when a permutation of colours 1-9 maps one onto the other."""
    colours = flat[(flat > 0) & (flat < 10)]
    values, first = np.unique(colours, return_index=True)
    rename = np.arange(10 + SIDE + 1)
    rename[values[np.argsort(first)]] = np.arange(1, len(values) + 1)
    return rename[flat]


def _task_bytes(pairs):
    """A task flattened for comparing augmentations: per view, one uint8 row of table indices (colours 0-9,
    shapes as 10 + size) covering every pair as [h_in, w_in, h_out, w_out, input cells, output cells].
    Pairs are ordered by a property no augmentation changes (shapes up to transposition, colour-count
    profiles), so that, when no two pairs tie on it, augmented tasks are equal as multisets exactly when
    their rows are equal; if two tie, keys sort the pairs' segments.
    Returns (flats (8, S), segments [(start, end)], tied)."""
    def profile(grid):
        if grid is None:
            return ()
        counts = np.bincount(grid.reshape(-1), minlength=10)
        return tuple(sorted(grid.shape)), int(counts[0]), tuple(sorted(counts[1:].tolist()))

    invariants = [(profile(i), profile(o)) for i, o in pairs]
    order = sorted(range(len(pairs)), key=lambda k: invariants[k])
    tied = len(set(invariants)) < len(invariants)
    flats, segments = [], []
    for view in range(NUM_VIEWS):
        parts = []
        for k in order:
            inp, out = dihedral(pairs[k][0], view), None if pairs[k][1] is None else dihedral(pairs[k][1], view)
            shape = inp.shape + (out.shape if out is not None else (0, 0))
            parts += [np.array(shape, np.uint8) + 10, inp.reshape(-1)] + ([] if out is None else [out.reshape(-1)])
            if view == 0:
                start = segments[-1][1] if segments else 0
                segments.append((start, start + 4 + inp.size + (0 if out is None else out.size)))
        flats.append(np.concatenate(parts).astype(np.intp))
    return np.stack(flats), segments, tied


def pair_canvases(inp, out, side=SIDE):
    """All 8 views of a pair on the canvas at (0, 0): tokens (8, 2, 900) and room (8, 2), the largest
    (row, column) offset that keeps both grids on the canvas (official np_grid_to_seq_translational_augment:
    input and output share the offset). A missing output (unknown solution) is all PAD."""
    tokens = np.zeros((NUM_VIEWS, 2, side * side), np.uint8)
    room = np.zeros((NUM_VIEWS, 2), np.uint8)
    for view in range(NUM_VIEWS):
        grids = [dihedral(inp, view)] + ([] if out is None else [dihedral(out, view)])
        for part, grid in enumerate(grids):
            tokens[view, part] = to_canvas(grid, side=side)
        room[view] = [side - max(g.shape[0] for g in grids), side - max(g.shape[1] for g in grids)]
    return tokens, room


# ============================================================================ the dataset

def build(loaded, test_set, num_aug, seed, translation="per_draw", side=SIDE):
    """The canvas-layout dataset, a compact equivalent of the official builder's token arrays that
    dataset.py composes into canvases as it reads: (splits, shared arrays, identifier names, test tasks).

    One group per task: the original and its augmentations, one identifier each. Training examples: all
    pairs of the tasks outside the test set, the demonstration pairs of those in it; every training
    puzzle keeps one example at (0, 0), the others get a random offset (drawn here, and afresh in every
    batch when translation is "per_draw"; "none" keeps all at (0, 0)). Test examples: the test pairs of
    the test-set tasks, at (0, 0). `side` < 30 makes a smaller canvas (a deviation for small CPU runs:
    attention costs grow with its area squared). Tasks keep their file order (the official builder shuffles
    them; the training loader shuffles anyway, and a fixed order makes the test split's prefix predictable)."""
    pair_tokens, pair_room, names = [], [], ["<blank>"]
    views, token_maps = [np.zeros(1, np.uint8)], [_token_map(IDENTITY[None])]
    train, test, test_tasks = _new_split(), _new_split(), {}
    bar = tqdm(total=sum(len(tasks) for _, tasks in loaded), desc="augment", unit="task", disable=None)
    for subset, tasks in loaded:
        for task_id, task in tasks.items():
            scored = subset == test_set
            pairs = task["train"] + [p for p in task["test"] if p[1] is not None or scored]
            first = len(pair_tokens)
            for inp, out in pairs:
                if max(inp.shape + (out.shape if out is not None else ())) > side:
                    raise InputError(f"task {task_id} ({subset}) has a grid larger than --canvas {side}; "
                                     f"raise --canvas or leave the task out")
                tokens, room = pair_canvases(inp, out, side)
                pair_tokens.append(tokens)
                pair_room.append(room)
            # per task, so --tasks keeps its draws; surrogatepass: a JSON key may hold a lone surrogate
            rng = np.random.default_rng([seed, zlib.crc32(task_id.encode("utf-8", "surrogatepass"))])
            task_views, task_maps = augmentations([p for p in pairs if p[1] is not None], num_aug, rng)
            ids = np.arange(len(names), len(names) + len(task_views))
            names += identifier_names(task_id, task_views.tolist(), task_maps)
            views.append(task_views)
            token_maps.append(_token_map(task_maps))
            n_train = len(task["train"]) if scored else len(pairs)
            _add_group(train, ids, first + np.arange(n_train), translate=translation != "none", rng=rng)
            if scored:
                _add_group(test, ids, first + np.arange(n_train, len(pairs)), translate=False, rng=rng)
                test_tasks[task_id] = task
            bar.update(1)
    bar.close()
    shared = {"canvas_sources": np.stack(pair_tokens), "canvas_room": np.stack(pair_room),
              "identifier_views": np.concatenate(views), "identifier_token_maps": np.concatenate(token_maps)}
    meta = {"pad_id": PAD, "ignore_label_id": PAD, "blank_identifier_id": 0, "vocab_size": VOCAB,
            "seq_len": side * side, "num_puzzle_identifiers": len(names), "task": "arc", "layout": "canvas"}
    rng = np.random.default_rng([seed, len(names)])
    splits = {"train": (meta | {"offsets": "fixed" if translation == "fixed" else "per_draw"},
                        {"all": _finish_split(train, shared, rng)}),
              "test": (meta | {"offsets": "fixed"}, {"all": _finish_split(test, shared, rng)})}
    return splits, shared, names, test_tasks


def _token_map(mappings):
    """(P, 10) colour mappings -> (P, 12) token maps: PAD and EOS stay, colour c -> mapping[c]."""
    fixed = np.broadcast_to(np.array([PAD, EOS], np.uint8), (len(mappings), 2))
    return np.concatenate([fixed, np.asarray(mappings, np.uint8) + COLOUR0], axis=1)


def _new_split():
    return {"sources": [], "translate": [], "identifiers": [], "sizes": [], "groups": []}


def _add_group(split, ids, sources, translate, rng):
    """One group: a puzzle per identifier, each holding the examples `sources`; one of them (chosen per
    puzzle, the official no_aug_id) stays at (0, 0)."""
    n = len(sources)
    moves = np.full((len(ids), n), translate, np.uint8)
    if translate:
        moves[np.arange(len(ids)), rng.integers(0, n, len(ids))] = 0
    split["sources"].append(np.tile(sources, len(ids)))
    split["translate"].append(moves.reshape(-1))
    split["identifiers"].append(ids)
    split["sizes"].append(np.full(len(ids), n))
    split["groups"].append(len(ids))


def _finish_split(split, shared, rng):
    """Concatenate the groups' arrays and draw each translatable example's stored offset uniformly in
    [0, room] per axis (the official np.random.randint(0, 30 - max(h_in, h_out) + 1))."""
    cat = {k: np.concatenate(v) if v and k != "groups" else np.array(v, np.int64) for k, v in split.items()}
    ids = np.repeat(cat["identifiers"], cat["sizes"])
    room = shared["canvas_room"][cat["sources"], shared["identifier_views"][ids]].astype(np.int64)
    offsets = (rng.random(room.shape) * (room + 1)).astype(np.uint8) * cat["translate"][:, None]
    return {"example_sources": cat["sources"], "example_offsets": offsets, "example_translate": cat["translate"],
            "puzzle_identifiers": cat["identifiers"],
            "puzzle_indices": np.concatenate([[0], np.cumsum(cat["sizes"])]),
            "group_indices": np.concatenate([[0], np.cumsum(cat["groups"])])}


def official_arrays(splits, shared, chunk=4096):
    """The same dataset in the official layout: every example's tokens, composed once (~1.8 kB each)."""
    out = {}
    for split, (meta, sets) in splits.items():
        arrays = sets["all"]
        canvas = Canvas(meta, arrays, shared)
        n = len(arrays["example_sources"])
        inputs, labels = np.empty((n, meta["seq_len"]), np.uint8), np.empty((n, meta["seq_len"]), np.uint8)
        for lo in tqdm(range(0, n, chunk), desc=f"tokens {split}", disable=None, leave=False):
            tokens = canvas.compose(np.arange(lo, min(n, lo + chunk)))
            inputs[lo:lo + chunk], labels[lo:lo + chunk] = tokens[:, 0], tokens[:, 1]
        official = {k: v for k, v in meta.items() if k not in ("layout", "offsets")}
        indices = {f: arrays[f] for f in FIELDS if f in arrays}
        out[split] = (official, {"all": dict(indices, inputs=inputs, labels=labels)})
    return out


def scored_tasks_json(test_tasks):
    """The official test_puzzles.json: the test-set tasks as ARC JSON (test outputs where known)."""
    def pair(inp, out):
        return {"input": inp.tolist()} | ({} if out is None else {"output": out.tolist()})
    return json.dumps({task_id: {kind: [pair(*p) for p in task[kind]] for kind in ("train", "test")}
                       for task_id, task in test_tasks.items()})


# ============================================================================ scoring (as the official evaluator)

def rank_answers(votes):
    """[(answer key, count, mean q)] best first: most votes, ties broken by the higher mean sigmoid(q_halt)
    (the official sort; exact ties keep first-seen order). votes: {key: [count, sum of q]}."""
    ranked = [(key, count, q_sum / count) for key, (count, q_sum) in votes.items()]
    return sorted(ranked, key=lambda r: (r[1], r[2]), reverse=True)


def _grid_key(grid):
    grid = np.ascontiguousarray(grid, dtype=np.uint8)
    return bytes([grid.shape[0], grid.shape[1] if grid.ndim == 2 else 0]) + grid.tobytes()


def _key_grid(key):
    h, w = key[0], key[1]
    return np.frombuffer(key[2:], np.uint8).reshape(h, w)


SCORE_FIELDS = ("puzzle_identifiers", "preds", "q_halt_logits")  # what train.py's evaluation keeps for score()


def score(data_dir, split, records, out_dir=None):
    """Score evaluated test examples the ARC Prize way. records: numpy arrays over the examples of `split`
    in eval_batches order (a prefix when evaluation stopped early): puzzle_identifiers (N,), preds (N, 900),
    q_halt_logits (N,). Each prediction is cropped and mapped back through its identifier's augmentation;
    identical answers are pooled per (task, test input) and ranked by votes, then by mean sigmoid(q_halt).
    pass@K: the true output is among the top K; averaged over a task's test inputs, then over the tasks
    scored (those with at least one record; a test input without any counts as missed). Returns
    {"pass@K": ..., "tasks_scored", "tasks_total", "labelled": 1.0}, and for a split without test outputs
    (built from challenges alone, for a submission) no pass@K and "labelled": 0.0; writes
    out_dir/submission.json when out_dir is given, labelled or not."""
    _, sets = load_split(data_dir, split)
    (arrays,) = sets.values()  # ARC datasets hold one set
    names = read_json(os.path.join(data_dir, "identifiers.json"))
    tasks = read_json(os.path.join(data_dir, "test_puzzles.json"))
    ids = np.asarray(records["puzzle_identifiers"]).astype(np.int64)
    n = len(ids)
    starts = np.asarray(arrays["puzzle_indices"])
    puzzles = np.searchsorted(starts, np.arange(n), side="right") - 1
    if n > starts[-1] or np.any(ids != np.asarray(arrays["puzzle_identifiers"])[puzzles]):
        raise DatasetError(f"{data_dir}/{split}: the records do not follow the split's examples in order; "
                           f"pass every evaluated example as eval_batches yields them")
    # An example's position in its puzzle is its task's test input (the builder keeps them in order).
    votes = _pool(names, ids, np.arange(n) - starts[puzzles], records["preds"], records["q_halt_logits"])
    scored = list(dict.fromkeys(task for task, _ in votes))
    # prepare_arc builds a test split with every output or none; a mix (an older build) counts as unlabelled.
    labelled = all("output" in pair for task in tasks.values() for pair in task["test"])
    result = {"tasks_scored": len(scored), "tasks_total": len(tasks), "labelled": float(labelled)}
    ranked = {t: [rank_answers(votes.get((t, k), {})) for k in range(len(tasks[t]["test"]))] for t in scored}
    if scored and labelled:  # else: a submission only
        truth = {t: [_grid_key(to_grid(pair["output"], f"test_puzzles.json: task {t}")) for pair in tasks[t]["test"]]
                 for t in scored}
        for k in PASS_KS:
            hits = [np.mean([key in [a for a, _, _ in answers[:k]] for key, answers in zip(truth[t], ranked[t])])
                    for t in scored]
            result[f"pass@{k}"] = float(np.mean(hits))
    if out_dir is not None:
        write_submission(os.path.join(out_dir, "submission.json"), ranked)
    return result


def _pool(names, ids, test_index, preds, q_logits):
    """{(task, test index): {answer key: [votes, sum of sigmoid(q_halt)]}}, in record order."""
    side = _side(preds)
    shapes = np.concatenate([crop_shapes(preds[lo:lo + 8192]) for lo in range(0, max(len(preds), 1), 8192)])
    q = 1 / (1 + np.exp(-np.asarray(q_logits, np.float64)))
    parsed, votes = {}, {}
    for i, identifier in enumerate(ids.tolist()):
        if identifier not in parsed:
            parsed[identifier] = parse_identifier(names[identifier])
        task, view, mapping = parsed[identifier]
        h, w = shapes[i]
        grid = (np.asarray(preds[i]).reshape(side, side)[:h, :w] - COLOUR0).astype(np.uint8)
        key = _grid_key(invert_grid(grid, view, mapping))
        entry = votes.setdefault((task, int(test_index[i])), {}).setdefault(key, [0, 0.0])
        entry[0] += 1
        entry[1] += q[i]
    return votes


def write_submission(path, ranked):
    """ARC Prize format {task_id: [{"attempt_1": grid, "attempt_2": grid}, ...one per test input]}: the top
    two answers, the best repeated when there is only one. Written whole (temporary file, then renamed).
    Deviation from the official writer: a test input without answers (evaluation cut short) or whose answer
    crops to nothing gets [[0]], so that the file always validates."""
    submission = {}
    for task, per_input in ranked.items():
        submission[task] = []
        for answers in per_input:
            grids = [_key_grid(key).tolist() for key, _, _ in answers[:ATTEMPTS]] or [[[0]]]
            grids = [g if g and g[0] else [[0]] for g in grids]
            grids += [grids[0]] * (ATTEMPTS - len(grids))
            submission[task].append({f"attempt_{i + 1}": g for i, g in enumerate(grids)})
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(submission, f)
    os.replace(path + ".tmp", path)


# ============================================================================ benchmark

def bench_loader(data_dir, global_batch_size=768, batches=200):
    """Examples per second of the training loader on this dataset (one process, like one data-parallel rank)."""
    loader = TrainLoader(data_dir, global_batch_size, seed=0)
    start = time.time()
    loader.next_batch()
    first = time.time() - start
    start = time.time()
    for _ in range(batches):
        loader.next_batch()
    seconds = time.time() - start
    rate = batches * global_batch_size / seconds
    print(f"{data_dir}: {rate:,.0f} examples/s over {batches} batches of {global_batch_size} "
          f"(first batch, with the epoch's plan: {first * 1000:.0f} ms)")
    return rate


def disk_size(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


# ============================================================================ command line

def default_out(args):
    subsets = [s.partition("=")[0] for s in args.subsets]
    if subsets == DEFAULT_SUBSETS[args.version][0]:
        name = f"arc{args.version}concept"  # the official directory names
    else:
        name = "arc-" + "-".join(subsets)
    name += ("-tasks" if args.tasks else "") + (f"-canvas{args.canvas}" if args.canvas != SIDE else "")
    return os.path.join("data", f"{name}-aug-{args.num_aug}" + ("-official" if args.official_layout else ""))


def run(args):
    started = time.time()
    out = args.out or default_out(args)
    keep = [t for t in args.tasks.split(",") if t] if args.tasks else None
    loaded = load_subsets(args.source, args.subsets, args.test_set, keep)
    overlap = _note_copies(loaded, args.test_set)
    splits, shared, names, test_tasks = build(loaded, args.test_set, args.num_aug, args.seed, args.translation,
                                              args.canvas)
    if overlap:
        splits["train"][0]["train_test_overlap"] = overlap
    extra = {"test_puzzles.json": scored_tasks_json(test_tasks)}
    if args.official_layout:
        status = write_dataset(out, official_arrays(splits, shared), names, args.overwrite, extra,
                               sources=[args.source])
    else:
        status = write_dataset(out, splits, names, args.overwrite, extra, shared=shared, sources=[args.source])
    n_tasks = sum(len(t) for _, t in loaded)
    n_train, n_test = (len(sets["all"]["example_sources"]) for _, sets in splits.values())
    short = int(np.sum(np.diff(splits["train"][1]["all"]["group_indices"]) < 1 + args.num_aug))
    if short:  # the official builder says "augmentation not full" for each
        print(f"{short} tasks have fewer than {args.num_aug} distinct augmentations (few colours, symmetric grids)")
    print(f"{out}: {status}; {n_tasks} tasks, {len(names) - 1} puzzle identifiers, train {n_train} examples, "
          f"test {n_test} ({len(test_tasks)} tasks); {disk_size(out) / 1e6:.0f} MB, {time.time() - started:.1f} s")
    return out


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default=DEFAULT_SOURCE,
                   help="directory of arc-agi_NAME_challenges.json files or of NAME/ task directories "
                        "(default %(default)s)")
    p.add_argument("--version", type=int, choices=[1, 2], default=1,
                   help="the paper's subsets: 1 = training evaluation concept, test on evaluation; "
                        "2 = training2 evaluation2 concept, test on evaluation2 (default %(default)s)")
    p.add_argument("--subsets", nargs="+", metavar="NAME[=PATH]", help="subsets to read (default: --version's)")
    p.add_argument("--test_set", metavar="NAME", help="the subset whose test inputs are scored (default: --version's)")
    p.add_argument("--tasks", metavar="ID,ID,...", help="keep only these task ids (e.g. a small CPU run)")
    p.add_argument("--num_aug", type=int, default=1000, help="augmentations per task (paper 1000; default %(default)s)")
    p.add_argument("--translation", choices=["per_draw", "fixed", "none"], default="per_draw",
                   help="offsets of training examples: per_draw = fresh random ones in every batch, fixed = drawn "
                        "once here (the official builder), none = all at (0, 0) (default %(default)s)")
    p.add_argument("--canvas", type=int, default=SIDE, metavar="N",
                   help="canvas side (default %(default)s, the paper's); smaller ones (every grid must fit) make "
                        "small CPU runs far cheaper, e.g. --canvas 10 for tasks of grids up to 10x10")
    p.add_argument("--official_layout", action="store_true",
                   help="write every example's tokens (the official layout, ~1.8 kB per example: ~7 GB for the "
                        "paper's ARC-AGI-1 set) instead of the canvas layout; implies fixed offsets")
    p.add_argument("--out", help="output directory (default data/arc<version>concept-aug-<num_aug>, as the official)")
    add_overwrite(p)
    p.add_argument("--seed", type=int, default=42, help="seed of augmentations and offsets (default %(default)s, "
                                                         "the official)")
    p.add_argument("--quick_start", action="store_true",
                   help="the data of config/arc_cpu.py: " + ", ".join(
                       f"--{k} {' '.join(v) if isinstance(v, list) else v}" for k, v in QUICK_START.items()))
    p.add_argument("--bench", metavar="DIR", help="measure the training loader's examples/s on dataset DIR and exit")
    return p


def parse_args(argv=None):
    p = build_parser()
    args = p.parse_args(argv)
    if args.quick_start:  # its settings, where the command line leaves the defaults
        vars(args).update({k: v for k, v in QUICK_START.items() if getattr(args, k) == p.get_default(k)})
    default_subsets, default_test = DEFAULT_SUBSETS[args.version]
    args.subsets = args.subsets or list(default_subsets)
    args.test_set = args.test_set or (default_test if args.subsets == default_subsets else None)
    if args.test_set is None:
        p.error("--subsets given: name the subset to score with --test_set")
    require_at_least(p, args, {"num_aug": 0})
    if not 1 <= args.canvas <= SIDE:
        p.error(f"--canvas must be 1 to {SIDE}")
    if args.official_layout and args.translation == "per_draw":
        args.translation = "fixed"
    return args


def main(argv=None):
    args = parse_args(argv)
    prepare_common.main("prepare_arc.py", lambda: bench_loader(args.bench) if args.bench else run(args))


if __name__ == "__main__":
    main()
