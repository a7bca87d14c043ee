r"""
Solve puzzles with a trained TRM and watch it think: the answer after every supervision step, more
test-time compute than in training (--steps, --sweep), or less (--halt=adaptive).

    python sample.py --out_dir=out-sudoku-cpu                          # 3 test puzzles, every step shown
    python sample.py --out_dir=out-sudoku-cpu --gif=solve.gif \
        --puzzle=7.69.28......16..2.2...36.15.1..8.2629.63.5..6.42.....3.8.792..9.23..1........36.
    python sample.py --out_dir=out-sudoku-cpu --puzzle_file=mine.txt   # one puzzle a line: question[,answer]
    python sample.py --out_dir=out-sudoku-cpu --steps=32               # more supervision steps than trained
    python sample.py --out_dir=out-sudoku-cpu --sweep=1,2,4,8,16,32,64 # test-set accuracy and time vs steps
    python sample.py --out_dir=out-sudoku-cpu --eval --halt=adaptive --halt_p=0.5,0.98  # early exit vs fixed
    python sample.py --official_ckpt=PATH --config=config/sudoku_mlp.py --puzzle=...   # official weights

A Sudoku is its grid row by row, '.' or '0' for a blank; whitespace and the box rules '|', '-', '+'
of a printed grid are ignored. Every answer is checked by the rules (a full grid, each digit once per
row, column and box, the givens kept), so a puzzle without a known answer still gets solved / not solved.
"""
import argparse
import dataclasses
import math
import os
import shutil
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

import configurator
import dataset
import plot
from dataset import IGNORE_LABEL_ID, DatasetError
from model import TRM, Carry, TRMConfig, load_official_state_dict, official_to_ours
from prepare_common import InputError

UserError = configurator.UserError  # one-line messages, printed without a traceback


# ----------------------------------------------------------------------------------------------
# Loading a model: our checkpoint with its EMA weights, or an official state dict with a config


def load_run(out_dir, device, dtype):
    """(model with EMA weights, training settings C) from out_dir/ckpt.pt."""
    path = os.path.join(out_dir, "ckpt.pt")
    if not os.path.isdir(out_dir):
        raise UserError(f"out_dir {out_dir!r} not found; pass --out_dir=<a directory train.py wrote> "
                        f"(e.g. out-sudoku-cpu after `python train.py config/sudoku_cpu.py`)")
    if not os.path.isfile(path):
        raise UserError(f"{path} not found; train first (python train.py ... --out_dir={out_dir}) or pass "
                        f"--out_dir=<a run directory with ckpt.pt>")
    state = configurator.read_checkpoint(path, fix="Is it a train.py checkpoint? Pass --out_dir=<a run directory "
                                               "with ckpt.pt>")  # data only: a crafted file is refused, never run
    forward_dtype = configurator.resolve_dtype(dtype, device)
    try:
        model = TRM(TRMConfig(**dict(state["model_config"], forward_dtype=forward_dtype)))
        model.load_state_dict(state["model"])
    except (TypeError, ValueError, RuntimeError) as e:
        raise UserError(f"{path} does not fit this model.py ({str(e).splitlines()[0][:160]}); was it written by "
                        f"another version?") from None
    if state.get("ema"):  # evaluation uses the EMA of the weights, as train.py's does
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(state["ema"]["shadow"][name])
    return model.to(device).eval(), state["config"]


def load_official(path, config, data_dir, device, dtype):
    """(model, settings C) from a state dict saved by the official code and the train.py config
    file it was trained with."""
    if not config:
        raise UserError("--official_ckpt needs --config=<the config/*.py it was trained with>, "
                        "e.g. --config=config/sudoku_mlp.py")
    C = configurator.configure([config])
    C["data_dir"] = data_dir or C["data_dir"]
    if not os.path.isfile(path):
        raise UserError(f"--official_ckpt={path}: file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("model", state)
        ours = {official_to_ours(k): v for k, v in state.items()}
    except Exception as e:
        raise UserError(f"{path} is unreadable ({type(e).__name__}: {str(e)[:100]}); is it a state dict?") from None
    for key in configurator.FROM_DATASET:
        C[key] = None
    C["dtype"] = configurator.resolve_dtype(dtype, device)
    model = TRM(configurator.model_config(C, official_shape(ours, C)))
    try:
        load_official_state_dict(model, state)
    except ValueError as e:
        raise UserError(f"{path}: {e}") from None
    return model.to(device).eval(), C


def official_shape(weights, C):
    """vocab_size, seq_len and num_puzzle_identifiers of official weights: the puzzle table and the
    token embedding give two; seq_len comes from the dataset when at hand, else from MLP-t's width,
    else from the task's usual shape."""
    meta = split_meta(C["data_dir"]) or {}
    vocab = weights["embed_tokens"].shape[0] if "embed_tokens" in weights else meta.get("vocab_size")
    ids = weights["puzzle_emb.weights"].shape[0] if "puzzle_emb.weights" in weights else 1
    seq_len = meta.get("seq_len")
    if seq_len is None and "net.layers.0.mlp_t.down_proj.weight" in weights:
        prefix = TRMConfig(hidden_size=C["hidden_size"], num_heads=C["num_heads"], puzzle_emb_ndim=C["puzzle_emb_ndim"],
                           puzzle_emb_len=C["puzzle_emb_len"], mlp_t=True, pos_encodings="none").prefix_len
        seq_len = weights["net.layers.0.mlp_t.down_proj.weight"].shape[0] - prefix
    if seq_len is None:
        seq_len = next((s for (v, s) in dataset.TASK_SHAPES if v == vocab), None)
    if vocab is None or seq_len is None:
        raise UserError("cannot tell the puzzle shape of these weights; pass --data_dir=<the dataset they were "
                        "trained on>")
    return dict(vocab_size=int(vocab), seq_len=int(seq_len), num_puzzle_identifiers=int(ids))


def split_meta(data_dir, split="test"):
    try:
        return dataset.load_split(data_dir, split)[0]
    except DatasetError:
        return None


def checkpoint_task(cfg, data_dir, split):
    """(the task's name, its prepare script, the puzzle shape the checkpoint solves): the task from its
    dataset's metadata when at hand, else from the model's shape."""
    meta = split_meta(data_dir, split)
    if meta and (meta["vocab_size"], meta["seq_len"]) != (cfg.vocab_size, cfg.seq_len):
        raise UserError(f"{data_dir} holds vocab_size={meta['vocab_size']}, seq_len={meta['seq_len']} but the "
                        f"checkpoint was trained on vocab_size={cfg.vocab_size}, seq_len={cfg.seq_len}; "
                        f"pass --data_dir=<its dataset>")
    name = dataset.task_of(meta or {}) or dataset.task_of(dict(vocab_size=cfg.vocab_size, seq_len=cfg.seq_len))
    size = dataset.task_script("sudoku").sudoku_size(cfg.seq_len)
    if name is None and size and cfg.vocab_size == size + 2:
        name = "sudoku"  # 4x4 and 6x6 Sudoku have no official shape to recognise
    if name not in dataset.TASKS:
        raise UserError(f"the checkpoint's task {name or 'unknown'!r} has no support in sample.py yet "
                        f"(supported: {', '.join(dataset.TASKS)})")
    task = dataset.task_script(name)
    return name, task, task.puzzle_shape(cfg.vocab_size, cfg.seq_len, data_dir)


def looks_like(text):
    """The task a typed puzzle seems to be, to catch a puzzle given to another task's checkpoint."""
    return next((name for name in dataset.TASKS if dataset.task_script(name).looks_like(text)), None)


# ----------------------------------------------------------------------------------------------
# Puzzles: a batch of numpy arrays plus a name per row


def user_puzzles(task, shape, args, ckpt_task):
    """--puzzle (a string, or a file for tasks whose puzzles are files) or --puzzle_file."""
    if args.puzzle is not None:
        text, where = args.puzzle, "--puzzle"
        if os.path.isfile(text) and looks_like(text) != "sudoku":  # a maze drawn in a file, an ARC task
            where = text
            if not text.endswith(".json"):
                text = dataset.read_text(text)
        guess = looks_like(args.puzzle if args.puzzle.endswith(".json") else text)
        if guess and guess != ckpt_task:
            raise UserError(f"--puzzle looks like a {guess} puzzle but the checkpoint solves {ckpt_task}; "
                            f"pass a {guess} checkpoint (--out_dir=...)")
        rows = task.parse_puzzle(text, where, shape)
    else:
        if not os.path.isfile(args.puzzle_file):
            raise UserError(f"--puzzle_file={args.puzzle_file}: file not found")
        rows = task.read_puzzle_file(args.puzzle_file, shape)
    return batch_of(rows)


def batch_of(rows):
    """Rows (name, question, answer or None[, puzzle identifier]) -> (batch of numpy arrays, names)."""
    inputs = np.stack([np.asarray(r[1], np.int32) for r in rows])
    labels = np.stack([np.full(len(r[1]), IGNORE_LABEL_ID, np.int32) if r[2] is None else np.asarray(r[2], np.int32)
                       for r in rows])
    ids = np.array([r[3] if len(r) > 3 else 0 for r in rows], np.int32)  # 0: the blank identifier
    return dict(inputs=inputs, labels=labels, puzzle_identifiers=ids), [r[0] for r in rows]


def test_puzzles(data_dir, split, limit):
    """The first `limit` examples of a split (0 = all), labels and identifiers as training saw them."""
    batches, total = [], 0
    if os.path.isdir(data_dir) and not os.path.isfile(os.path.join(data_dir, split, "dataset.json")):
        have = sorted(d for d in os.listdir(data_dir) if os.path.isfile(os.path.join(data_dir, d, "dataset.json")))
        if have:
            raise UserError(f"--split={split}: {data_dir} has no such split (it has {', '.join(have)})")
    try:
        for batch, real in dataset.eval_batches(data_dir, split, 1024):
            batches.append({k: v[:real] for k, v in batch.items()})
            total += real
            if limit and total >= limit:
                break
    except DatasetError as e:
        raise UserError(f"{e} (or give your own puzzle with --puzzle / --puzzle_file)") from None
    rows = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    rows = {k: v[:limit] if limit else v for k, v in rows.items()}
    return rows, [f"{split} #{i}" for i in range(len(rows["inputs"]))]


# ----------------------------------------------------------------------------------------------
# Inference: supervision steps, past the trained limit, with adaptive early exit


def halt_logit(p):
    """The q_halt above which sigmoid(q_halt) > p; p = 0.5 gives ACT's own rule, q_halt > 0."""
    return math.log(p / (1 - p))


def solve(model, puzzles, steps, halt_p=None, slots=256, device="cpu", on_step=None, shrink=True):
    """Every puzzle (a dict of numpy arrays) through `steps` supervision steps, `slots` at a time.

    A puzzle leaves its slot after its last step (adaptive halting, halt_p given: the first step where
    sigmoid(q_halt) > halt_p) and the next puzzle takes the slot at the next call, as halted slots do
    in training, so the batch stays full and early exits save real compute. Once no puzzle waits, the
    empty slots leave the batch (shrink=True); a compiled model keeps one shape instead (shrink=False),
    and so one graph. The halting is decided here, not by the model's own step limit, so `steps` may
    exceed the trained halt_max_steps: the recursion goes on instead of restarting.
    on_step(step, index, outputs, finished) after each call, per row: its supervision step, its puzzle
    (-1: an empty slot) and whether that puzzle has just taken its last step.
    Returns preds (N, L), q_halt (N,) and steps taken (N,), numpy, each at its puzzle's last step."""
    n = len(puzzles["inputs"])
    out = dict(preds=np.empty_like(puzzles["inputs"]), q_halt=np.zeros(n, np.float32), steps=np.zeros(n, np.int32))
    index = np.arange(min(slots, n))  # the puzzle in each slot
    batch = {k: torch.from_numpy(np.ascontiguousarray(v[index])).to(device) for k, v in puzzles.items()}
    carry, waiting = model.initial_carry(batch), len(index)  # every slot takes its puzzle at the first call
    limit = halt_logit(halt_p) if halt_p is not None else math.inf
    while len(index):
        carry, outputs = model(carry, batch)
        step, q = carry.steps.cpu().numpy(), outputs["q_halt_logits"].float().cpu().numpy()
        live = index >= 0
        at = index[live]
        out["preds"][at] = outputs["preds"].cpu().numpy()[live]
        out["q_halt"][at], out["steps"][at] = q[live], step[live]
        done = (step >= steps) | (q > limit) | ~live
        if on_step:
            on_step(step, index, outputs, done & live)
        restart = np.flatnonzero(done)
        fill = restart[:n - waiting]  # the next waiting puzzles take the first free slots
        index[restart], index[fill] = -1, np.arange(waiting, waiting + len(fill))
        waiting += len(fill)
        if len(fill):
            rows = torch.from_numpy(fill).to(device)
            for k, v in batch.items():
                v[rows] = torch.from_numpy(np.ascontiguousarray(puzzles[k][index[fill]])).to(device)
        keep = index >= 0
        if not keep.any():
            break
        carry = dataclasses.replace(carry, halted=torch.from_numpy(done).to(device))
        if shrink and not keep.all():  # nothing waits for the empty slots: drop them, the saving is real
            rows = torch.from_numpy(keep).to(device)
            index, batch = index[keep], {k: v[rows] for k, v in batch.items()}
            carry = Carry(carry.y[rows], carry.z[rows], carry.steps[rows], carry.halted[rows],
                          {k: v[rows] for k, v in carry.data.items()})
    return out["preds"], out["q_halt"], out["steps"]


@torch.inference_mode()
def solve_set(model, puzzles, steps, halt_p, batch_size, device, snapshots=(), desc="solve", bar=True, shrink=True):
    """solve(), timed, with a bar over the puzzles. Returns preds, q_halt, steps taken, wall seconds, and
    for each step in `snapshots` (fixed steps: every row is at the same step) the predictions after that
    step and the seconds spent on the calls up to it."""
    snap = {s: dict(preds=np.empty_like(puzzles["inputs"]), q_halt=np.empty(len(puzzles["inputs"]), np.float32),
                    seconds=0.0) for s in snapshots}
    progress = tqdm(total=len(puzzles["inputs"]), desc=desc, leave=False, dynamic_ncols=True,
                    disable=None if bar else True)
    clock = [time.perf_counter()]

    def record(step, index, outputs, finished):
        if device == "cuda":
            torch.cuda.synchronize()
        spent, clock[0] = time.perf_counter() - clock[0], time.perf_counter()
        live = index >= 0
        for s, kept in snap.items():
            kept["seconds"] += spent if step[live].max() <= s else 0.0
            rows = live & (step == s)
            if rows.any():
                kept["preds"][index[rows]] = outputs["preds"].cpu().numpy()[rows]
                kept["q_halt"][index[rows]] = outputs["q_halt_logits"].float().cpu().numpy()[rows]
        progress.update(int(finished.sum()))

    with progress:
        start = time.perf_counter()
        preds, q_halt, taken = solve(model, puzzles, steps, halt_p, batch_size, device, record, shrink)
        seconds = time.perf_counter() - start
    return dict(preds=preds, q_halt=q_halt, steps=taken, seconds=seconds, snapshots=snap)


def score(task, shape, puzzles, preds):
    """exact (vs the known answer, over puzzles that have one), valid (by the rules), cell accuracy."""
    labels = puzzles["labels"]
    known = (labels != IGNORE_LABEL_ID).any(1)
    supervised = labels != IGNORE_LABEL_ID
    exact = ((preds == labels) | ~supervised).all(1)
    cells = ((preds == labels) & supervised).sum(1) / np.maximum(supervised.sum(1), 1)
    valid = task.check(puzzles["inputs"], preds, shape)
    return dict(exact=exact[known].mean() if known.any() else float("nan"),
                cells=cells[known].mean() if known.any() else float("nan"),
                valid=float(np.mean(valid)) if valid is not None else float("nan"), known=int(known.sum()))


# ----------------------------------------------------------------------------------------------
# The three modes: show puzzles step by step, evaluate a set (adaptive vs fixed), sweep the steps


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def verdict(task, shape, question, pred, label):
    """(solved, words): by the rules where the task has them, else against the known answer (None: unknown)."""
    known = label is not None and bool((label != IGNORE_LABEL_ID).any())
    matches = known and bool(((pred == label) | (label == IGNORE_LABEL_ID)).all())
    valid = task.check(question[None], pred[None], shape)
    if valid is None:
        return (matches if known else None), ("matches the known answer" if matches else
                                              "differs from the known answer" if known else "no rule to check it by")
    if not valid[0]:
        return False, task.explain(question, pred, shape)
    words = task.SOLVED_WORDS
    if known:
        words += ", matches the known answer" if matches else \
            f", but differs from the known answer in {int((pred != label).sum())} cells"
    return True, words


def outcome(ok):
    return "solved" if ok else "not solved" if ok is False else "answered"


def show(task, shape, model, puzzles, names, steps, halt_p, args, device):
    """Solve every puzzle, print the first args.show step by step and the rest one line each; GIF of the first."""
    threshold = halt_logit(args.halt_p[0])  # what "halt" means in the display, adaptive or not
    kept = trace(model, puzzles, steps, halt_p, threshold, args.show, bool(args.gif), args.batch_size, device,
                 shrink=not args.compile)
    color = args.color == "always" or (args.color == "auto" and sys.stdout.isatty() and not os.environ.get("NO_COLOR"))
    width = shutil.get_terminal_size((100, 24)).columns
    trained, solved, judged = model.config.halt_max_steps, 0, 0
    for r, name in enumerate(names):
        question, taken, first = puzzles["inputs"][r], int(kept["steps"][r]), int(kept["first_halt"][r]) or None
        ok, words = verdict(task, shape, question, kept["preds"][r], puzzles["labels"][r])
        solved, judged = solved + bool(ok), judged + (ok is not None)
        rule = f"p(halt) > {args.halt_p[0]:g}"
        halting = f"{rule} first at step {first}" if first else f"never {rule} in {taken} steps"
        if r >= args.show:
            print(f"{name}: {outcome(ok)} after {taken} steps ({words}; {halting})")
            continue
        print(f"\n{name}, {task.describe_puzzle(question, shape)}: {taken} supervision steps" +
              (f" (trained with {trained})" if steps != trained else "") + (f", stop at {rule}" if halt_p else ""))
        panels, prev = [(["question", ""], task.render_text(question, question, None, shape, color))], None
        for run in kept["runs"][r]:
            changed = f", {int((run['pred'] != prev).sum())} changed" if prev is not None else ""
            p_halt = sorted({f"{sigmoid(run['low']):.2f}", f"{sigmoid(run['high']):.2f}"}, key=float)
            span = f"step {run['first']}" if run["first"] == run["last"] else f"steps {run['first']}-{run['last']}"
            head = [span + changed, f"p(halt) {'-'.join(p_halt)} {'halt' if run['q'] > threshold else 'go on'}"]
            panels.append((head, task.render_text(run["pred"], question, prev, shape, color)))
            prev = run["pred"]
        print(plot.side_by_side(panels, width))
        print(f"{outcome(ok)}: {words}; {halting}")
        if r == 0 and args.gif:
            write_solve_gif(args.gif, task, shape, question, kept["every"], ok, threshold)
            print(f"wrote {args.gif} ({len(kept['every']) + 1} frames)")
    budget = f"at most {steps} steps, adaptive halting" if halt_p else f"{steps} steps"
    if judged:
        print(f"\n{solved} of {judged} solved ({budget})" + (f"; {len(names) - judged} without a known answer"
                                                             if judged < len(names) else ""))
    else:
        print(f"\n{len(names)} answered ({budget}); no known answers or rules to judge them by")
    return kept


LONG_RUN = 100  # supervision steps (all batches together) from which a progress bar is worth drawing


def step_bar(total, desc):
    """A bar over supervision steps for long runs (--steps=100000 would print nothing for minutes);
    none for short ones, nor when stderr is not a terminal (disable=None), as the other bars."""
    return tqdm(total=total, desc=desc, unit="step", leave=False, dynamic_ncols=True,
                disable=None if total >= LONG_RUN else True)


def trace(model, puzzles, steps, halt_p, threshold, shown, gif, batch_size, device, shrink=True):
    """Solve every puzzle, keeping what show() prints in memory that does not grow with the steps: per
    puzzle its last answer and step and the first step with q_halt > threshold; for the `shown` first
    puzzles their runs (one entry per change, a panel each); every step only for the GIF's puzzle (0)."""
    n = len(puzzles["inputs"])
    kept = dict(first_halt=np.zeros(n, np.int32), runs=[[] for _ in range(min(shown, n))], every=[] if gif else None)
    bar = step_bar(steps * -(-n // batch_size), "solve")

    def record(step, index, outputs, finished):
        q, live = outputs["q_halt_logits"].float().cpu().numpy(), index >= 0
        first = np.flatnonzero(live & (q > threshold))
        first = first[kept["first_halt"][index[first]] == 0]
        kept["first_halt"][index[first]] = step[first]
        for i in np.flatnonzero(live & (index < len(kept["runs"]))):
            pred = outputs["preds"][i].cpu().numpy().copy()  # a copy: a view would keep the whole batch's array
            add_step(kept["runs"][index[i]], int(step[i]), pred, float(q[i]), threshold)
            if index[i] == 0 and gif:
                kept["every"].append((int(step[i]), pred, float(q[i])))
        bar.update()

    with torch.inference_mode(), bar:
        kept["preds"], _, kept["steps"] = solve(model, puzzles, steps, halt_p, batch_size, device, record, shrink)
    return kept


def add_step(runs, step, pred, q, threshold):
    """One step into a puzzle's runs: consecutive steps with the same answer and the same halting
    decision share a panel, so the display keeps one entry per change, not one per step."""
    last = runs[-1] if runs else None
    if last and np.array_equal(last["pred"], pred) and (last["q"] > threshold) == (q > threshold):
        last.update(last=step, low=min(last["low"], q), high=max(last["high"], q))
    else:
        runs.append(dict(first=step, last=step, pred=pred, q=q, low=q, high=q))


def write_solve_gif(path, task, shape, question, steps_seen, ok, threshold):
    """One frame for the question, one per supervision step, its p(halt) below; the last says solved or not."""
    parts = [(task.render_image(question, question, None, shape), "question", "", plot.INK)]
    prev = question
    for i, (step, pred, q) in enumerate(steps_seen):
        footer, colour = f"p(halt) {sigmoid(q):.2f} {'halt' if q > threshold else 'go on'}", plot.INK
        if i == len(steps_seen) - 1 and ok is not None:
            footer = ("solved" if ok else "not solved") + f"  p(halt) {sigmoid(q):.2f}"
            colour = plot.GREEN if ok else plot.RED
        parts.append((task.render_image(pred, question, prev, shape), f"step {step} of {len(steps_seen)}", footer,
                      colour))
        prev = pred
    write_file("gif", path, lambda: plot.write_solve_gif(path, parts))


def write_file(option, path, write):
    """Run write(), one of plot.py's writers (which leave no temp file behind when they fail): an OSError
    (a full disk, a read-only place) is one line naming the path."""
    try:
        write()
    except OSError as e:
        raise UserError(f"--{option}={path}: cannot write ({e.strerror or e}); pick a writable path") from None


def evaluate(task, shape, model, puzzles, steps, args, device):
    """Every puzzle of the set with fixed steps and, for --halt=adaptive, with early exit at each
    --halt_p too. The runs alternate every few batches, in an order rotated each time, so that other
    jobs on a busy machine slow each alike (each run streams its puzzles through the slots: see solve)."""
    modes = [None] + (args.halt_p if args.halt == "adaptive" else [])
    n, size = len(puzzles["inputs"]), args.batch_size
    results = {m: dict(preds=np.empty_like(puzzles["inputs"]), steps=np.empty(n, np.int32),
                       seconds=[0.0] * args.repeats) for m in modes}
    shrink, part = not args.compile, size * INTERLEAVE
    solve_set(model, {k: v[:size] for k, v in puzzles.items()}, 1, None, size, device, bar=False, shrink=shrink)  # warm-up
    with tqdm(total=args.repeats * n * len(modes), desc="eval", leave=False, dynamic_ncols=True, disable=None) as bar:
        for rep in range(args.repeats):
            for i, lo in enumerate(range(0, n, part)):
                chunk = {k: v[lo:lo + part] for k, v in puzzles.items()}
                turn = (i + rep) % len(modes)
                for halt_p in modes[turn:] + modes[:turn]:
                    r = solve_set(model, chunk, steps, halt_p, size, device, bar=False, shrink=shrink)
                    results[halt_p]["seconds"][rep] += r["seconds"]
                    results[halt_p]["preds"][lo:lo + part], results[halt_p]["steps"][lo:lo + part] = \
                        r["preds"], r["steps"]
                    bar.update(len(chunk["inputs"]))
    print(f"{n} puzzles, {device} {model.config.forward_dtype}, batch {size}, {args.repeats} timed run(s) each, "
          f"interleaved every {INTERLEAVE} batches")
    print("| halting | mean steps | wall time (s) | speed-up | exact | valid by the rules | cells |")
    print("|---|---|---|---|---|---|---|")
    fixed_time = float(np.median(results[None]["seconds"]))
    for halt_p, r in results.items():
        r.update(score(task, shape, puzzles, r["preds"]), time=float(np.median(r["seconds"])))
        name = f"fixed {steps} steps" if halt_p is None else \
            f"adaptive: p(halt) > {halt_p:g}" + (" (q_halt > 0)" if halt_p == 0.5 else "") + f", at most {steps}"
        print(f"| {name} | {r['steps'].mean():.2f} | {', '.join(f'{t:.1f}' for t in r['seconds'])} | "
              f"{fixed_time / r['time']:.2f}x | {fmt(r['exact'])} | {fmt(r['valid'])} | {fmt(r['cells'])} |")
    for halt_p in modes[1:]:
        fixed, adapt = results[None], results[halt_p]
        solved = "exact" if fixed["known"] else "valid"
        print(f"adaptive p(halt) > {halt_p:g}: {fixed['time'] / adapt['time']:.2f}x faster (median wall time), "
              f"{solved} accuracy {100 * (adapt[solved] - fixed[solved]):+.1f} points")
    return results


def fmt(x):
    return "-" if x != x else f"{100 * x:.1f}%"


def sweep(task, shape, model, puzzles, step_counts, args, device, chart):
    """One run to the largest step count, predictions and time read off at each count asked for:
    the same numbers as separate runs (a step does not depend on the limit), for a fraction of the time."""
    r = solve_set(model, puzzles, max(step_counts), None, args.batch_size, device, snapshots=step_counts,
                  desc="sweep", shrink=not args.compile)
    trained = model.config.halt_max_steps
    n = len(puzzles["inputs"])
    print(f"{n} puzzles, {device} {model.config.forward_dtype}, batch {args.batch_size}; trained with {trained} steps")
    print("| steps | exact | valid by the rules | cells | q_halt > 0 | time (s) | ms per puzzle |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for s in step_counts:
        snap = r["snapshots"][s]
        sc = score(task, shape, puzzles, snap["preds"])
        rows.append((s, sc, snap["seconds"]))
        mark = " (trained)" if s == trained else ""
        print(f"| {s}{mark} | {fmt(sc['exact'])} | {fmt(sc['valid'])} | {fmt(sc['cells'])} | "
              f"{fmt(float(np.mean(snap['q_halt'] > 0)))} | {snap['seconds']:.1f} | "
              f"{1000 * snap['seconds'] / n:.1f} |")
    solved = [sc["exact"] if sc["known"] else sc["valid"] for _, sc, _ in rows]
    times = [t for _, _, t in rows]
    panels = [("seconds", times, (0, max(times)))]
    if np.isnan(solved).any():  # no known answers and no rules (e.g. ARC evaluation challenges)
        print("no known answers or rules to judge the puzzles by: the chart shows time only")
    else:
        panels.insert(0, ("percent solved", [100 * x for x in solved], (0, 100)))
    write_file("chart", chart, lambda: plot.plot_sweep(chart, step_counts, panels, mark=trained))  # after the table
    print(f"wrote {chart}")
    return rows


# ----------------------------------------------------------------------------------------------
# Command line


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage dump
        raise UserError(f"{message}; see python sample.py --help")


def build_parser():
    p = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out_dir", default="out", help="run directory holding ckpt.pt (default %(default)s)")
    p.add_argument("--official_ckpt", metavar="PATH", help="a state dict saved by the official TRM code")
    p.add_argument("--config", metavar="FILE", help="with --official_ckpt: the config/*.py it was trained with")
    p.add_argument("--data_dir", help="test puzzles from here (default: the checkpoint's data_dir)")
    p.add_argument("--split", default="test", help="split of the dataset to take puzzles from (default %(default)s)")
    p.add_argument("--puzzle", help="one puzzle (Sudoku: the grid row by row, '.' or '0' for blanks)")
    p.add_argument("--puzzle_file", help="many puzzles (Sudoku: one a line, question or question,answer)")
    p.add_argument("--show", type=int, default=3, help="puzzles shown step by step (default %(default)s)")
    p.add_argument("--steps", type=int, help="supervision steps (default: the run's eval_steps, else its halt_max_steps; more is allowed)")
    p.add_argument("--halt", choices=["fixed", "adaptive"], default="fixed",
                   help="adaptive: stop a puzzle after the step where p(halt) = sigmoid(q_halt) > --halt_p "
                        "(default %(default)s)")
    p.add_argument("--halt_p", default="0.98", metavar="P[,P...]",
                   help="adaptive halting's threshold (0.5 is ACT's own q_halt > 0, which stops too early); "
                        "--eval takes a list to compare (default %(default)s, chosen on puzzles apart from "
                        "the test set: docs/sample.md)")
    p.add_argument("--eval", action="store_true", help="score the whole set (fixed and, with --halt=adaptive, both)")
    p.add_argument("--sweep", metavar="LIST", help="score the set after each of these step counts, e.g. 1,2,4,8,16")
    p.add_argument("--chart", help="the sweep's PNG chart (default: out_dir/sweep.png)")
    p.add_argument("--num_puzzles", type=int, default=0,
                   help="solve the first N puzzles of the set (default: --show of them; --eval/--sweep: all)")
    p.add_argument("--batch_size", type=int, default=256, help="puzzles per batch (default %(default)s)")
    p.add_argument("--repeats", type=int, default=1, help="--eval: timed runs of each halting, interleaved")
    p.add_argument("--gif", help="write the first puzzle's solve as an animated GIF, one frame per step")
    p.add_argument("--color", choices=["auto", "always", "never"], default="auto")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    p.add_argument("--dtype", default="auto", help="auto | bfloat16 | float32 | float64")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the model (for GPUs): one graph, every batch kept at --batch_size rows")
    return p


MAX_STEPS = 2**31 - 1  # steps are counted in int32 tensors
INTERLEAVE = 4  # --eval: batches of puzzles each halting rule solves before the next one takes its turn


def parse_args(argv):
    args = build_parser().parse_args(argv)
    for name, lowest in (("steps", 1), ("show", 0), ("num_puzzles", 0), ("batch_size", 1), ("repeats", 1)):
        value = getattr(args, name)
        if value is not None and value < lowest:
            raise UserError(f"--{name}={value}: must be at least {lowest}")
    if args.steps is not None and args.steps > MAX_STEPS:
        raise UserError(f"--steps={args.steps}: must be at most {MAX_STEPS}")
    try:
        args.halt_p = [float(x) for x in args.halt_p.split(",")]
    except ValueError:
        raise UserError(f"--halt_p={args.halt_p}: give probabilities like 0.5 or 0.5,0.9") from None
    if not all(0 < x < 1 for x in args.halt_p):
        raise UserError(f"--halt_p={args.halt_p}: each threshold must lie strictly between 0 and 1")
    if len(args.halt_p) > 1 and not args.eval:
        raise UserError("--halt_p takes a list only with --eval (to compare); give one value")
    if args.puzzle is not None and args.puzzle_file:
        raise UserError("--puzzle and --puzzle_file both given; pass one of them")
    if args.sweep is not None:
        try:
            args.sweep = sorted({int(s) for s in args.sweep.split(",") if s.strip()})
        except ValueError:
            raise UserError(f"--sweep={args.sweep}: give step counts separated by commas, e.g. 1,2,4,8,16") from None
        if not args.sweep or args.sweep[0] < 1 or args.sweep[-1] > MAX_STEPS:
            raise UserError(f"--sweep={args.sweep}: step counts must be at least 1 and at most {MAX_STEPS}, "
                            f"e.g. 1,2,4,8,16")
    if args.gif and (args.eval or args.sweep):
        raise UserError("--gif draws a shown puzzle's solve; drop --eval / --sweep for it")
    if args.config and not args.official_ckpt:
        raise UserError("--config is for --official_ckpt; our checkpoints carry their own config (--out_dir)")
    for option, example in (("gif", "solve.gif"), ("chart", "sweep.png")):  # checked before the solving, not after
        path = getattr(args, option)
        if path and os.path.isdir(path):
            raise UserError(f"--{option}={path} is a directory; name a file, e.g. "
                            f"--{option}={os.path.join(path, example)}")
        folder = os.path.dirname(os.path.abspath(path)) if path else None
        if folder and not os.path.isdir(folder):
            raise UserError(f"--{option}={path}: cannot write ({folder} is not a directory); pick a writable path")
    return args


def run(args):
    device = configurator.resolve_device(args.device)
    if args.official_ckpt:
        model, C = load_official(args.official_ckpt, args.config, args.data_dir, device, args.dtype)
    else:
        model, C = load_run(args.out_dir, device, args.dtype)
    data_dir = args.data_dir or C["data_dir"]
    name, task, shape = checkpoint_task(model.config, data_dir, args.split)
    if args.puzzle is not None or args.puzzle_file:
        puzzles, names = user_puzzles(task, shape, args, name)
    else:
        shown = args.num_puzzles or max(args.show, 1)
        puzzles, names = test_puzzles(data_dir, args.split, args.num_puzzles if args.eval or args.sweep else shown)
    try:  # once, on the CPU: the forward itself does not check (on a GPU every check would wait for it)
        model.check_batch({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in puzzles.items()})
    except ValueError as e:
        raise UserError(f"{data_dir if args.puzzle is None and not args.puzzle_file else 'the puzzles'}: {e}") from None
    steps = args.steps or C.get("eval_steps") or model.config.halt_max_steps  # the run's own evaluation depth
    if args.compile:
        model = torch.compile(model)
    if args.sweep:
        chart = args.chart or os.path.join(os.path.dirname(args.official_ckpt) if args.official_ckpt else args.out_dir,
                                           "sweep.png")
        return sweep(task, shape, model, puzzles, args.sweep, args, device, chart)
    if args.eval:
        return evaluate(task, shape, model, puzzles, steps, args, device)
    return show(task, shape, model, puzzles, names, steps, args.halt_p[0] if args.halt == "adaptive" else None, args,
                device)


def main(argv=None):
    try:
        run(parse_args(sys.argv[1:] if argv is None else argv))
    except (UserError, InputError, DatasetError) as e:
        sys.exit(f"sample.py: {e}")
    except KeyboardInterrupt:
        sys.exit("sample.py: interrupted")


if __name__ == "__main__":
    main()
