"""
The paper's ablation table on a laptop: one train.py run per row and seed, every run the same number of
optimiser steps on the same data, evaluated on the same held-out puzzles with all N_sup steps; then a
Markdown table (mean and range over the seeds, beside the paper's Sudoku-Extreme figures) and a chart.

    python prepare_sudoku.py --size 6 --difficulty medium # data/sudoku-6x6-medium, if missing
    python ablate.py                                      # every row, seeds 0 and 1 -> out-ablate/table.md, .png
    python ablate.py --rows=full,hrm --seeds=0,1,2        # some rows, more seeds
    python ablate.py --max_steps=1200 --out=out-long      # any other --key=value goes to train.py, for every run

Each run is a train.py process in out-ablate/<row>/seed<k>/ (config/sudoku_ablate.py, then the --key=value
given here, then the row's own switches), its output in train.log there. --jobs runs (default: one per
core) train side by side, each on its share of the cores. A killed table resumes: finished runs are kept,
unfinished ones go on from their last checkpoint (equal steps, so a resumed run ends where a fresh one
would). ablate.py never deletes or overwrites anything: a folder it did not start is refused.
"""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

import configurator
import plot
from model import TRM, TRMConfig

ROOT = os.path.dirname(os.path.abspath(__file__))
# key, table label, chart label (plot.py's glyphs), paper's Sudoku-Extreme exact accuracy, switches.
# The paper's figures: its Sudoku-Extreme ablation table and, for single and multi latent, its text (the
# official README also gives trm_singlez 71.9%).
ROWS = [
    ("full", "full TRM", "full trm", 87.4, {}),
    ("q_continue", "with the Q-continue loss", "q-continue", 86.1, dict(no_ACT_continue=False)),
    ("two_networks", "separate f_H and f_L", "separate fh fl", 82.4, dict(two_networks=True)),
    ("no_ema", "no EMA", "no ema", 79.9, dict(ema=False)),
    ("layers4", "4 layers, n halved", "4 layers (half n)", 79.5, dict(L_layers=4)),  # n set in row_settings
    ("attention", "self-attention instead of MLP-t", "attention", 74.7, dict(mlp_t=False, pos_encodings="rope")),
    ("one_step", "1-step gradient", "1-step grad", 56.5, dict(grad_mode="one_step")),
    ("hrm", "HRM at the same width", "hrm", 55.0, dict(
        two_networks=True, L_layers=4, mlp_t=False, pos_encodings="rope", H_cycles=2, L_cycles=2,
        grad_mode="one_step", no_ACT_continue=False, ema=False)),
    ("single", "single latent (trm_singlez)", "single latent", 71.9, dict(latent_mode="single")),
    ("multi", "one latent per step (trm_hier6)", "multi latent", 77.6, dict(latent_mode="multi")),
]
CONFIG = "config/sudoku_ablate.py"
PREPARE = "python prepare_sudoku.py --size 6 --difficulty medium"  # makes CONFIG's data_dir
OWN = dict(rows=",".join(r[0] for r in ROWS), seeds="0,1", jobs="auto", out="out-ablate", config=CONFIG)
# train.py settings ablate.py owns: each run's folder, seed and resumption, and equal steps (no clock).
SET_HERE = ("out_dir", "seed", "init_from", "max_minutes", "clock_schedule")
MARKER = "ablate_run.json"  # in every run folder ablate.py started: the run's train.py arguments


class UserError(Exception):
    """A mistake the user can fix; printed as one line."""


def parse(argv):
    """ablate.py's own settings, and the --key=value to pass on to train.py."""
    own, passthrough = dict(OWN), []
    for arg in argv:
        key, eq, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if arg in ("-h", "--help"):
            print(__doc__ + "\nRows: " + ", ".join(f"{r[0]} ({r[1]})" for r in ROWS))
            sys.exit(0)
        if not eq:
            raise UserError(f"{arg}: write settings as --key=value")
        if key in SET_HERE:
            raise UserError(f"--{key} is set by ablate.py for each run; use --out and --seeds (rows train equal "
                            f"steps: set --max_steps)")
        if key in own:
            own[key] = value
        else:
            passthrough.append(arg)
    known = [r[0] for r in ROWS]
    own["rows"] = [r for r in own["rows"].split(",") if r]
    if not own["rows"]:
        raise UserError(f"--rows is empty; rows are {', '.join(known)}")
    for row in own["rows"]:
        if row not in known:
            raise UserError(f"--rows: unknown row '{row}'; rows are {', '.join(known)}")
    try:
        own["seeds"] = sorted({int(s) for s in own["seeds"].split(",") if s})
    except ValueError:
        raise UserError(f"--seeds={own['seeds']}: give whole numbers separated by commas, e.g. --seeds=0,1") from None
    if not own["seeds"] or min(own["seeds"]) < 0:
        raise UserError(f"--seeds={own['seeds'] or ''}: give one or more seeds >= 0, e.g. --seeds=0,1")
    cores = os.cpu_count() or 1
    jobs = own["jobs"]
    if jobs == "auto":
        own["jobs"] = cores
    elif not (jobs.isdigit() and int(jobs) >= 1):
        raise UserError(f"--jobs={jobs}: give how many runs train at once, a whole number >= 1 (or auto)")
    else:
        own["jobs"] = int(jobs)
    return own, passthrough


def row_settings(row, base):
    """The row's switches on top of the base settings (train.py's configurator output)."""
    switches = dict(next(r[4] for r in ROWS if r[0] == row))
    if row == "layers4":  # the paper's "4 layers, n=3": twice the depth, half the latent updates
        switches["L_cycles"] = max(1, base["L_cycles"] // 2)
    return switches


def train_args(own, passthrough, row, seed, base):
    """A run's train.py arguments (init_from aside): what its result is kept under."""
    return [own["config"], *passthrough, f"--out_dir={run_dir(own, row, seed)}", f"--seed={seed}",
            "--max_minutes=0", "--clock_schedule=False",
            *[f"--{k}={v!r}" for k, v in row_settings(row, base).items()]]


def table_dtype(own, base):
    """dtype=auto, decided once for the whole table: by the runs already started (a resumed table keeps
    its precision), else measured here, rather than by each run at a moment that may be busier."""
    for row in ROWS:
        for seed in own["seeds"]:
            marker = os.path.join(run_dir(own, row[0], seed), MARKER)
            if os.path.isfile(marker):
                kept = [a.split("=", 1)[1].strip("'") for a in read_json(marker)["train_args"] if a.startswith("--dtype=")]
                if kept:
                    return kept[-1]
    return configurator.resolve_dtype("auto", configurator.resolve_device(base["device"]))


def run_dir(own, row, seed):
    return os.path.join(own["out"], row, f"seed{seed}")


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is unreadable ({e}); move that folder elsewhere and rerun") from None


def write_json(path, obj):
    plot.write_atomic(path, json.dumps(obj, indent=1).encode())


def differ(then, now):
    gone = [a for a in then if a not in now] or ["(another order)"]
    new = [a for a in now if a not in then] or ["(another order)"]
    return f"{' '.join(gone)}; now {' '.join(new)}"


def claim(out_dir, args):
    """Whether the run in out_dir is finished (its result, or None) and how train.py starts it otherwise;
    marks a new or empty folder as ablate.py's. Refuses, changing nothing, a folder ablate.py did not
    start or one it started with other settings."""
    marker, result_path = os.path.join(out_dir, MARKER), os.path.join(out_dir, "result.json")
    if os.path.isfile(marker):
        then = read_json(marker)["train_args"]
        if then != args:
            raise UserError(f"{out_dir} was started with other settings ({differ(then, args)}); pass "
                            f"--out=<another folder>, or move {out_dir} elsewhere")
        if os.path.isfile(result_path):
            return read_json(result_path), None
        return None, "resume" if os.path.exists(os.path.join(out_dir, "ckpt.pt")) else "scratch"
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        raise UserError(f"{out_dir} holds files that ablate.py did not make (no {MARKER}); nothing was changed: "
                        f"pass --out=<another folder>, or move {out_dir} elsewhere")
    try:
        os.makedirs(out_dir, exist_ok=True)
        write_json(marker, {"train_args": args})
    except OSError as e:
        raise UserError(f"{out_dir}: cannot be made or written ({e.strerror or e}); pick another --out") from None
    return None, "scratch"


# ------------------------------------------------------------------------------------------------
# Running the table: up to --jobs train.py processes at a time


def run_all(own, runs):
    """Train every unfinished run, --jobs at a time, and return every run's result in order."""
    results, todo = {}, []
    for key, args in runs:
        result, how = claim(run_dir(own, *key), args)
        if result:
            results[key] = result
        else:
            todo.append((key, args, how))
    if results:
        print(f"{len(results)} of {len(runs)} runs finished earlier, kept")
    threads = max(1, (os.cpu_count() or 1) // min(own["jobs"], max(1, len(todo))))
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", str(threads)))
    running, failed = {}, None
    bar = tqdm(total=len(todo), desc="ablate", unit="run", dynamic_ncols=True)
    try:
        while todo or running:
            while todo and len(running) < own["jobs"] and not failed:
                key, args, how = todo.pop(0)
                running[key] = start(own, key, args, how, env)
            time.sleep(0.5)
            for key, (proc, args, log, started) in list(running.items()):
                if proc.poll() is None:
                    continue
                log.close()
                del running[key]
                out_dir = run_dir(own, *key)
                if proc.returncode != 0:
                    failed = failed or (key, proc.returncode)
                    todo.clear()
                    continue
                results[key] = finish(out_dir, key, args, time.time() - started)
                bar.update(1)
                tqdm.write(f"{key[0]} seed {key[1]}: {results[key]['exact_accuracy']:.1%} exact, "
                           f"{results[key]['wall_minutes']:.1f} min")
    except KeyboardInterrupt:  # each run is asked to stop as Ctrl-C asks train.py: a checkpoint, then exit
        for proc, *_ in running.values():
            proc.send_signal(signal.SIGINT)
        for key, (proc, args, log, started) in running.items():
            proc.wait()
            log.close()
            if proc.returncode == 0:  # it had finished: its result counts
                finish(run_dir(own, *key), key, args, time.time() - started)
            else:
                note_time(run_dir(own, *key), time.time() - started)
        raise
    finally:
        bar.close()
    if failed:
        (row, seed), code = failed
        raise UserError(f"{row} seed {seed}: train.py exited with status {code}: {last_line(run_dir(own, row, seed))}"
                        f" (all of it in {os.path.join(run_dir(own, row, seed), 'train.log')}); fix that and rerun: "
                        f"finished runs are kept")
    return [results[key] for key, _ in runs]


def start(own, key, args, how, env):
    out_dir = run_dir(own, *key)
    log = open(os.path.join(out_dir, "train.log"), "a")
    command = [sys.executable, os.path.join(ROOT, "train.py"), *args, f"--init_from={how}"]
    log.write(f"\n$ {' '.join(command)}\n")
    log.flush()
    tqdm.write(f"{key[0]} seed {key[1]}: {'resumed' if how == 'resume' else 'started'} (log: {log.name})")
    # A session of its own: a Ctrl-C in the terminal reaches ablate.py alone, which passes it on once.
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return proc, args, log, time.time()


def note_time(out_dir, seconds):
    """An interrupted run's training time so far, kept in its marker for the table's minutes per run."""
    marker = read_json(os.path.join(out_dir, MARKER))
    marker["earlier_minutes"] = marker.get("earlier_minutes", 0.0) + seconds / 60
    write_json(os.path.join(out_dir, MARKER), marker)


def last_line(out_dir):
    with open(os.path.join(out_dir, "train.log"), errors="replace") as f:
        lines = [line.strip() for line in f.read().replace("\r", "\n").splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def finish(out_dir, key, args, seconds):
    """A finished run's summary, written beside it as result.json. Its minutes include those of earlier
    parts that were interrupted (a run killed outright loses that part's time, and redoes its steps)."""
    earlier = read_json(os.path.join(out_dir, MARKER)).get("earlier_minutes", 0.0)
    result = dict(summarise_run(out_dir), row=key[0], seed=key[1], train_args=args, wall_minutes=earlier + seconds / 60)
    write_json(os.path.join(out_dir, "result.json"), result)
    return result


def summarise_run(out_dir):
    """Final exact and cell accuracy, parameters, training speed and learned halting of one run."""
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f if line.strip()]
    final = records[-1]  # train.py's last act is the full evaluation
    trained = [r for r in records if r["split"] == "train"]
    late = trained[-max(1, len(trained) // 4):]  # halting as learned by the end: the last quarter of the logs
    counts = np.array([r["count"] for r in late], dtype=float)
    act_steps = float(np.dot(counts, [r["steps"] for r in late]) / counts.sum()) if counts.sum() else float("nan")
    ckpt = configurator.read_checkpoint(os.path.join(out_dir, "ckpt.pt"), fix=f"Move {out_dir} elsewhere to run "
                                        f"it again")  # data only: a crafted file is refused, never run
    with torch.device("meta"):  # shapes only: count without allocating
        params = TRM(TRMConfig(**ckpt["model_config"])).num_params()
    return dict(exact_accuracy=final["exact_accuracy"], accuracy=final["accuracy"], params=params,
                examples_per_s=float(np.median([r["examples_per_s"] for r in trained])) if trained else float("nan"),
                act_steps=act_steps, optimizer_steps=ckpt["step"], eval_puzzles=final["count"])


# ------------------------------------------------------------------------------------------------
# The table and the chart


def by_row(results):
    """[(row, [its results, one per seed])] in ROWS order."""
    rows = [r[0] for r in ROWS]
    grouped = {}
    for r in results:
        grouped.setdefault(r["row"], []).append(r)
    return sorted(grouped.items(), key=lambda item: rows.index(item[0]))


def versus_full(runs, full):
    """The row's mean exact accuracy minus full TRM's, and whether the two seed ranges leave a gap."""
    if full is None or runs is full:
        return ""
    ours, theirs = [r["exact_accuracy"] for r in runs], [r["exact_accuracy"] for r in full]
    diff = f"{100 * (np.mean(ours) - np.mean(theirs)):+.1f} pts"
    if min(len(ours), len(theirs)) < 2:
        return f"{diff} (one seed: no spread to judge by)"
    gap = max(ours) < min(theirs) or min(ours) > max(theirs)
    return f"{diff}, {'beyond' if gap else 'within'} the seed spread"


def write_table(path, results, own, base):
    rows = by_row(results)
    full = dict(rows).get("full")
    first = results[0]
    lines = [f"{os.path.basename(base['data_dir'].rstrip('/'))}: {first['optimizer_steps']} optimiser steps per run "
             f"({own['config']}), seeds {', '.join(map(str, own['seeds']))}; exact accuracy on the "
             f"{first['eval_puzzles']:.0f} test puzzles after all N_sup steps, mean and range over the seeds. Paper: "
             f"Sudoku-Extreme at full scale. ACT steps: mean supervision steps at halting, last quarter of training.",
             "", "| row | paper (Sudoku-Extreme) | exact, mean | range | vs full TRM | cell | parameters | examples/s "
             "| minutes per run | ACT steps |", "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
    for row, runs in rows:
        label, paper = next((x[1], x[3]) for x in ROWS if x[0] == row)
        exact = [r["exact_accuracy"] for r in runs]
        mean = lambda key: float(np.mean([r[key] for r in runs]))  # noqa: E731
        lines.append(f"| {label} | {paper:.1f}% | {np.mean(exact):.1%} | {min(exact):.1%}-{max(exact):.1%} | "
                     f"{versus_full(runs, full)} | {mean('accuracy'):.1%} | {runs[0]['params']:,} | "
                     f"{mean('examples_per_s'):.0f} | {mean('wall_minutes'):.1f} | {mean('act_steps'):.1f} |")
    plot.write_atomic(path, ("\n".join(lines) + "\n").encode())


PAPER, EXACT, RANGE = (150, 150, 150), (31, 119, 180), (20, 20, 20)


def write_chart(path, results, own, base):
    """Per row two bars on a 0-100% axis: the paper's exact accuracy and ours (mean over the seeds),
    with our range over the seeds as a black line across the bar's end."""
    rows = by_row(results)
    x0, width, row_h, top = 190, 520, 26, 60
    img = np.full((top + row_h * len(rows) + 30, x0 + width + 90, 3), 255, np.uint8)
    data = os.path.basename(base["data_dir"].rstrip("/"))
    plot.draw_text(img, 10, 10, f"paper (sudoku-extreme) vs ours ({data} - {len(own['seeds'])} seeds)")
    for i, (name, colour) in enumerate((("paper", PAPER), ("ours exact: mean and range", EXACT))):
        img[36:44, 10 + 150 * i:18 + 150 * i] = colour
        plot.draw_text(img, 24 + 150 * i, 37, name, scale=1)
    for j, (row, runs) in enumerate(rows):
        y = top + row_h * j
        label, paper = next((x[2], x[3]) for x in ROWS if x[0] == row)
        exact = [r["exact_accuracy"] for r in runs]
        plot.draw_text(img, 10, y + 6, label, scale=1)
        for k, (value, colour) in enumerate(((paper / 100, PAPER), (float(np.mean(exact)), EXACT))):
            bar_y = y + 2 + 10 * k
            img[bar_y:bar_y + 8, x0:x0 + max(1, round(value * width))] = colour
            right = round(max(value, max(exact) if k else value) * width)
            plot.draw_text(img, x0 + right + 4, bar_y + 1, f"{value:.1%}", scale=1)
        lo, hi = (x0 + round(v * width) for v in (min(exact), max(exact)))
        img[y + 15:y + 17, lo:hi + 1] = RANGE
        img[y + 12:y + 20, lo] = img[y + 12:y + 20, hi] = RANGE
    img[top - 4:top + row_h * len(rows), x0] = 0  # the 0% axis
    plot.write_png(path, img)


def main(argv):
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)  # a kill stops the runs cleanly, too
    try:
        own, passthrough = parse(argv)
        base = configurator.configure([own["config"], *passthrough])  # a bad setting fails here, before any run
        if not os.path.isfile(os.path.join(base["data_dir"], "train", "dataset.json")):
            ours = configurator.configure([os.path.join(ROOT, CONFIG)])["data_dir"]  # read, not written twice
            how = f"`{PREPARE}`" if os.path.normpath(base["data_dir"]) == os.path.normpath(ours) \
                else "the prepare_*.py script that writes it"
            raise UserError(f"{base['data_dir']} not found; make it with {how} (or pass --data_dir=...)")
        if base["dtype"] == "auto":
            passthrough.append(f"--dtype={table_dtype(own, base)!r}")
        runs = [((row, seed), train_args(own, passthrough, row, seed, base)) for row in own["rows"] for seed in own["seeds"]]
        results = run_all(own, runs)
        write_table(os.path.join(own["out"], "table.md"), results, own, base)
        write_chart(os.path.join(own["out"], "ablations.png"), results, own, base)
        print(f"wrote {os.path.join(own['out'], 'table.md')} and {os.path.join(own['out'], 'ablations.png')}")
    except (UserError, configurator.UserError) as e:
        sys.exit(f"ablate.py: {e}")
    except KeyboardInterrupt:  # finished runs are kept; the next call goes on from the checkpoints
        sys.exit("ablate.py: interrupted; run the same command again to continue the table")
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    main(sys.argv[1:])
