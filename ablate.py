"""
The paper's ablation table (Sudoku-Extreme) on a laptop: train the CPU quick-start Sudoku setting on
medium puzzles once per row, every row for the same wall-clock budget, seed and data, then write a
Markdown table and a bar chart beside the paper's Sudoku-Extreme figures.

    python prepare_sudoku.py --difficulty medium     # data/sudoku-medium, if missing
    python ablate.py --minutes=8                     # every row -> out-ablate/table.md, out-ablate/ablations.png
    python ablate.py --rows=full,hrm --minutes=2     # some rows
    python ablate.py --minutes=8 --seed=1            # any other --key=value goes to train.py, for every row

Each row is one train.py run in out-ablate/<row>/ (config/sudoku_cpu_medium.py, then the --key=value
given here, then the row's own switches). A row trains for --minutes, its learning-rate schedule fitted
to them (the config's clock_schedule); its final evaluation covers the whole test split. A killed table
resumes: finished rows are kept, an unfinished row starts again from scratch (a resumed clock would give
it more time than the others).
"""
import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import torch

import configurator
import plot
import train  # lock_out_dir: the lock a train.py run holds on its out_dir
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
OWN = dict(rows=",".join(r[0] for r in ROWS), minutes=8.0, out="out-ablate", config="config/sudoku_cpu_medium.py")
SET_HERE = ("out_dir", "max_minutes", "init_from")  # train.py settings ablate.py owns


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
            raise UserError(f"--{key} is set by ablate.py per row; use --out and --minutes")
        if key in own:
            own[key] = value
        else:
            passthrough.append(arg)
    try:
        own["minutes"] = float(own["minutes"])
    except ValueError:
        raise UserError(f"--minutes={own['minutes']}: give a number of minutes") from None
    if not 0 < own["minutes"] < math.inf:  # nan and inf too: train.py's max_minutes takes neither
        raise UserError(f"--minutes={own['minutes']}: give a positive number of minutes, e.g. --minutes=8")
    known = [r[0] for r in ROWS]
    own["rows"] = [r for r in own["rows"].split(",") if r]
    if not own["rows"]:
        raise UserError(f"--rows is empty; rows are {', '.join(known)}")
    for row in own["rows"]:
        if row not in known:
            raise UserError(f"--rows: unknown row '{row}'; rows are {', '.join(known)}")
    return own, passthrough


def row_settings(row, base):
    """The row's switches on top of the base settings (train.py's configurator output)."""
    switches = dict(next(r[4] for r in ROWS if r[0] == row))
    if row == "layers4":  # the paper's "4 layers, n=3": twice the depth, half the latent updates
        switches["L_cycles"] = max(1, base["L_cycles"] // 2)
    return switches


def train_args(own, passthrough, row, base):
    out_dir = os.path.join(own["out"], row)
    return [own["config"], *passthrough, f"--out_dir={out_dir}", f"--max_minutes={own['minutes']}",
            *[f"--{k}={v!r}" for k, v in row_settings(row, base).items()]]


def run_row(own, args, row, index, total):
    """Train one row unless it is finished with these very settings; return its result."""
    out_dir = os.path.join(own["out"], row)
    result_path = os.path.join(out_dir, "result.json")
    if os.path.isfile(result_path):
        with open(result_path) as f:
            result = json.load(f)
        if result["train_args"] != args:
            then = [a for a in result["train_args"] if a not in args] or ["(another order)"]
            now = [a for a in args if a not in result["train_args"]] or ["(another order)"]
            raise UserError(f"{out_dir} was trained with other settings ({' '.join(then)}; now {' '.join(now)}); "
                            f"pass --out=<another folder> or delete {out_dir}")
        print(f"[{index}/{total}] {row}: finished earlier, kept ({result_path})")
        return result
    restart_row(out_dir, args)
    print(f"[{index}/{total}] {row}: python train.py {' '.join(args)}", flush=True)
    started = time.time()
    done = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *args])
    if done.returncode != 0:
        raise UserError(f"row {row}: train.py exited with status {done.returncode} (its message is above); "
                        f"fix that and rerun ablate.py: finished rows are kept")
    result = dict(summarise_run(out_dir), row=row, train_args=args, wall_minutes=(time.time() - started) / 60)
    with open(result_path + ".tmp", "w") as f:
        json.dump(result, f, indent=1)
    os.replace(result_path + ".tmp", result_path)
    return result


def restart_row(out_dir, args):
    """An unfinished row restarts from scratch: its checkpoint goes, but only one ablate.py started
    (out_dir/ablate_row.json says so) and only while no train.py runs there (its lock is free)."""
    marker = os.path.join(out_dir, "ablate_row.json")
    if os.path.exists(os.path.join(out_dir, "ckpt.pt")) and not os.path.isfile(marker):
        raise UserError(f"{out_dir} holds a checkpoint that ablate.py did not start; nothing was changed: pass "
                        f"--out=<another folder>, or move that run elsewhere")
    lock = train.lock_out_dir(out_dir)  # raises, naming the PID, while a run holds out_dir
    try:
        for stale in ("ckpt.pt", "ckpt.pt.tmp"):
            if os.path.exists(os.path.join(out_dir, stale)):
                os.remove(os.path.join(out_dir, stale))
        with open(marker, "w") as f:
            json.dump({"train_args": args}, f)
    finally:
        lock.close()


def summarise_run(out_dir):
    """Final exact and cell accuracy, parameters, training speed and learned halting of one run."""
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f if line.strip()]
    final = records[-1]  # train.py's last act is the full evaluation
    trained = [r for r in records if r["split"] == "train"]
    late = trained[-max(1, len(trained) // 4):]  # halting as learned by the end: the last quarter of the logs
    counts = np.array([r["count"] for r in late], dtype=float)
    act_steps = float(np.dot(counts, [r["steps"] for r in late]) / counts.sum()) if counts.sum() else float("nan")
    ckpt = configurator.read_checkpoint(os.path.join(out_dir, "ckpt.pt"), fix=f"Remove {out_dir} to run the row "
                                        f"again")  # data only: a crafted file is refused, never run
    with torch.device("meta"):  # shapes only: count without allocating
        params = TRM(TRMConfig(**ckpt["model_config"])).num_params()
    return dict(exact_accuracy=final["exact_accuracy"], accuracy=final["accuracy"], params=params,
                examples_per_s=float(np.median([r["examples_per_s"] for r in trained])) if trained else float("nan"),
                act_steps=act_steps, optimizer_steps=ckpt["step"], eval_puzzles=final["count"])


# ------------------------------------------------------------------------------------------------
# The table and the chart


def write_table(path, results, own, base):
    lines = [f"Sudoku {os.path.basename(base['data_dir'].rstrip('/'))}, {own['minutes']:g} min of training per row "
             f"({own['config']}, seed {base['seed']}); exact and cell accuracy on the {results[0]['eval_puzzles']:.0f} "
             f"test puzzles; paper: Sudoku-Extreme, full scale. ACT steps: mean supervision steps at halting, "
             f"last quarter of training.", "",
             "| row | paper (Sudoku-Extreme) | exact | cell | parameters | examples/s | mean ACT steps | optimiser steps |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        label, _, paper = next((x[1], x[2], x[3]) for x in ROWS if x[0] == r["row"])
        lines.append(f"| {label} | {paper:.1f}% | {r['exact_accuracy']:.1%} | {r['accuracy']:.1%} | {r['params']:,} | "
                     f"{r['examples_per_s']:.0f} | {r['act_steps']:.1f} | {r['optimizer_steps']} |")
    with open(path + ".tmp", "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(path + ".tmp", path)


PAPER, EXACT, CELL = (150, 150, 150), (31, 119, 180), (158, 202, 225)


def write_chart(path, results, own, base):
    """Per row three bars on a 0-100% axis: the paper's exact accuracy, ours, and our cell accuracy."""
    x0, width, row_h, top = 190, 520, 34, 60
    img = np.full((top + row_h * len(results) + 30, x0 + width + 70, 3), 255, np.uint8)
    data = os.path.basename(base["data_dir"].rstrip("/"))
    plot.draw_text(img, 10, 10, f"paper (sudoku-extreme) vs ours ({data} {own['minutes']:g} min)")
    for i, (name, colour) in enumerate((("paper", PAPER), ("ours exact", EXACT), ("ours cell acc", CELL))):
        img[36:44, 10 + 150 * i:18 + 150 * i] = colour
        plot.draw_text(img, 24 + 150 * i, 37, name, scale=1)
    for j, r in enumerate(results):
        y = top + row_h * j
        _, label, paper = next(x[1:4] for x in ROWS if x[0] == r["row"])
        plot.draw_text(img, 10, y + 10, label, scale=1)
        for k, (value, colour) in enumerate(((paper / 100, PAPER), (r["exact_accuracy"], EXACT),
                                             (r["accuracy"], CELL))):
            bar_y = y + 2 + 9 * k
            img[bar_y:bar_y + 8, x0:x0 + max(1, round(value * width))] = colour
            plot.draw_text(img, x0 + round(value * width) + 4, bar_y + 1, f"{value:.1%}", scale=1)
    img[top - 4:top + row_h * len(results), x0] = 0  # the 0% axis
    plot.write_png(path, img)


def main(argv):
    try:
        own, passthrough = parse(argv)
        base = configurator.configure([own["config"], *passthrough])  # a bad setting fails here, before any row
        if not os.path.isfile(os.path.join(base["data_dir"], "train", "dataset.json")):
            raise UserError(f"{base['data_dir']} not found; make it with "
                            f"`python prepare_sudoku.py --difficulty medium` (or pass --data_dir=...)")
        try:
            os.makedirs(own["out"], exist_ok=True)
        except OSError as e:
            raise UserError(f"--out={own['out']}: cannot make that folder ({e.strerror}); pick another --out") from None
        results = [run_row(own, train_args(own, passthrough, row, base), row, i, len(own["rows"]))
                   for i, row in enumerate(own["rows"], start=1)]
        write_table(os.path.join(own["out"], "table.md"), results, own, base)
        write_chart(os.path.join(own["out"], "ablations.png"), results, own, base)
        print(f"wrote {os.path.join(own['out'], 'table.md')} and {os.path.join(own['out'], 'ablations.png')}")
    except (UserError, configurator.UserError) as e:
        sys.exit(f"ablate.py: {e}")
    except KeyboardInterrupt:  # finished rows are kept; the next run goes on from the first unfinished one
        sys.exit("ablate.py: interrupted; run the same command again to continue the table")


if __name__ == "__main__":
    main(sys.argv[1:])
