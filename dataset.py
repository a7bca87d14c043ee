"""The one dataset format every task shares: write atomically, read memory-mapped, the loaders.

On disk (the official TinyRecursiveModels / HRM layout, so datasets move between the two code bases):

    DIR/identifiers.json                 list of puzzle-identifier names, index = id, 0 = "<blank>"
    DIR/{train,test}/dataset.json        metadata (META_FIELDS below)
    DIR/{train,test}/{set}__inputs.npy              (N, seq_len) uint8   tokens
    DIR/{train,test}/{set}__labels.npy              (N, seq_len) uint8   tokens, ignore_label_id = unsupervised
    DIR/{train,test}/{set}__puzzle_identifiers.npy  (P,)         int32   one identifier per puzzle
    DIR/{train,test}/{set}__puzzle_indices.npy      (P+1,)       int32   examples of puzzle p: [pi[p], pi[p+1])
    DIR/{train,test}/{set}__group_indices.npy       (G+1,)       int32   puzzles of group g: [gi[g], gi[g+1])

A group is one original puzzle with its augmentations, a puzzle holds one identifier, an example is an
(input, label) pair. Every task writes a single set called "all", as the official builders do.
ARC uses a compact equivalent, the canvas layout (see "the canvas layout" below), read through the same API.
"""
import contextlib
import filecmp
import hashlib
import importlib
import json
import os
import shutil
import tempfile

try:
    import fcntl
except ImportError:  # Windows: no advisory locks
    fcntl = None

import numpy as np

IGNORE_LABEL_ID = -100  # what the loss ignores; labels equal to meta["ignore_label_id"] become this
FIELDS = ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")
# The official builders store tokens as uint8 and the index arrays as int32.
FIELD_DTYPES = {"inputs": np.uint8, "labels": np.uint8, "puzzle_identifiers": np.int32,
                "puzzle_indices": np.int32, "group_indices": np.int32}
BASE_META = ("pad_id", "ignore_label_id", "blank_identifier_id", "vocab_size", "seq_len",
             "num_puzzle_identifiers")
OPTIONAL_META = ("task", "train_test_overlap")  # ours: "sudoku" | "maze" | "arc"; the count of test examples
# also in train, kept on request (prepare_*.py --allow_overlap). Official datasets lack both (see task_of).
CANVAS_META = ("layout", "offsets")  # the canvas layout's: "canvas", and "per_draw" | "fixed" (see below)
# The tasks: each one's knowledge (its rules, parsing, pictures and scores) lives in its prepare script,
# behind the same names in all three; train.py and sample.py reach a task only through this table.
TASKS = {"sudoku": "prepare_sudoku", "maze": "prepare_maze", "arc": "prepare_arc"}
# How to tell an official dataset's task from its shape: (vocab_size, seq_len) -> task.
PLAN_CHUNK = 1 << 20  # puzzle draws handled at once while a pass is planned (bounds its memory)
EXAMPLE_STREAM = 0x5A3F  # tags the seeds of the example order inside a batch, apart from other streams
TASK_SHAPES = {(11, 81): "sudoku", (6, 900): "maze", (12, 900): "arc"}
DERIVED_META = ("total_groups", "mean_puzzle_examples", "total_puzzles", "sets")
META_FIELDS = BASE_META + DERIVED_META


class DatasetError(ValueError):
    """A dataset that is missing or breaks the format; the message is one line meant for the user."""


# ----------------------------------------------------------------------------- reading text input

def read_text(path):
    """The text of a UTF-8 file (a leading BOM dropped), or a DatasetError naming the file and the
    first byte that is not UTF-8, so that every reader of user files fails in one line."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DatasetError(f"{path}: cannot be read ({e.strerror})") from None
    bom = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    try:
        return data[bom:].decode("utf-8")
    except UnicodeDecodeError as e:
        offset = bom + e.start
        raise DatasetError(f"{path}: byte {offset} (0x{data[offset]:02x}) is not UTF-8 text; "
                           f"fix: save the file as UTF-8") from None


# ----------------------------------------------------------------------------- invariants

def check_split(meta, sets, where="<memory>"):
    """Raise DatasetError naming the offending file if any invariant of one split is broken."""
    missing = [k for k in BASE_META if k not in meta]
    if missing:
        raise DatasetError(f"{where}/dataset.json: missing keys {missing}")
    for key in ("vocab_size", "seq_len", "num_puzzle_identifiers", "pad_id", "blank_identifier_id"):
        low = 1 if key in ("vocab_size", "seq_len", "num_puzzle_identifiers") else 0
        if type(meta[key]) is not int or meta[key] < low:  # bool and float are not counts
            raise DatasetError(f"{where}/dataset.json: {key} is {meta[key]!r}, not an integer >= {low}; "
                               f"rebuild the dataset")
    check = _check_canvas_set if is_canvas(meta) else _check_set
    for set_name, arrays in sets.items():
        check(meta, arrays, lambda field: f"{where}/{set_name}__{field}.npy")


def sample_rows(n, count=1024):
    """Row indices to check or fingerprint: every row of an in-memory array up to `count`, else
    `count` rows evenly spread (first and last included), so that opening a dataset stays cheap."""
    return np.unique(np.linspace(0, n - 1, min(n, count)).astype(np.int64)) if n else np.zeros(0, np.int64)


def _check_fields(a, fields, path):
    for field in fields:
        if field not in a:
            raise DatasetError(f"{path(field)}: missing")
        if not np.issubdtype(a[field].dtype, np.integer):
            raise DatasetError(f"{path(field)}: dtype {a[field].dtype} is not an integer type")


def _check_set(meta, a, path):
    seq_len, vocab = meta["seq_len"], meta["vocab_size"]
    _check_fields(a, FIELDS, path)
    n_examples = len(a["inputs"])
    for field in ("inputs", "labels"):
        if a[field].shape != (n_examples, seq_len):
            raise DatasetError(f"{path(field)}: shape {a[field].shape}, expected ({n_examples}, {seq_len})")
        rows = a[field][sample_rows(n_examples)]  # all of them when writing; a sample of a memory map
        if n_examples and (rows.min() < 0 or rows.max() >= vocab):
            raise DatasetError(f"{path(field)}: tokens outside [0, vocab_size={vocab})")
    _check_puzzles(meta, a, path, n_examples)


def _check_puzzles(meta, a, path, n_examples):
    _check_offsets(a["puzzle_indices"], n_examples, path("puzzle_indices"), "examples")
    n_puzzles = len(a["puzzle_indices"]) - 1
    _check_offsets(a["group_indices"], n_puzzles, path("group_indices"), "puzzles")
    ids = a["puzzle_identifiers"]
    if ids.shape != (n_puzzles,):
        raise DatasetError(f"{path('puzzle_identifiers')}: shape {ids.shape}, expected ({n_puzzles},)")
    if n_puzzles and (ids.min() < 0 or ids.max() >= meta["num_puzzle_identifiers"]):
        raise DatasetError(f"{path('puzzle_identifiers')}: identifiers outside "
                           f"[0, num_puzzle_identifiers={meta['num_puzzle_identifiers']})")


def _check_offsets(offsets, length, where, what):
    """Offsets into a list of `length` items: start at 0, never decrease, end at `length`."""
    if offsets.ndim != 1 or len(offsets) < 1:
        raise DatasetError(f"{where}: must be a 1-D array of at least one offset")
    if offsets[0] != 0 or offsets[-1] != length:
        raise DatasetError(f"{where}: must start at 0 and end at the number of {what} ({length}), "
                           f"got {offsets[0]} .. {offsets[-1]}")
    if np.any(np.diff(offsets) < 0):
        raise DatasetError(f"{where}: offsets decrease")


def derived_meta(sets):
    """The metadata fields that follow from the arrays (counted over all sets of a split)."""
    groups = sum(len(a["group_indices"]) - 1 for a in sets.values())
    puzzles = sum(len(a["puzzle_indices"]) - 1 for a in sets.values())
    examples = sum(len(a["inputs"] if "inputs" in a else a["example_sources"]) for a in sets.values())
    return {"total_groups": groups, "total_puzzles": puzzles,
            "mean_puzzle_examples": examples / puzzles if puzzles else 0.0, "sets": list(sets)}


# ----------------------------------------------------------------------------- writing

def write_dataset(out_dir, splits, identifiers, overwrite=False, extra_files=None, shared=None, sources=()):
    """Write a dataset atomically: everything goes to a temporary sibling directory, renamed at the end.

    splits: {"train": (meta, {"all": arrays}), "test": (meta, {...})}; meta needs BASE_META, the
    DERIVED_META fields are computed here. identifiers: names for identifier ids (0 = "<blank>").
    extra_files: {relative path: text} written alongside (e.g. the source puzzles as CSV).
    shared: {name: array} saved as DIR/name.npy, the canvas layout's arrays (CANVAS_SHARED), checked with it.
    sources: the input files or directories the dataset is built from; out_dir may not be or hold one.
    An out_dir holding the very same dataset is left alone; a different one written by this module is
    replaced only with overwrite, and a directory holding anything else never (see _refuse_foreign).
    Returns "written" or "unchanged".
    """
    out_dir = os.path.realpath(out_dir)  # a link to a directory: the dataset goes where it points
    for source in sources:
        if source and _is_within(source, out_dir):
            raise DatasetError(f"{out_dir}: holds the source {source}, which writing the dataset there would "
                               f"replace; fix: pick another --out")
    prepared = {split: _prepare_split(split, meta, sets) for split, (meta, sets) in splits.items()}
    for split, (meta, sets) in prepared.items():
        if is_canvas(meta):
            check_canvas(meta, sets, shared or {}, where=split)
    if os.path.lexists(out_dir) and not os.path.isdir(out_dir):
        raise DatasetError(f"{out_dir}: is a file, not a directory; fix: pick another --out")
    tmp = None
    try:
        parent = os.path.dirname(out_dir)
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.tmp-", dir=parent)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the dataset should look like any directory
        _write_tree(tmp, prepared, identifiers, extra_files, shared)
        return _move_into_place(tmp, out_dir, overwrite)
    except OSError as e:  # read-only, full disk, a path through a file: one line, and no half-written files
        where = e.filename or out_dir
        raise DatasetError(f"{out_dir}: cannot write the dataset ({e.strerror or e} at {where}); "
                           f"fix: free space, or pick another --out") from None
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


MANIFEST = "manifest.json"  # ours: every file of the dataset and its hash, so --overwrite knows what it owns


def file_hash(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def _write_tree(tmp, prepared, identifiers, extra_files, shared):
    """The dataset's files, and the manifest listing them, into the empty directory tmp."""
    for split, (meta, sets) in prepared.items():
        os.makedirs(os.path.join(tmp, split))
        with open(os.path.join(tmp, split, "dataset.json"), "w") as f:
            json.dump(meta, f)
        for set_name, arrays in sets.items():
            for field, array in arrays.items():
                np.save(os.path.join(tmp, split, f"{set_name}__{field}.npy"), array)
    for name, array in (shared or {}).items():
        np.save(os.path.join(tmp, f"{name}.npy"), np.ascontiguousarray(array))
    with open(os.path.join(tmp, "identifiers.json"), "w") as f:
        json.dump(list(identifiers), f)
    for rel, text in (extra_files or {}).items():
        os.makedirs(os.path.dirname(os.path.join(tmp, rel)), exist_ok=True)
        with open(os.path.join(tmp, rel), "w") as f:
            f.write(text)
    with open(os.path.join(tmp, MANIFEST), "w") as f:
        json.dump({"files": {rel: file_hash(os.path.join(tmp, rel)) for rel in _files(tmp)}}, f, indent=0)


def _prepare_split(split, meta, sets):
    fields = CANVAS_FIELDS if is_canvas(meta) else FIELDS
    missing = [f"{name}__{f}.npy" for name, arrays in sets.items() for f in fields if f not in arrays]
    if missing:
        raise DatasetError(f"{split}/{missing[0]}: missing")
    sets = {name: {f: np.ascontiguousarray(arrays[f], dtype=FIELD_DTYPES[f]) if _fits(arrays[f], f)
                   else _dtype_error(split, name, f) for f in fields} for name, arrays in sets.items()}
    meta = {k: meta[k] for k in BASE_META + OPTIONAL_META + CANVAS_META if k in meta} | derived_meta(sets)
    check_split(meta, sets, where=split)
    return meta, sets


def _fits(array, field):
    array = np.asarray(array)
    if array.size == 0:
        return True
    info = np.iinfo(FIELD_DTYPES[field])
    return np.issubdtype(array.dtype, np.integer) and array.min() >= info.min and array.max() <= info.max


def _dtype_error(split, set_name, field):
    raise DatasetError(f"{split}/{set_name}__{field}.npy: values do not fit the format's "
                       f"{np.dtype(FIELD_DTYPES[field]).name}")


def _move_into_place(tmp, out_dir, overwrite):
    if os.path.exists(out_dir) and os.listdir(out_dir):
        if _same_tree(tmp, out_dir):
            return "unchanged"
        _refuse_foreign(out_dir)
        if not overwrite:
            raise DatasetError(f"{out_dir}: already holds a different dataset; pass --overwrite to replace it, "
                               f"or pick another --out")
        with _locked(out_dir, exclusive=True) as free:
            if not free:
                raise DatasetError(f"{out_dir}: a running train.py reads this dataset; nothing was changed: wait "
                                   f"for it to end, or pick another --out")
            old = tmp + ".old"
            os.replace(out_dir, old)  # a directory cannot be replaced by rename while non-empty
            os.replace(tmp, out_dir)
        shutil.rmtree(old)
        return "written"
    if os.path.exists(out_dir):
        os.rmdir(out_dir)
    os.replace(tmp, out_dir)
    return "written"


def _refuse_foreign(out_dir):
    """Refuse a non-empty out_dir unless it is a dataset this module wrote and nobody changed: its
    manifest lists every file with its hash, and no other file or folder is there. A dataset from
    before the manifest is not recognised: the user removes it, or picks another --out."""
    try:
        with open(os.path.join(out_dir, MANIFEST)) as f:
            listed = dict(json.load(f)["files"])
    except (OSError, ValueError, KeyError, TypeError):
        listed = {}
    folders = {os.path.dirname(rel) for rel in listed}
    folders |= {os.path.dirname(f) for f in folders}
    foreign = [rel for rel in _files(out_dir)
               if rel != MANIFEST and listed.get(rel) != file_hash(os.path.join(out_dir, rel))]
    foreign += [rel + os.sep for rel in _folders(out_dir) if rel not in folders]
    if foreign:
        shown = ", ".join(sorted(foreign)[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise DatasetError(f"{out_dir}: holds files that are not a dataset written here, or were changed since "
                           f"({shown}); nothing was changed; --overwrite replaces only an unchanged dataset this "
                           f"project wrote: pick another --out")


def _folders(root):
    return sorted(os.path.relpath(os.path.join(d, sub), root) for d, subs, _ in os.walk(root) for sub in subs)


@contextlib.contextmanager
def _locked(directory, exclusive):
    """An advisory lock (flock) on a directory itself, no file added: training holds it shared for as
    long as it reads a dataset (`reading`), --overwrite needs it exclusive. Yields whether it was had."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        yield True  # nothing there to protect
        return
    try:
        if fcntl:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        yield True
    except OSError:
        yield False
    finally:
        os.close(fd)


def reading(data_dir):
    """Hold data_dir while a run reads it, so that --overwrite cannot replace it under the run."""
    return _locked(data_dir, exclusive=False)


def _is_within(path, directory):
    """True when path is directory itself or lies somewhere inside it (links resolved)."""
    path, directory = os.path.realpath(path), os.path.realpath(directory)
    return os.path.commonpath([path, directory]) == directory


def _files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def _same_tree(a, b):
    if _files(a) != _files(b):
        return False
    return all(filecmp.cmp(os.path.join(a, rel), os.path.join(b, rel), shallow=False) for rel in _files(a))


# ----------------------------------------------------------------------------- reading

def load_split(data_dir, split):
    """(meta, {set: {field: array}}) of one split; inputs/labels memory-mapped, never copied into RAM."""
    split_dir = os.path.join(data_dir, split)
    meta_path = os.path.join(split_dir, "dataset.json")
    if not os.path.isfile(meta_path):
        raise DatasetError(f"{meta_path}: not found; make the dataset first, e.g. "
                           f"`python prepare_sudoku.py --out {data_dir}` (or prepare_maze.py / prepare_arc.py)")
    try:
        meta = json.loads(read_text(meta_path))
    except json.JSONDecodeError as e:
        raise DatasetError(f"{meta_path}: not valid JSON ({e}); rebuild the dataset") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("sets", []), list):
        raise DatasetError(f"{meta_path}: not a dataset.json (expected an object with a list of sets); rebuild it")
    sets = {}
    for set_name in meta.get("sets", ["all"]):
        sets[set_name] = {}
        for field in CANVAS_FIELDS if is_canvas(meta) else FIELDS:
            sets[set_name][field] = _load_array(os.path.join(split_dir, f"{set_name}__{field}.npy"))
    check_split(meta, sets, where=split_dir)
    _check_derived(meta, sets, meta_path)
    if is_canvas(meta):
        shared = _load_shared(data_dir)
        check_canvas(meta, sets, shared, where=split_dir)
        sets = {name: _with_tokens(meta, arrays, shared, f"{split_dir}/{name}") for name, arrays in sets.items()}
    return meta, sets


def _load_array(path):
    """A memory-mapped .npy, or one line saying why not (missing, truncated, not an array)."""
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: not found; rebuild the dataset")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DatasetError(f"{path}: unreadable ({str(e).splitlines()[0][:100]}); it may be truncated: "
                           f"rebuild the dataset") from None


def _check_derived(meta, sets, meta_path):
    """dataset.json's counts must be those of the arrays: the schedule and the loader are built on them."""
    for key, value in derived_meta(sets).items():
        if key in meta and key != "sets" and (isinstance(meta[key], bool) or not isinstance(meta[key], (int, float))
                                              or not np.isclose(meta[key], value, rtol=1e-6, atol=1e-9)):
            raise DatasetError(f"{meta_path}: {key} is {meta[key]} but the arrays hold {value:g}; rebuild the dataset")


def fingerprint(data_dir, splits):
    """A short hash of every byte of the given splits (and of the files they share: identifiers, the
    canvas arrays), stored in checkpoints so that a resume on other or changed data is refused."""
    digest = hashlib.sha256()
    shared = ["identifiers.json"] + [f"{name}.npy" for name in CANVAS_SHARED]
    for rel in shared + [os.path.join(split, f) for split in splits
                         for f in sorted(os.listdir(os.path.join(data_dir, split)))]:
        if os.path.isfile(os.path.join(data_dir, rel)):
            digest.update(f"{rel}:{file_hash(os.path.join(data_dir, rel))};".encode())
    return digest.hexdigest()[:16]


def task_of(meta):
    """The name of the task a split holds: its "task" key, else recognised by shape; None if unknown."""
    return meta.get("task") or TASK_SHAPES.get((meta.get("vocab_size"), meta.get("seq_len")))


def task_script(name):
    """The prepare script (module) of a task named in TASKS."""
    return importlib.import_module(TASKS[name])


def _collate(meta, inputs, labels, identifiers):
    """Cast to int32 and map ignored labels to IGNORE_LABEL_ID, as the official loader does."""
    labels = np.array(labels, dtype=np.int32)
    if meta.get("ignore_label_id") is not None:
        labels[labels == meta["ignore_label_id"]] = IGNORE_LABEL_ID
    return {"inputs": np.array(inputs, dtype=np.int32), "labels": labels,
            "puzzle_identifiers": np.array(identifiers, dtype=np.int32)}


def _local_slice(global_batch_size, rank, world_size):
    if world_size < 1 or not 0 <= rank < world_size:
        raise DatasetError(f"rank {rank} is outside world_size {world_size}")
    if global_batch_size % world_size:
        raise DatasetError(f"global_batch_size {global_batch_size} is not divisible by world_size "
                           f"{world_size}; pick a multiple of {world_size}")
    local = global_batch_size // world_size
    return local, slice(rank * local, (rank + 1) * local)


class TrainLoader:
    """Official training-epoch semantics, deterministic and resumable.

    A pass covers `epochs_per_iter` epochs (the official loader's name; its pretrain.py sets it to the
    evaluation interval): a Philox generator seeded seed + pass + 1 (the official counter starts at 1)
    shuffles the groups once per epoch and the permutations are concatenated; one puzzle is drawn per
    group, and its examples (in random order, a random subset when the batch has no room for all; the
    rest are skipped this time) fill global batches in that order, across epoch boundaries. The last
    incomplete batch of a pass is dropped. Group order and puzzle choice match the official loader for
    the same seed; the order of the examples inside a puzzle is drawn per batch from (seed, pass,
    batch) (the official code uses numpy's unseeded global generator, which cannot be resumed). The
    pass is planned as compact arrays, in seconds for the paper's ARC pass of 10000 epochs, and each
    batch is filled when it is read. Every rank builds the same global batch and keeps its slice
    [rank*local:(rank+1)*local].
    """

    def __init__(self, data_dir, global_batch_size, rank=0, world_size=1, seed=0, epochs_per_iter=1):
        self.meta, sets = load_split(data_dir, "train")
        if len(sets) != 1:
            raise DatasetError(f"{data_dir}/train: {len(sets)} sets; this loader reads exactly one")
        (self.arrays,) = sets.values()
        self.global_batch_size, self.seed, self.epochs_per_iter = global_batch_size, seed, epochs_per_iter
        self.local_batch_size, self.slice = _local_slice(global_batch_size, rank, world_size)
        self.puzzle_indices = np.asarray(self.arrays["puzzle_indices"], dtype=np.int64)
        self.group_indices = np.asarray(self.arrays["group_indices"], dtype=np.int64)
        self.puzzle_ids = np.asarray(self.arrays["puzzle_identifiers"], dtype=np.int32)
        self.puzzle_sizes = np.diff(self.puzzle_indices)
        if len(self.group_indices) < 2 or np.any(np.diff(self.group_indices) == 0):
            raise DatasetError(f"{data_dir}/train: every group needs at least one puzzle")
        smallest = epochs_per_iter * np.minimum.reduceat(self.puzzle_sizes, self.group_indices[:-1]).sum()
        if smallest < global_batch_size:
            raise DatasetError(f"{data_dir}/train: a pass of {epochs_per_iter} epoch(s) may hold only {smallest} "
                               f"examples, fewer than global_batch_size {global_batch_size}; lower the batch "
                               f"size or raise epochs_per_iter")
        # From the official figure total_groups * mean_puzzle_examples / global_batch_size (see
        # total_train_steps), rounded down: exact when every puzzle has one example (Sudoku, Maze), an
        # upper estimate otherwise (ARC), where truncation shortens a pass. With epochs_per_iter > 1
        # an epoch holds that figure on average, unrounded, since batches run across epochs.
        per_epoch = self.meta["total_groups"] * self.meta["mean_puzzle_examples"] / global_batch_size
        self.batches_per_epoch = int(per_epoch)
        self.batches_per_pass = int(per_epoch * epochs_per_iter)
        self.iteration, self.index = 0, 0  # pass number, batch number within the pass
        self._plan = None  # (pass, puzzle per draw, first draw of each batch)

    @property
    def epoch(self):
        """Epochs started so far, counted at pass granularity (exact when epochs_per_iter is 1)."""
        return self.iteration * self.epochs_per_iter

    def _pass_plan(self, iteration):
        """(puzzle per draw, first draw of each batch): the official group order and puzzle choice of
        pass `iteration`, in compact arrays (the paper's ARC pass draws 9.6M puzzles)."""
        rng = np.random.Generator(np.random.Philox(seed=self.seed + iteration + 1))
        n_groups = len(self.group_indices) - 1
        groups = np.empty((self.epochs_per_iter, n_groups), np.min_scalar_type(n_groups))
        for epoch in groups:  # every permutation before any puzzle draw: the official stream order
            epoch[:] = rng.permutation(n_groups)
        groups = groups.reshape(-1)
        puzzles = np.empty(len(groups), np.min_scalar_type(len(self.puzzle_sizes)))
        for lo in range(0, len(groups), PLAN_CHUNK):  # one draw per group, in chunks: the same stream
            g = groups[lo:lo + PLAN_CHUNK]
            puzzles[lo:lo + PLAN_CHUNK] = rng.integers(self.group_indices[g], self.group_indices[g + 1])
        return puzzles, _batch_starts(self.puzzle_sizes, puzzles, self.global_batch_size)

    def _batch_draws(self, puzzles, lo, hi):
        """Example and puzzle index of each row of the global batch holding draws lo..hi-1: every example of
        each puzzle in random order, only the first ones of the last puzzle where the batch has no more
        room. The order comes from (seed, pass, batch), so a resumed run and every rank see the same."""
        puzzles = puzzles[lo:hi].astype(np.int64)
        sizes = self.puzzle_sizes[puzzles]
        if sizes.max() == 1:  # one example each: always for Sudoku and Maze
            return self.puzzle_indices[puzzles], puzzles
        owner = np.repeat(np.arange(len(puzzles)), sizes)
        rng = np.random.default_rng([EXAMPLE_STREAM, self.seed, self.iteration, self.index])
        order = np.lexsort((rng.random(len(owner)), owner))[:self.global_batch_size]  # shuffled within puzzles
        who = owner[order]  # the draw each row comes from; order - its first position is the example within
        rows = self.puzzle_indices[puzzles[who]] + order - (np.cumsum(sizes) - sizes)[who]
        return rows, puzzles[who]

    def next_batch(self):
        """The next local batch: dict of int32 numpy arrays inputs (B, L), labels (B, L), puzzle_identifiers (B,)."""
        while True:
            if self._plan is None or self._plan[0] != self.iteration:
                self._plan = (self.iteration, *self._pass_plan(self.iteration))
            _, draws, starts = self._plan
            if self.index < len(starts) - 1:
                break
            self.iteration, self.index = self.iteration + 1, 0
        rows, puzzle = self._batch_draws(draws, starts[self.index], starts[self.index + 1])
        self.index += 1
        if isinstance(self.arrays["inputs"], CanvasTokens):
            return self._canvas_batch(rows, puzzle)  # draws offsets for the global batch, then slices
        rows, puzzle = rows[self.slice], puzzle[self.slice]
        order = np.argsort(rows, kind="stable")  # sorted reads are kinder to a memory map
        inputs = np.empty((len(rows), self.meta["seq_len"]), self.arrays["inputs"].dtype)
        labels = np.empty_like(inputs)
        inputs[order], labels[order] = self.arrays["inputs"][rows[order]], self.arrays["labels"][rows[order]]
        return _collate(self.meta, inputs, labels, self.puzzle_ids[puzzle])

    def _canvas_batch(self, rows, puzzles):
        """A canvas-layout batch. With meta["offsets"] == "per_draw" the translatable examples get fresh
        offsets, uniform over the room each has (the official ARC builder's distribution, redrawn every batch rather
        than once at build time); drawn for the global batch from (seed, pass, batch), so resume and every
        rank see the same ones."""
        canvas = self.arrays["inputs"].canvas
        ids = self.puzzle_ids[puzzles]
        offsets = canvas.offsets[rows]
        if self.meta.get("offsets") == "per_draw":
            rng = np.random.default_rng([self.seed, self.iteration, self.index])
            fresh = (rng.random((len(rows), 2)) * (canvas.room(rows, ids) + 1)).astype(np.uint8)
            offsets = np.where(canvas.translate[rows, None] == 1, fresh, 0).astype(np.uint8)
        local = self.slice
        tokens = canvas.compose(rows[local], ids[local], offsets[local])
        return _collate(self.meta, tokens[:, 0], tokens[:, 1], ids[local])

    def state_dict(self):
        return {"iteration": int(self.iteration), "index": int(self.index), "seed": int(self.seed),
                "global_batch_size": int(self.global_batch_size), "epochs_per_iter": int(self.epochs_per_iter)}

    def load_state_dict(self, state):
        for key in ("global_batch_size", "epochs_per_iter"):
            if state.get(key, getattr(self, key)) != getattr(self, key):
                raise DatasetError(f"loader state was saved with {key} {state[key]}, now {getattr(self, key)}; "
                                   f"resume with the same {key}")
        self.iteration, self.index = int(state["iteration"]), int(state["index"])
        self.seed = int(state.get("seed", self.seed))


def _batch_starts(puzzle_sizes, puzzles, batch_size):
    """Where each global batch starts in the pass's puzzle draws, plus where the last one ends.

    The draws' examples fill batches in order; a puzzle that overflows a batch gives it only what fits,
    skips the rest, and the next batch starts with the next draw; the last partial batch is dropped.
    So a batch starting at draw s ends at the first draw e whose examples reach s's start + batch_size:
    one binary search per batch instead of a loop over 9.6M draws."""
    ends = np.empty(len(puzzles), np.int64)  # examples up to and including each draw
    total = 0
    for lo in range(0, len(puzzles), PLAN_CHUNK):
        np.cumsum(puzzle_sizes[puzzles[lo:lo + PLAN_CHUNK]], out=ends[lo:lo + PLAN_CHUNK])
        ends[lo:lo + PLAN_CHUNK] += total
        total = int(ends[min(lo + PLAN_CHUNK, len(puzzles)) - 1])
    starts, before = [0], 0
    while True:
        last = int(np.searchsorted(ends, before + batch_size))  # first draw reaching a full batch
        if last == len(ends):
            return np.asarray(starts, np.int64)
        starts.append(last + 1)
        before = int(ends[last])


def eval_batches(data_dir, split, global_batch_size, rank=0, world_size=1):
    """Every example of a split in order, in global batches padded with blank rows.

    Yields (local batch dict, number of real rows in this rank's slice); padding rows have
    inputs = pad_id, labels = IGNORE_LABEL_ID, puzzle_identifiers = blank_identifier_id."""
    meta, sets = load_split(data_dir, split)
    local, _ = _local_slice(global_batch_size, rank, world_size)
    for arrays in sets.values():
        total = len(arrays["inputs"])
        owner_of = np.asarray(arrays["puzzle_indices"])
        ids = np.asarray(arrays["puzzle_identifiers"])
        for start in range(0, total, global_batch_size):
            lo = min(start + rank * local, total)
            hi = min(start + (rank + 1) * local, total)
            puzzles = np.searchsorted(owner_of, np.arange(lo, hi), side="right") - 1
            batch = _collate(meta, *_inputs_and_labels(arrays, lo, hi), ids[puzzles])
            yield _pad_rows(batch, local, meta), hi - lo


def _inputs_and_labels(arrays, lo, hi):
    """Examples lo..hi-1 of a set; a canvas-layout set composes each example once for both."""
    if isinstance(arrays["inputs"], CanvasTokens) and hi > lo:
        tokens = arrays["inputs"].canvas.compose(np.arange(lo, hi))
        return tokens[:, 0], tokens[:, 1]
    return arrays["inputs"][lo:hi], arrays["labels"][lo:hi]


def _pad_rows(batch, rows, meta):
    missing = rows - len(batch["inputs"])
    if missing == 0:
        return batch
    fill = {"inputs": meta["pad_id"], "labels": IGNORE_LABEL_ID, "puzzle_identifiers": meta["blank_identifier_id"]}
    return {k: np.concatenate([v, np.full((missing,) + v.shape[1:], fill[k], np.int32)]) for k, v in batch.items()}


def total_train_steps(meta, epochs, global_batch_size):
    """The official training length: epochs * total_groups * mean_puzzle_examples / global_batch_size."""
    return int(epochs * meta["total_groups"] * meta["mean_puzzle_examples"] / global_batch_size)


# ----------------------------------------------------------------------------- the canvas layout
# ARC's 1000 augmentations of ~1000 tasks would take ~7 GB as token arrays. The canvas layout stores what
# those tokens are made of, and composes them when they are read:
#
#     DIR/canvas_sources.npy          (S, V, 2, seq_len) uint8  each source (input, label) pair in each of V views
#                                                               (ARC: the 8 dihedral transforms), at offset (0, 0)
#     DIR/canvas_room.npy             (S, V, 2) uint8           the largest (row, column) offset keeping it on canvas
#     DIR/identifier_views.npy        (I,) uint8                the view each puzzle identifier shows
#     DIR/identifier_token_maps.npy   (I, vocab_size) uint8     each identifier's token map (ARC: a colour permutation)
#     DIR/{split}/{set}__example_sources.npy    (N,) int32      the source pair of each example
#     DIR/{split}/{set}__example_offsets.npy    (N, 2) uint8    its (row, column) offset on the square canvas
#     DIR/{split}/{set}__example_translate.npy  (N,) uint8      1: its offset is random, 0: kept at (0, 0)
#     + puzzle_identifiers, puzzle_indices, group_indices as above; dataset.json has "layout": "canvas".
#
# Example n of a puzzle with identifier i is token_map[i][shift(canvas_sources[source[n], view[i]], offset[n])].
# load_split returns lazy "inputs" / "labels" that read exactly like the official arrays with the stored
# offsets, so every reader of a split works unchanged. TrainLoader, when dataset.json has "offsets":
# "per_draw", gives the translatable examples fresh offsets in every batch instead (see _canvas_batch).
CANVAS_FIELDS = ("example_sources", "example_offsets", "example_translate", "puzzle_identifiers",
                 "puzzle_indices", "group_indices")
CANVAS_SHARED = ("canvas_sources", "canvas_room", "identifier_views", "identifier_token_maps")
FIELD_DTYPES.update(example_sources=np.int32, example_offsets=np.uint8, example_translate=np.uint8)


def is_canvas(meta):
    return meta.get("layout") == "canvas"


def canvas_side(meta):
    side = int(round(meta["seq_len"] ** 0.5))
    if side * side != meta["seq_len"]:
        raise DatasetError(f"canvas layout needs a square seq_len, got {meta['seq_len']}")
    return side


def _check_canvas_set(meta, a, path):
    canvas_side(meta)
    _check_fields(a, CANVAS_FIELDS, path)
    n_examples = len(a["example_sources"])
    for field, shape in (("example_sources", (n_examples,)), ("example_offsets", (n_examples, 2)),
                         ("example_translate", (n_examples,))):
        if a[field].shape != shape:
            raise DatasetError(f"{path(field)}: shape {a[field].shape}, expected {shape}")
    if n_examples and a["example_translate"].max() > 1:
        raise DatasetError(f"{path('example_translate')}: values must be 0 or 1")
    _check_puzzles(meta, a, path, n_examples)


def check_canvas(meta, sets, shared, where="<memory>"):
    """The shared arrays fit each other and every example of `sets` lies on the canvas."""
    missing = [name for name in CANVAS_SHARED if name not in shared]
    if missing:
        raise DatasetError(f"{missing[0]}.npy: missing; the canvas layout needs {', '.join(CANVAS_SHARED)}")
    sources, room = shared["canvas_sources"], shared["canvas_room"]
    views, maps = shared["identifier_views"], shared["identifier_token_maps"]
    n_ids, vocab = meta["num_puzzle_identifiers"], meta["vocab_size"]
    for name, array, shape in (("canvas_sources", sources, sources.shape[:2] + (2, meta["seq_len"])),
                               ("canvas_room", room, sources.shape[:2] + (2,)),
                               ("identifier_views", views, (n_ids,)), ("identifier_token_maps", maps, (n_ids, vocab))):
        if array.shape != shape:
            raise DatasetError(f"{name}.npy: shape {array.shape}, expected {shape}")
    if sources.size and sources.max() >= vocab or maps.size and maps.max() >= vocab:
        raise DatasetError(f"canvas_sources.npy / identifier_token_maps.npy: tokens outside [0, vocab_size={vocab})")
    if views.size and views.max() >= sources.shape[1]:
        raise DatasetError(f"identifier_views.npy: views outside [0, {sources.shape[1]})")
    for set_name, a in sets.items():
        path = f"{where}/{set_name}__example_sources.npy"
        used = a["example_sources"]
        if len(used) and not 0 <= used.min() <= used.max() < len(sources):
            raise DatasetError(f"{path}: sources outside [0, {len(sources)})")
        ids = np.repeat(np.asarray(a["puzzle_identifiers"]), np.diff(a["puzzle_indices"]))
        beyond = np.any(a["example_offsets"] > room[a["example_sources"], views[ids]], axis=1)
        beyond |= (a["example_translate"] == 0) & np.any(a["example_offsets"] > 0, axis=1)
        if beyond.any():
            raise DatasetError(f"{where}/{set_name}__example_offsets.npy: example {int(np.argmax(beyond))} lies "
                               f"off the canvas (or is not at (0, 0) though not translatable); rebuild the dataset")


def _load_shared(data_dir):
    return {name: _load_array(os.path.join(data_dir, f"{name}.npy")) for name in CANVAS_SHARED}


def _with_tokens(meta, arrays, shared, where):
    ids = arrays["puzzle_identifiers"]
    if len(ids) and ids.max() >= len(shared["identifier_views"]):
        raise DatasetError(f"{where}__puzzle_identifiers.npy: identifiers beyond identifier_views.npy; "
                           f"rebuild the dataset")
    canvas = Canvas(meta, arrays, shared)
    return dict(arrays, inputs=CanvasTokens(canvas, 0), labels=CanvasTokens(canvas, 1))


class Canvas:
    """One set of a canvas-layout split and the shared arrays: composes the tokens of any examples."""

    def __init__(self, meta, arrays, shared):
        self.side, self.seq_len = canvas_side(meta), meta["seq_len"]
        self.sources, self.offsets = arrays["example_sources"], arrays["example_offsets"]
        self.translate = arrays["example_translate"]
        self.identifiers = np.repeat(np.asarray(arrays["puzzle_identifiers"]), np.diff(arrays["puzzle_indices"]))
        self.pairs, self.pair_room = shared["canvas_sources"], shared["canvas_room"]
        self.views = np.asarray(shared["identifier_views"])
        self.token_maps = np.asarray(shared["identifier_token_maps"])

    def room(self, rows, identifiers):
        """(n, 2) the largest offsets at which examples `rows`, seen as `identifiers`, stay on the canvas."""
        return self.pair_room[self.sources[rows], self.views[identifiers]].astype(np.int64)

    def compose(self, rows, identifiers=None, offsets=None):
        """(n, 2, seq_len) uint8 input and label tokens of examples `rows` (default: their own identifiers
        and stored offsets): the source pair in the identifier's view, shifted, through its token map."""
        identifiers = self.identifiers[rows] if identifiers is None else identifiers
        offsets = self.offsets[rows] if offsets is None else offsets
        pairs = self.pairs[self.sources[rows], self.views[identifiers]]  # (n, 2, L) at offset (0, 0)
        tokens = np.empty_like(pairs)
        maps, vocab = self.token_maps[identifiers], self.token_maps.shape[1]
        block = 65536 // vocab  # rows per gather, so that its uint16 index cannot overflow (uint16: 2x faster)
        for lo in range(0, len(pairs), block):  # row b's token t becomes flat_maps[b * vocab + t]
            index = pairs[lo:lo + block].astype(np.uint16)
            index += (np.arange(len(index), dtype=np.uint16) * vocab)[:, None, None]
            tokens[lo:lo + block] = maps[lo:lo + block].reshape(-1)[index]
        return self._shift(tokens, np.asarray(offsets)) if np.any(offsets) else tokens

    def _shift(self, tokens, offsets):
        """Move each canvas down/right by its offset; cells shifted in from outside are PAD (token 0).
        A slice per row: 10x faster than one gather over the batch."""
        n, side = len(tokens), self.side
        grids, out = tokens.reshape(n, 2, side, side), np.zeros((n, 2, side, side), np.uint8)
        for b, (r, c) in enumerate(offsets.tolist()):
            out[b, :, r:, c:] = grids[b, :, :side - r, :side - c]
        return out.reshape(n, 2, self.seq_len)


class CanvasTokens:
    """The inputs (part 0) or labels (part 1) of a canvas-layout set: reads like the official (N, seq_len)
    uint8 array (ints, slices, index and boolean arrays), composing only the rows asked for."""
    ndim, dtype = 2, np.dtype(np.uint8)

    def __init__(self, canvas, part):
        self.canvas, self.part = canvas, part
        self.shape = (len(canvas.sources), canvas.seq_len)

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, key):
        n = len(self)
        rows = np.arange(*key.indices(n)) if isinstance(key, slice) else np.asarray(key)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        if not np.issubdtype(rows.dtype, np.integer):
            raise TypeError(f"canvas-layout tokens take row indices, got {key!r}")
        rows = np.where(rows < 0, rows + n, rows)
        if not rows.size:
            return np.zeros(rows.shape + (self.shape[1],), np.uint8)
        return self.canvas.compose(rows.reshape(-1))[:, self.part].reshape(rows.shape + (self.shape[1],))

    def __array__(self, dtype=None, copy=None):
        tokens = self[:]
        return tokens if dtype is None else tokens.astype(dtype)
