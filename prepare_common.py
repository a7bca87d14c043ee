"""What prepare_sudoku.py, prepare_maze.py and prepare_arc.py share: the one-line user error, the checks of a
sudoku-extreme / Maze-Hard style CSV, the --source file-or-directory logic with its train/test overlap checks,
the resumable download, the dihedral transforms, the common command-line flags and the run/main skeletons.
Task knowledge (tokens, rules, generators, rendering, scoring) stays in each task's script.
"""
import csv
import os
import time
import urllib.error
import urllib.request

import numpy as np
from tqdm import tqdm

from dataset import DatasetError, read_text, write_dataset

# The header of the sapientinc sudoku-extreme and maze-30x30-hard-1k files on Hugging Face.
CSV_HEADER = ["source", "question", "answer", "rating"]
# Transform k is undone by transform DIHEDRAL_INVERSE[k], as in the official repository
# (SamsungSAILMontreal/TinyRecursiveModels, dataset/common.py).
DIHEDRAL_INVERSE = (0, 3, 2, 1, 4, 5, 6, 7)


class InputError(ValueError):
    """Bad user input; the message is one line naming the file and row (or the task) and the fix."""


# ============================================================================ dihedral transforms

# Numbered as the official dataset/common.py dihedral_transform; on the last two axes, so that a stack of
# grids (every maze of a split, one ARC grid) turns in one call, and each transform is built only when used.
_DIHEDRAL = (lambda g: g, lambda g: np.rot90(g, 1, axes=(-2, -1)), lambda g: np.rot90(g, 2, axes=(-2, -1)),
             lambda g: np.rot90(g, 3, axes=(-2, -1)), lambda g: g[..., ::-1], lambda g: g[..., ::-1, :],
             lambda g: np.swapaxes(g, -1, -2), lambda g: np.rot90(g, 1, axes=(-2, -1))[..., ::-1])


def dihedral(grids, k):
    """The official dihedral transform k of grids (..., H, W): 0 identity, 1-3 rotations by 90, 180,
    270 degrees (counter-clockwise), 4 left-right flip, 5 up-down flip, 6 transpose, 7 anti-transpose."""
    return _DIHEDRAL[k](np.asarray(grids))


def dihedral_inverse(grids, k):
    """Undo dihedral(grids, k), e.g. to read a prediction on an augmented grid in the original frame."""
    return dihedral(grids, DIHEDRAL_INVERSE[k])


# ============================================================================ CSV source

def csv_rows(path):
    """(line number, fields) of each row of a UTF-8 CSV (a BOM dropped), streamed, so a 3.8M-row file is never
    held whole; bytes that are not UTF-8, an unreadable file or a broken row raise a one-line error."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            try:
                for row in reader:
                    yield reader.line_num, row
            except csv.Error as e:
                raise InputError(f"{path}:{reader.line_num}: {e}; fix: repair or delete that row") from None
    except UnicodeDecodeError:
        read_text(path)  # raises the DatasetError that names the first byte that is not UTF-8
        raise
    except OSError as e:
        raise InputError(f"{path}: cannot be read ({e.strerror}); fix: give a readable CSV file") from None


def csv_records(path, noun):
    """csv_rows after the header, which must be CSV_HEADER (the sudoku-extreme and Maze-Hard files share
    it); an empty file or another header is one line naming the fix."""
    reader = csv_rows(path)
    _, header = next(reader, (0, None))
    if header is None:
        raise InputError(f"{path}: the file is empty; fix: point --source at a CSV with the header "
                         f"{','.join(CSV_HEADER)} and one {noun} per row")
    if [h.strip().lower() for h in header] != CSV_HEADER:
        raise InputError(f"{path}:1: header is {','.join(header)!r}, expected {','.join(CSV_HEADER)!r}; "
                         f"fix: add or correct the header line")
    return reader


def csv_blocks(path, noun, block=100_000):
    """csv_records in lists of at most `block` rows, so that millions of rows are converted a block at a time
    (vectorised) without holding every row's strings; a header with no row under it is one line."""
    rows, any_rows = [], False
    for record in csv_records(path, noun):
        rows.append(record)
        if len(rows) == block:
            yield rows
            rows, any_rows = [], True
    if not rows and not any_rows:
        raise InputError(f"{path}: no {noun}s after the header; fix: use a CSV with one {noun} per row")
    if rows:
        yield rows


def check_row_shapes(path, rows, cells, length_problem):
    """Every row has the header's four fields and a question and an answer of `cells` characters;
    length_problem(n) words what is wrong with n characters (and the fix)."""
    for line, row in rows:
        if len(row) != len(CSV_HEADER):
            raise InputError(f"{path}:{line}: {len(row)} fields, expected 4 ({','.join(CSV_HEADER)}); "
                             f"fix: repair or delete that row")
        for name, text in (("question", row[1]), ("answer", row[2])):
            if len(text) != cells:
                raise InputError(f"{path}:{line}: {name} has {length_problem(len(text))}")


def csv_ratings(path, rows, number, blank, complaint):
    """The rating field of each row as number(text), `blank` where it is empty; one that does not convert
    raises InputError with `complaint` (what it is not, and the fix)."""
    ratings = []
    for line, row in rows:
        try:
            ratings.append(number(row[3]) if row[3].strip() else blank)
        except ValueError:
            raise InputError(f"{path}:{line}: rating {row[3]!r} {complaint}") from None
    return ratings


def subsample(data, count, seed, path, noun, caveat=""):
    """`count` rows chosen with a fixed seed, kept in file order (the paper's Sudoku-Extreme-1K is 1000
    puzzles drawn from the full training file)."""
    if count is None:
        return data
    available = len(data["line"])
    if count > available:
        raise InputError(f"{path}: --subsample {count} is more than the {available} {noun} available{caveat}; "
                         f"fix: ask for at most {available}")
    keep = np.sort(np.random.default_rng(seed).choice(available, count, replace=False))
    return {k: v[keep] for k, v in data.items()}


def from_csv_source(args, read, classes, noun, symmetries, caveat=""):
    """(train, test, overlap) from --source FILE.csv or a directory of train.csv/test.csv: the splits' dicts
    of tokens/ratings/lines (read(path) reads one file), and how many test rows are also training rows (kept
    by --allow_overlap). classes: questions -> (exact, same), as check_overlap takes it."""
    if os.path.isdir(args.source):
        paths = [os.path.join(args.source, f"{s}.csv") for s in ("train", "test")]
        for p in paths:
            if not os.path.isfile(p):
                raise InputError(f"{p}: not found; fix: a --source directory needs train.csv and test.csv")
        train, test = read(paths[0]), read(paths[1])
        train = subsample(train, args.subsample, args.seed, paths[0], noun, caveat)
        overlap = check_overlap(train, test, classes, paths, args.allow_overlap, noun, symmetries)
        return train, test, overlap
    if not os.path.isfile(args.source):
        raise InputError(f"{args.source}: not found; fix: give a CSV file or a directory with train.csv and test.csv")
    data = read(args.source)
    _, same = classes(data["q"])
    train, test = hold_out(data | {"class": same}, args.num_test, args.seed, args.source, noun)
    train = subsample(train, args.subsample, args.seed, args.source, noun, caveat)
    report_copies(args.source, train.pop("class"), noun)
    test.pop("class")
    return train, test, 0


# ============================================================================ train/test overlap

def hold_out(data, num_test, seed, path, noun):
    """(train, test) of one file: `num_test` rows (fixed seed) held out as the test split, drawn among the rows
    with no copy in the file (data["class"]: per row, the first row of its puzzle), so that no held-out
    puzzle is also trained on; every other row trains. Without copies this is a plain random hold-out."""
    n = len(data["line"])
    if num_test >= n:
        raise InputError(f"{path}: --num_test {num_test} leaves no training rows out of {n}; fix: lower --num_test")
    alone = np.flatnonzero(np.bincount(data["class"], minlength=n)[data["class"]] == 1)
    if num_test > len(alone):
        raise InputError(f"{path}: --num_test {num_test}, but only {len(alone)} of the {n} rows have no copy in the "
                         f"file, and held-out {noun} must not also be trained on; fix: lower --num_test")
    if len(alone) < n:
        print(f"{path}: {n - len(alone)} of {n} rows have a copy in the file (exactly or up to augmentation); "
              f"the {num_test} test rows are drawn from the other {len(alone)}, so none is also trained on")
    held = alone[np.sort(np.random.default_rng(seed + 1).permutation(len(alone))[:num_test])]
    train = np.ones(n, bool)
    train[held] = False
    return {k: v[train] for k, v in data.items()}, {k: v[held] for k, v in data.items()}


def check_overlap(train, test, classes, paths, allow, noun, symmetries):
    """Refuse test rows whose puzzle is also among the training rows, exactly or up to augmentation (classes:
    questions -> (exact, same), per row its first copy), in one line naming the first lines of both files;
    with allow keep them and return their count. Copies inside the training rows are reported."""
    n_train = len(train["line"])
    exact, same = classes(np.concatenate([train["q"], test["q"]]))
    report_copies(paths[0], same[:n_train], noun)
    hits = np.flatnonzero(same[n_train:] < n_train)  # a class's first row is a training row when it has any
    if not len(hits) or allow:
        if len(hits):
            print(f"{paths[1]}: {len(hits)} of {len(test['line'])} test {noun} also appear in the training rows; "
                  f"kept (--allow_overlap), recorded in dataset.json as train_test_overlap")
        return len(hits)
    n_exact = int((exact[n_train + hits] < n_train).sum())
    first = ", ".join(f"test line {test['line'][j]} = train line {train['line'][same[n_train + j]]}"
                      for j in hits[:3].tolist()) + (", ..." if len(hits) > 3 else "")
    raise InputError(f"{paths[1]}: {len(hits)} of {len(test['line'])} test {noun} also appear in the training rows "
                     f"of {paths[0]} (exact: {n_exact}, up to {symmetries}: {len(hits) - n_exact}) (first: "
                     f"{first}); fix: remove them, or pass --allow_overlap to keep them (recorded in dataset.json)")


def report_copies(path, same, noun):
    """One printed line when training rows repeat a puzzle (kept: copies weigh a puzzle more, nothing leaks)."""
    repeats = len(same) - len(np.unique(same))
    if repeats:
        print(f"{path}: {repeats} of {len(same)} training {noun} repeat another training row (exactly or up to "
              f"augmentation); kept")


# ============================================================================ download

def download(url, dest, urlopen=urllib.request.urlopen):
    """Fetch `url` to `dest` with the standard library; a `.part` file resumes an interrupted download."""
    if os.path.exists(dest):
        return dest
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    part = dest + ".part"
    have = os.path.getsize(part) if os.path.exists(part) else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urlopen(request, timeout=60) as response:
            if have and getattr(response, "status", None) != 206:
                have = 0  # the server ignored the range: start over
            length = response.headers.get("Content-Length") if response.headers else None
            total = have + int(length) if length else None
            with open(part, "ab" if have else "wb") as f, tqdm(total=total, initial=have, unit="B", unit_scale=True,
                                                               desc=os.path.basename(dest), disable=None) as bar:
                while block := response.read(1 << 20):
                    f.write(block)
                    bar.update(len(block))
    except urllib.error.HTTPError as e:
        if e.code != 416:  # 416: nothing left to fetch, the partial file is complete
            raise InputError(f"{url}: download failed (HTTP {e.code}); fix: rerun to resume, or fetch "
                             f"train.csv and test.csv yourself and pass --source DIR") from None
    except (urllib.error.URLError, OSError) as e:
        raise InputError(f"{url}: download failed ({getattr(e, 'reason', e)}); fix: check the network and rerun "
                         f"(it resumes), or fetch train.csv and test.csv yourself and pass --source DIR") from None
    os.replace(part, dest)
    return dest


# ============================================================================ building the dataset

def run(args, out, url, load, build, noun):
    """The Sudoku and Maze build: --download first fetches train.csv and test.csv (`url` with the file name)
    into --raw_dir and reads them as --source; load(args) gives (train, test, overlap, extra files) from the
    CSV source or the generator, build(train, test) the splits and the examples per training row. The dataset
    is written whole (a test row kept by --allow_overlap is recorded in dataset.json), then one line says so."""
    if args.download:
        for name in ("train.csv", "test.csv"):
            download(url.format(name), os.path.join(args.raw_dir, name))
        args.source = args.raw_dir
    started = time.time()
    train, test, overlap, extra = load(args)
    splits, per = build(train, test)
    if overlap:  # kept by --allow_overlap: dataset.json says so
        splits["train"][0]["train_test_overlap"] = overlap
    status = write_dataset(out, splits, ["<blank>"], overwrite=args.overwrite, extra_files=extra,
                           sources=[args.source])
    print(f"{out}: {status}; train {len(train['q'])} {noun} x {per} = {len(train['q']) * per} examples, "
          f"test {len(test['q'])} ({time.time() - started:.1f} s)")
    return out


# ============================================================================ command line

def add_csv_sources(p, repo, style, noun, count):
    """--source, --download and --generate (default `count`), one excluding the others; returns their group,
    for the script's own --bench. repo: the Hugging Face data set, style: the name of its CSV layout."""
    src = p.add_mutually_exclusive_group()
    src.add_argument("--source", help=f"{style} style CSV (header {','.join(CSV_HEADER)}) or a directory holding "
                                      f"train.csv and test.csv")
    src.add_argument("--download", action="store_true",
                     help=f"fetch {repo} train.csv and test.csv over HTTPS into --raw_dir (resumable), then build "
                          f"from them")
    src.add_argument("--generate", type=int, metavar="N", default=count,
                     help=f"generate N training {noun} offline (the default source; default %(default)s)")
    return src


def add_csv_splits(p, noun, subsample_note=""):
    """--num_test (generated, or held out of one file) and --subsample (of the CSV's training rows)."""
    p.add_argument("--num_test", type=int, default=1000,
                   help=f"test {noun} to generate, or to hold out of a single --source file (default %(default)s)")
    p.add_argument("--subsample", type=int, metavar="N",
                   help=f"keep N training {noun} of the CSV, chosen with --seed{subsample_note}")


def add_csv_outputs(p, repo, noun, copies):
    """--raw_dir (under data/raw/, named as the data set), --allow_overlap (copies: what counts as the same
    row) and --overwrite."""
    p.add_argument("--raw_dir", default=os.path.join("data", "raw", repo.rpartition("/")[2]),
                   help="where --download puts the CSV files (default %(default)s)")
    p.add_argument("--allow_overlap", action="store_true",
                   help=f"keep test {noun} of a --source directory's test.csv that are also training rows ({copies}), "
                        f"recording their count in dataset.json; refused by default (a single --source file holds "
                        f"out only {noun} without copies)")
    add_overwrite(p)


def add_overwrite(p):
    p.add_argument("--overwrite", action="store_true",
                   help="replace an output directory holding a different dataset written by a prepare script "
                        "(never one holding other files, nor the source)")


def require_at_least(p, args, lowest):
    """A parser error for the first flag of `lowest` ({name: smallest allowed value}) given below it."""
    for name, smallest in lowest.items():
        value = getattr(args, name)
        if value is not None and value < smallest:
            p.error(f"--{name} must be at least {smallest}")


def main(script, work):
    """Call work(); bad input or a dataset error ends `script` with one line and exit code 1, not a traceback."""
    try:
        work()
    except (InputError, DatasetError) as e:
        raise SystemExit(f"{script}: {e}") from None
    except KeyboardInterrupt:  # datasets are written whole or not at all, so nothing is left half-done
        raise SystemExit(f"{script}: interrupted; no dataset was written") from None
