"""
Train a TRM on a dataset written by prepare_*.py (the official layout, see dataset.py).

    python train.py config/sudoku_cpu.py                      # CPU quick start
    python train.py config/sudoku_mlp.py --lr=3e-4            # a config file, then --key=value overrides
    python train.py config/sudoku_cpu.py --init_from=resume   # continue a killed run exactly

Every setting below can be overridden; the model's settings are TRMConfig's fields (model.py).
"""
import contextlib
import dataclasses
import datetime
import difflib
import functools
import json
import math
import os
import queue
import shlex
import signal
import sys
import threading
import time

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

# ------------------------------------------------------------------------------------------------
# Settings: defaults, then config files, then --key=value (see configurator.configure()).
# data and output
data_dir = "data/sudoku-extreme-1k-aug-1000"
out_dir = "out"
init_from = "scratch"        # "scratch" | "resume" (from out_dir/ckpt.pt)
eval_split = "test"
# schedule
global_batch_size = 768      # split evenly across data-parallel ranks
epochs = 50000
max_steps = 0                # > 0: stop after this many optimiser steps instead of `epochs` epochs
max_minutes = 0.0            # > 0: stop (evaluate, checkpoint) after this much training time
clock_schedule = False       # with max_minutes: the steps, and the lr cosine's horizon, follow from the
                             # measured time per step so that the schedule ends on the clock (max_steps: a cap)
eval_interval = 5000         # epochs between evaluations, as in the official code (one pass of the loader)
eval_steps = 0               # > 0: evaluate with this many supervision steps instead of halt_max_steps
eval_max_batches = 0         # > 0: evaluations during training look at that many batches only
puzzle_id_ablation = "none"  # "blank" | "random": also evaluate with the puzzle identifiers replaced, reported beside
log_interval = 10
ckpt_interval = 1000
# optimisation (the paper's, as in the official repository)
lr = 1e-4
lr_min_ratio = 1.0           # cosine decay towards lr * lr_min_ratio; 1.0 = constant after warm-up
lr_warmup_steps = 2000
weight_decay = 1.0
beta1 = 0.9
beta2 = 0.95
puzzle_emb_lr = 1e-4
puzzle_emb_weight_decay = 1.0
ema = True
ema_rate = 0.999
# system
device = "auto"              # "auto" | "cpu" | "cuda" | "mps"
dtype = "auto"               # "auto" | "bfloat16" | "float32" | "float64"; auto = the fastest here
compile = True
backend = "auto"             # data-parallel under torchrun: "auto" (nccl on CUDA, gloo on CPU) | "nccl" | "gloo"
ddp_timeout_minutes = 10.0   # a collective waiting longer than this (a rank died) ends the run with an error
seed = 0
wandb_log = False
wandb_project = "trm"
wandb_run_name = "run"
# the model (TRMConfig); None = taken from the dataset
vocab_size = None
seq_len = None
num_puzzle_identifiers = None
hidden_size = 512
num_heads = 8
expansion = 4.0
L_layers = 2
H_cycles = 3
L_cycles = 6
halt_max_steps = 16
halt_exploration_prob = 0.1
puzzle_emb_ndim = 512
puzzle_emb_len = 16
mlp_t = False
pos_encodings = "rope"
rope_theta = 10000.0
rms_norm_eps = 1e-5
no_ACT_continue = True
loss_type = "stablemax"
two_networks = False         # ablations (model.py TRMConfig): HRM's separate f_L and f_H
grad_mode = "last_round"     # "last_round" | "one_step" (HRM) | "full"
latent_mode = "yz"           # "yz" | "single" | "multi"
DEFAULTS = {k: v for k, v in dict(globals()).items()
            if not k.startswith("_") and isinstance(v, (bool, int, float, str, type(None)))}
# ------------------------------------------------------------------------------------------------

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch.nn.parallel import DistributedDataParallel as DDP  # noqa: E402
from tqdm import tqdm  # noqa: E402

import configurator  # noqa: E402
import dataset  # noqa: E402
import plot  # noqa: E402
from configurator import FROM_DATASET, UserError, model_config, read_checkpoint  # noqa: E402
from model import EMA, TRM, AdamATan2, Carry, PuzzleEmbSignSGD, TRMConfig, act_loss, config_fields  # noqa: E402

# Settings whose change makes a checkpoint unusable: the model's shape and the carry's batch.
SHAPE_KEYS = tuple(f for f in config_fields() if f != "forward_dtype") + ("global_batch_size",)


# ------------------------------------------------------------------------------------------------
# Data parallelism: one process per device, launched by torchrun (which sets RANK, LOCAL_RANK, WORLD_SIZE)


def init_distributed(C, device):
    """(rank, local_rank, world_size); (0, 0, 1) when not launched by torchrun. device: the resolved
    device type; nccl needs CUDA tensors, gloo takes CPU ones (and CUDA ones, slowly)."""
    if C["backend"] not in ("auto", "nccl", "gloo"):
        raise UserError(f"backend={C['backend']!r}: use auto, nccl or gloo")
    if C["backend"] == "nccl" and not torch.cuda.is_available():
        raise UserError("backend=nccl needs CUDA GPUs and this machine has none; use --backend=gloo (or auto)")
    if C["backend"] == "nccl" and device != "cuda":
        raise UserError(f"backend=nccl needs device=cuda, not {device}; use --backend=gloo (or auto)")
    if "RANK" not in os.environ:
        return 0, 0, 1
    rank, local_rank, world = (int(os.environ[k]) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))
    if C["global_batch_size"] % world:
        raise UserError(f"global_batch_size {C['global_batch_size']} does not split evenly over {world} processes; "
                        f"use a multiple of {world}, or another --nproc_per_node")
    if device == "mps" and world > 1:
        raise UserError("data parallelism over MPS is not supported; run one process (python train.py ...)")
    backend = C["backend"] if C["backend"] != "auto" else "nccl" if device == "cuda" else "gloo"
    if device == "cuda":
        torch.cuda.set_device(local_rank)  # each rank's own GPU is its current one (and its RNG state)
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=C["ddp_timeout_minutes"]))
    return rank, local_rank, world


def all_sum(values, device, world, op="sum"):
    """Sum (or min) a list of numbers or 0-d tensors over all ranks; for one process, their values."""
    if world == 1:
        return [float(v) for v in values]
    t = torch.stack([torch.as_tensor(v, dtype=torch.float64).to(device) for v in values])
    dist.all_reduce(t, op=dist.ReduceOp.MIN if op == "min" else dist.ReduceOp.SUM)
    return t.tolist()


def all_min(values, device, world):
    return all_sum(values, device, world, op="min")


def all_sum_dict(sums, device, world):
    keys = sorted(sums)
    return dict(zip(keys, all_sum([sums[k] for k in keys], device, world)))


def gather_to_rank0(obj, world):
    """[obj of rank 0, obj of rank 1, ...] on rank 0 (None elsewhere); [obj] for one process."""
    if world == 1:
        return [obj]
    out = [None] * world if dist.get_rank() == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


def to_device(batch, device):
    """numpy arrays -> tensors on the device; on CUDA through pinned memory, so the copy is asynchronous."""
    if not device.startswith("cuda"):
        return {k: torch.from_numpy(v).to(device) for k, v in batch.items()}
    return {k: torch.from_numpy(v).pin_memory().to(device, non_blocking=True) for k, v in batch.items()}


class Prefetcher:
    """The training loader's next batch, read and copied to the device by a background thread while the
    current step runs (numpy and the copy release the GIL). next() -> (batch on the device, whether it
    began a new pass, the loader's state once it is taken: what a checkpoint must save, since the
    thread runs one batch ahead). Errors of the loader (e.g. the dataset vanished) surface in next()."""

    def __init__(self, loader, device):
        self.loader, self.device = loader, device
        self.queue, self.closed = queue.Queue(maxsize=1), threading.Event()
        self.thread = threading.Thread(target=self._fill, daemon=True)
        self.thread.start()

    def _fill(self):
        try:
            while not self.closed.is_set():
                before = self.loader.iteration
                batch = to_device(self.loader.next_batch(), self.device)
                self._put((batch, self.loader.iteration != before, self.loader.state_dict()))
        except Exception as e:
            self._put(e)

    def _put(self, item):
        while not self.closed.is_set():
            try:
                return self.queue.put(item, timeout=0.1)
            except queue.Full:
                continue

    def next(self):
        item = self.queue.get()
        if isinstance(item, Exception):
            raise item
        return item

    def close(self):
        self.closed.set()
        self.thread.join()


def cpu_copy(obj):
    """A deep copy of a (nested) state dict with every tensor copied to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(cpu_copy(v) for v in obj)
    return obj


NO_BAD_STEP = float(2**53)  # "no step had a non-finite loss"; a float: MIN-reduced with the other ranks'


def stop_requests(C, t_start, stop, agree, dev, world):
    """(max_minutes reached, Ctrl-C pressed) as every rank sees them: read on the host at each step for
    one process; under DDP agreed on at log and checkpoint steps (`agree`), by one small collective,
    so that all ranks stop together."""
    out_of_time = bool(C["max_minutes"]) and time.time() - t_start > 60 * C["max_minutes"]
    if world == 1:
        return out_of_time, stop["asked"]
    if not agree:
        return False, False
    timed_out, asked = all_sum([out_of_time, stop["asked"]], dev, world)
    return timed_out > 0, asked > 0


def lr_at(step, base_lr, C, total_steps):
    """The official schedule: linear warm-up, then cosine towards base_lr * lr_min_ratio."""
    if step < C["lr_warmup_steps"]:
        return base_lr * step / max(1, C["lr_warmup_steps"])
    progress = (step - C["lr_warmup_steps"]) / max(1, total_steps - C["lr_warmup_steps"])
    return base_lr * (C["lr_min_ratio"] + max(0.0, (1 - C["lr_min_ratio"]) * 0.5 * (1 + math.cos(math.pi * progress))))


# ------------------------------------------------------------------------------------------------
# Metrics, evaluation


def summarise(sums, batch_size):
    """Official reduction: losses per puzzle of the global batch, the rest per halted puzzle."""
    count = max(float(sums.get("count", 0)), 1.0)
    out = {k: float(v) / (batch_size if k.endswith("loss") else count) for k, v in sums.items() if k != "count"}
    out["count"] = float(sums.get("count", 0))
    return out


def add_into(sums, metrics):
    for k, v in metrics.items():
        sums[k] = sums.get(k, 0) + v.detach().to(torch.float64)


def task_scorer(meta):
    """The split's task's score(data_dir, split, records, out_dir) -> {metric: float} over every
    evaluated example, and the record fields it reads; (None, ()) where exact accuracy says it all."""
    name = dataset.task_of(meta)
    script = dataset.task_script(name) if name in dataset.TASKS else None
    return (script.score, script.SCORE_FIELDS) if script is not None and script.score else (None, ())


@torch.inference_mode()
def evaluate(model, C, device, forward=None, max_batches=0, out_dir=None, world=1, ids="none"):
    """Every test puzzle (or the first max_batches batches) for all halt_max_steps (or eval_steps) supervision
    steps; metrics of the final step, plus the task's own (maze paths, ARC votes). Under DDP each
    rank evaluates its slice of every batch; the result is complete on rank 0.
    ids="blank" | "random": the puzzles are shown the blank identifier, or a random one (seeded),
    instead of their own: does the score come from the per-puzzle embedding?"""
    forward = model if forward is None else forward
    rank = dist.get_rank() if world > 1 else 0
    was_training = model.training
    model.eval()
    meta, _ = dataset.load_split(C["data_dir"], C["eval_split"])
    scorer, fields = task_scorer(meta)
    sums, n_rows, records = {}, 0, []
    batches = dataset.eval_batches(C["data_dir"], C["eval_split"], C["global_batch_size"], rank, world)
    for i, (batch, real) in enumerate(tqdm(batches, desc="eval", leave=False, dynamic_ncols=True, disable=rank > 0)):
        if max_batches and i >= max_batches:
            break
        own_ids = batch["puzzle_identifiers"].copy()  # the scorer maps each answer back through its own
        if ids == "blank":
            batch["puzzle_identifiers"][:real] = meta["blank_identifier_id"]
        elif ids == "random":  # drawn for the global batch, so that every world size shows the same ones
            drawn = np.random.default_rng([C["seed"], i]).integers(1, model.config.num_puzzle_identifiers,
                                                                    C["global_batch_size"])
            local = C["global_batch_size"] // world
            batch["puzzle_identifiers"][:real] = drawn[rank * local:rank * local + real]
        batch = to_device(batch, device)
        carry = model.initial_carry(batch)
        for i in range(C["eval_steps"] or model.config.halt_max_steps):
            if i:  # eval_steps past N_sup: the recursion goes on rather than restarting at the model's limit
                carry = dataclasses.replace(carry, halted=torch.zeros_like(carry.halted))
            carry, outputs = forward(carry, batch)
        carry = dataclasses.replace(carry, halted=torch.ones_like(carry.halted))  # every row counts at its last step
        add_into(sums, act_loss(carry, outputs, model.config.loss_type)[1])
        n_rows += real
        if scorer:
            # Only what the scorer reads, tokens as bytes: an ARC test set is ~400k examples of 900 tokens.
            kept = dict(inputs=batch["inputs"].to(torch.uint8), puzzle_identifiers=torch.from_numpy(own_ids),
                        preds=outputs["preds"].to(torch.uint8), q_halt_logits=outputs["q_halt_logits"].float())
            records.append({k: kept[k][:real].cpu().numpy() for k in fields})
    model.train(was_training)
    sums = all_sum_dict(sums, device, world)
    (n_rows,) = all_sum([n_rows], device, world)
    result = summarise(sums, max(n_rows, 1))
    if scorer:
        # Rank r holds rows [r*local, (r+1)*local) of every global batch: interleave back into order.
        per_rank = gather_to_rank0(records, world)
        if rank == 0 and records:
            ordered = [r for batch_parts in zip(*per_rank) for r in batch_parts]
            records = {k: np.concatenate([r[k] for r in ordered]) for k in ordered[0]}
            result.update(scorer(C["data_dir"], C["eval_split"], records, out_dir))
    return result


# ------------------------------------------------------------------------------------------------
# Checkpoints: atomic, complete, and refused when they do not fit


def save_checkpoint(path, state):
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # a kill at any moment leaves either the old or the new file, whole
        dir_fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException as e:  # a full disk, or Ctrl-C pressed twice: no half-written file stays behind
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(e, (OSError, RuntimeError)):  # torch.save reports a short write as a RuntimeError
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0][:80]
            kept = ("keeps the previous checkpoint. Free some space (or copy out_dir elsewhere) and resume"
                    if os.path.exists(path) else "was not written. Free some space (or pick another --out_dir) "
                    "and start again")
            raise UserError(f"{path}: cannot write the checkpoint ({reason}; is the disk full?); {path} {kept}") \
                from None
        raise


def load_checkpoint(path, C, world=1):
    if not os.path.isfile(path):
        raise UserError(f"{path} not found: nothing to resume; start with --init_from=scratch")
    state = read_checkpoint(path)
    saved = {k: state["config"].get(k, DEFAULTS.get(k)) for k in SHAPE_KEYS}  # keys added later: their default
    differ = [f"{k}: checkpoint {saved[k]!r} vs now {C[k]!r}" for k in SHAPE_KEYS
              if k in C and saved[k] != C[k] and not (k in FROM_DATASET and C[k] is None)]
    if differ:
        raise UserError(f"{path} was trained with another model shape; set these back to resume: " + "; ".join(differ))
    saved_world = len(state["carry"]) if isinstance(state.get("carry"), list) else 1
    if saved_world != world:
        raise UserError(f"{path} was written by {saved_world} process(es) and this run has {world}: each process's "
                        f"ACT carry is in the checkpoint, so resume with --nproc_per_node={saved_world}")
    return state


def carry_to(fields, device):
    """The carry's fields (tensors, and the data dict of tensors) moved to a device."""
    return {k: ({n: t.to(device) for n, t in v.items()} if isinstance(v, dict) else v.to(device))
            for k, v in fields.items()}


def write_text_atomic(path, text):
    try:
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.replace(path + ".tmp", path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.remove(path + ".tmp")
        raise UserError(f"{path}: cannot be written ({e.strerror or e}); free some space or pick another "
                        f"--out_dir") from None


def append_jsonl(path, record):
    try:
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")
    except OSError as e:
        raise UserError(f"{path}: cannot be written ({e.strerror or e}); free some space or pick another "
                        f"--out_dir") from None


def truncate_jsonl(path, step):
    """On resume, forget what was logged after the checkpoint at `step`: it is about to be redone
    (an evaluation at `step` always runs after that step's checkpoint). A line cut short by a kill
    is dropped with the rest of what comes after the checkpoint."""
    if not os.path.isfile(path):
        return
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    rows = []
    for number, line in enumerate(lines, start=1):
        try:
            row = json.loads(line)
            if not (isinstance(row, dict) and type(row.get("iter")) is int and isinstance(row.get("split"), str)):
                raise ValueError
        except ValueError:
            if number == len(lines) or not line.strip():  # the write a kill cut short, or a blank line
                continue
            raise UserError(f"{path}:{number}: not a log record of train.py; fix or delete that line, then "
                            f"resume") from None
        rows.append(row)
    kept = [json.dumps(r) + "\n" for r in rows if r["iter"] < step or (r["iter"] == step and r["split"] == "train")]
    write_text_atomic(path, "".join(kept))


def keep_old_log(path):
    """A scratch start in a directory with a log (of a run killed before its first checkpoint, or whose
    checkpoint was removed) keeps it as metrics.1.jsonl, metrics.2.jsonl, ..., and the config.json
    beside it as config.1.json, ...: never overwritten."""
    config = os.path.join(os.path.dirname(path), "config.json")
    number = 1
    while os.path.exists(numbered(path, number)) or os.path.exists(numbered(config, number)):
        number += 1
    os.replace(path, numbered(path, number))
    if os.path.exists(config):
        os.replace(config, numbered(config, number))
    return numbered(path, number)


def numbered(path, number):
    stem, ext = os.path.splitext(path)
    return f"{stem}.{number}{ext}"


def lock_out_dir(out_dir):
    """Hold out_dir/run.lock while this process lives: one run per out_dir. An advisory lock (flock)
    is released by the kernel when its holder dies, so a killed run never blocks its own resume.
    Returns the open file (the lock lasts as long as it stays open) or raises UserError naming the holder."""
    try:
        os.makedirs(out_dir, exist_ok=True)
        f = open(os.path.join(out_dir, "run.lock"), "a+")
    except OSError as e:
        raise UserError(f"out_dir {out_dir}: cannot be created or written ({e.strerror or e}); pick another "
                        f"--out_dir") from None
    if fcntl is None:  # Windows: no flock; the run goes on unguarded
        return f
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip() or "unknown"
        f.close()
        raise UserError(f"{out_dir} is in use by another train.py run (PID {holder}); wait for it to end, "
                        f"or pick another --out_dir") from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


@contextlib.contextmanager
def take_out_dir(out_dir, master, dev, world):
    """Rank 0 locks out_dir for the run; under DDP every rank learns whether it could, and all stop if not."""
    lock, problem = None, None
    if master:
        try:
            lock = lock_out_dir(out_dir)
        except UserError as e:
            problem = e
    if world > 1 and all_sum([problem is not None], dev, world)[0]:
        raise problem or UserError(f"rank 0 could not take {out_dir} (see its message)")
    if problem:
        raise problem
    try:
        yield
    finally:
        if lock:
            lock.close()  # releases the flock


def check_eval_split(C):
    """The evaluation split exists and is sound: checked at start, not after all the training."""
    if not os.path.isfile(os.path.join(C["data_dir"], C["eval_split"], "dataset.json")):
        have = sorted(d for d in os.listdir(C["data_dir"]) if os.path.isfile(os.path.join(C["data_dir"], d, "dataset.json")))
        best = (difflib.get_close_matches(C["eval_split"], have, n=1, cutoff=0) or ["test"])[0]
        raise UserError(f"eval_split={C['eval_split']!r}: {C['data_dir']} has no such split (it has "
                        f"{', '.join(have) or 'none'}); use --eval_split={best}")
    return dataset.load_split(C["data_dir"], C["eval_split"])[0]


def check_same_data(state, C, fingerprint, ckpt_path):
    """Resume only on the data the checkpoint was trained on: a moved copy is fine, other data is not."""
    saved_dir, saved = state["config"].get("data_dir"), state.get("data_fingerprint")
    if saved is None:  # checkpoints from before the fingerprint: the directory must be the same
        if saved_dir and os.path.realpath(saved_dir) != os.path.realpath(C["data_dir"]):
            raise UserError(f"{ckpt_path} was trained on {saved_dir}, not {C['data_dir']}; resume with "
                            f"--data_dir={saved_dir}, or start a new run in another --out_dir")
    elif saved != fingerprint:
        same = saved_dir and os.path.realpath(saved_dir) == os.path.realpath(C["data_dir"])
        raise UserError(f"{ckpt_path} was trained on {saved_dir} (fingerprint {saved}) and --data_dir "
                        f"{C['data_dir']} now holds {'changed' if same else 'other'} data (fingerprint {fingerprint}); "
                        f"resume on the data it was trained on, or start a new run in another --out_dir")
    elif saved_dir and os.path.realpath(saved_dir) != os.path.realpath(C["data_dir"]):
        print(f"note: {ckpt_path} was trained on {saved_dir}; {C['data_dir']} holds the same data")


def restore(state, model, opt, emb_opt, ema, loader, rank, dev):
    """Load a checkpoint's state into the run; returns (this rank's ACT carry, the step)."""
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    if emb_opt:
        emb_opt.load_state_dict(state["emb_optimizer"])
    if ema:
        ema.load_state_dict(state["ema"])
    loader.load_state_dict(state["loader"])
    carries = state["carry"] if isinstance(state["carry"], list) else [state["carry"]]  # older: one dict
    rngs = state["rng"] if isinstance(state["rng"], list) else [state["rng"]]
    carry, step = Carry(**carry_to(carries[rank], dev)), int(state["step"])
    if model.config.prefix_len:  # what initial_carry does besides the carry, outside the compiled step
        model.puzzle_emb.prepare(len(carry.steps))
    torch.set_rng_state(rngs[rank]["torch"])
    if dev.startswith("cuda") and rngs[rank].get("cuda") is not None:
        torch.cuda.set_rng_state(rngs[rank]["cuda"])
    return carry, step


class Interrupted(UserError):
    """Ctrl-C: training stopped at the end of a step, after writing a checkpoint."""


# ------------------------------------------------------------------------------------------------
# Training


def train(C):
    dev, rank, local_rank, world = start_process(C)
    # Both held until the run ends, however it ends: out_dir for this run alone, data_dir against --overwrite.
    with take_out_dir(C["out_dir"], rank == 0, dev, world), dataset.reading(C["data_dir"]):
        run = setup(C, dev, rank, local_rank, world)
        begin(run)
        train_loop(run)
        return finish(run)


def start_process(C):
    """This process's device, precision and place among the data-parallel ranks: (dev, rank, local_rank, world)."""
    dev = configurator.resolve_device(C["device"])
    rank, local_rank, world = init_distributed(C, dev)
    torch.manual_seed(C["seed"])  # the same initial model on every rank
    auto_dtype = C["dtype"] == "auto"
    kept = checkpoint_dtype(C) if auto_dtype and C["init_from"] == "resume" else None
    C["dtype"] = kept or configurator.resolve_dtype(C["dtype"], dev)
    if auto_dtype and not kept and world > 1 and dev == "cpu":  # timings may differ between ranks: all must agree
        C["dtype"] = "bfloat16" if all_sum([C["dtype"] == "bfloat16"], dev, world)[0] == world else "float32"
    if auto_dtype and rank == 0:
        why = "as its checkpoint trained" if kept else f"a bf16 matmul measured {configurator.cpu_bf16_speedup():.2f}x " \
            f"as fast as float32 here, the median of 5" if dev == "cpu" else f"on {dev}"
        print(f"dtype=auto: {C['dtype']} ({why})")
    if dev == "cuda":
        dev = f"cuda:{local_rank}"
    if C["init_from"] not in ("scratch", "resume"):
        raise UserError(f"init_from={C['init_from']!r}: use scratch or resume")
    if C["puzzle_id_ablation"] not in ("none", "blank", "random"):
        raise UserError(f"puzzle_id_ablation={C['puzzle_id_ablation']!r}: use none, blank or random")
    if C["clock_schedule"] and not C["max_minutes"]:
        raise UserError("clock_schedule=True fits the schedule to max_minutes, which is 0: set --max_minutes, "
                        "or --clock_schedule=False for a fixed max_steps schedule")
    return dev, rank, local_rank, world


def checkpoint_dtype(C):
    """The dtype a resumed run keeps when dtype=auto: the one its checkpoint trained in, so that a
    resumed run never switches because the machine measured busier this time; None without one."""
    try:
        return torch.load(os.path.join(C["out_dir"], "ckpt.pt"), map_location="cpu", weights_only=True,
                          mmap=True)["config"]["dtype"]
    except Exception:  # no checkpoint, or not one: load_checkpoint names the problem in one line later
        return None


CLOCK_WARMUP = 5  # steps clock_schedule leaves untimed: the first ones warm up kernels, caches and compilation


def steps_in_budget(step, elapsed, seconds_per_step, max_minutes, max_steps=0):
    """clock_schedule: the step at which max_minutes of training run out, `elapsed` seconds and `step`
    steps in, at seconds_per_step from here on; at most max_steps when that is set, and at least the
    next step."""
    left = max(0.0, 60 * max_minutes - elapsed)
    planned = step + int(left / seconds_per_step)
    return max(step + 1, min(planned, max_steps) if max_steps else planned)


def replan(run, now):
    """clock_schedule: the run's last step and lr horizon, set again at each log line from the wall time
    per step since CLOCK_WARMUP (evaluations included), the same on every rank. A resumed run keeps
    the schedule its checkpoint holds."""
    timed = run.step - CLOCK_WARMUP
    if run.resumed or timed < 1:
        return
    planned = steps_in_budget(run.step, now - run.t_start, (now - run.t_timed) / timed, run.C["max_minutes"],
                              run.C["max_steps"])
    (planned,) = all_min([planned], run.dev, run.world)
    run.total_steps = run.last_step = int(planned)


@dataclasses.dataclass
class Run:
    """A run in out_dir, which this process holds: what setup() builds, and the state that the loop,
    the logs, the evaluations and the checkpoints read and advance, passed to each explicitly."""
    C: dict
    dev: str
    rank: int
    world: int
    ckpt_path: str
    metrics_path: str
    loader: dataset.TrainLoader
    data_fingerprint: str
    eval_fingerprint: str
    cfg: TRMConfig
    model: TRM
    step_fn: object  # the model, compiled or not: what evaluation calls
    train_fn: object  # step_fn, wrapped in DDP under torchrun: what training calls
    opt: AdamATan2
    emb_opt: PuzzleEmbSignSGD  # None without a puzzle-embedding prefix
    ema: EMA  # None with ema=False
    total_steps: int  # the learning-rate schedule's horizon
    passes: int  # passes of eval_interval epochs, an evaluation after each
    last_step: int
    bad_step: torch.Tensor  # the first step whose loss was not finite, or NO_BAD_STEP; on the device
    step: int = 0
    carry: Carry = None
    sums: dict = dataclasses.field(default_factory=dict)  # metric sums since the last log line
    seen: int = 0  # examples since the last log line
    t_start: float = 0.0
    t_log: float = 0.0
    t_timed: float = 0.0  # clock_schedule: when step CLOCK_WARMUP ended
    resumed: bool = False
    # A checkpoint taken at step c is written once step c + 1's loss, computed from its weights, is
    # known to be finite: a checkpoint on disk is one that training could go on from.
    pending: dict = None
    loader_state: dict = None  # the loader's state as of the batch this step trains on
    stop: dict = dataclasses.field(default_factory=lambda: {"asked": False})  # Ctrl-C pressed once
    wandb: object = None  # the wandb module, on rank 0 with wandb_log

    @property
    def master(self):
        return self.rank == 0  # rank 0 alone logs, evaluates the task metrics and writes files


def setup(C, dev, rank, local_rank, world):
    """Data, model, optimisers and schedule of the run, checked before any training."""
    ckpt_path, metrics_path = os.path.join(C["out_dir"], "ckpt.pt"), os.path.join(C["out_dir"], "metrics.jsonl")
    if C["init_from"] == "scratch" and os.path.exists(ckpt_path):
        raise UserError(f"{ckpt_path} exists: continue it with --init_from=resume, or pick another --out_dir "
                        f"(or delete it) to start from scratch")
    loader, eval_meta, data_fingerprint, eval_fingerprint = open_data(C, rank, world)
    cfg = checked_model_config(C, loader.meta, eval_meta)
    model, step_fn, train_fn, opt, emb_opt, ema = build_model(C, cfg, dev, rank, local_rank, world)
    # The official schedule horizon; training itself stops after `epochs` epochs (or max_steps).
    total_steps = C["max_steps"] or dataset.total_train_steps(loader.meta, C["epochs"], C["global_batch_size"])
    passes = max(1, C["epochs"] // loader.epochs_per_iter)  # an evaluation after each
    last_step = C["max_steps"] or passes * loader.batches_per_pass  # exact for 1-example puzzles
    bad_step = torch.full((), NO_BAD_STEP, dtype=torch.float32 if dev == "mps" else torch.float64, device=dev)
    return Run(C=C, dev=dev, rank=rank, world=world, ckpt_path=ckpt_path, metrics_path=metrics_path, loader=loader,
               data_fingerprint=data_fingerprint, eval_fingerprint=eval_fingerprint, cfg=cfg, model=model,
               step_fn=step_fn, train_fn=train_fn, opt=opt, emb_opt=emb_opt, ema=ema, total_steps=total_steps,
               passes=passes, last_step=last_step, bad_step=bad_step)


def open_data(C, rank, world):
    """(this rank's training loader, the eval split's meta, both splits' fingerprints)."""
    try:
        loader = dataset.TrainLoader(C["data_dir"], C["global_batch_size"], rank=rank, world_size=world,
                                     seed=C["seed"], epochs_per_iter=max(1, min(C["eval_interval"], C["epochs"])))
        eval_meta = check_eval_split(C)
        data_fingerprint = dataset.fingerprint(C["data_dir"], ("train",))
        eval_fingerprint = dataset.fingerprint(C["data_dir"], (C["eval_split"],))
    except dataset.DatasetError as e:
        raise UserError(str(e)) from None
    per_epoch = loader.meta["total_groups"] * loader.meta["mean_puzzle_examples"]
    if C["global_batch_size"] > per_epoch:
        raise UserError(f"global_batch_size {C['global_batch_size']} is larger than the training set of "
                        f"{C['data_dir']} ({per_epoch:.0f} examples per epoch); lower the batch size")
    return loader, eval_meta, data_fingerprint, eval_fingerprint


def checked_model_config(C, meta, eval_meta):
    cfg = model_config(C, meta)
    differ = [f"{k} {eval_meta[k]} vs {getattr(cfg, k)}" for k in FROM_DATASET if eval_meta[k] != getattr(cfg, k)]
    if differ:  # checked once here: the forward does not validate batches
        raise UserError(f"{C['data_dir']}: the {C['eval_split']} split does not fit the train split "
                        f"({'; '.join(differ)}); rebuild the dataset")
    if C["puzzle_id_ablation"] == "random" and cfg.num_puzzle_identifiers < 2:
        raise UserError(f"puzzle_id_ablation=random: {C['data_dir']} has no puzzle identifiers besides the blank one "
                        f"(only ARC has); use blank or none")
    return cfg


def build_model(C, cfg, dev, rank, local_rank, world):
    """(model, step_fn, train_fn, opt, emb_opt, ema); see Run."""
    model = TRM(cfg).to(dev)
    if world > 1:
        torch.manual_seed(C["seed"] + rank)  # as the official code: each rank explores differently
    step_fn = torch.compile(model) if C["compile"] else model
    # DDP copies rank 0's parameters to every rank, then averages gradients in backward. Buffers
    # are equal by the shared seed; the puzzle-embedding table, a buffer, stays equal through
    # PuzzleEmbSignSGD's all-gather, so it is never re-broadcast (it can be GBs for ARC).
    train_fn = DDP(step_fn, device_ids=[local_rank] if dev.startswith("cuda") else None,
                   broadcast_buffers=False) if world > 1 else step_fn
    opt = AdamATan2(model.parameters(), lr=C["lr"], betas=(C["beta1"], C["beta2"]), weight_decay=C["weight_decay"])
    emb_opt = PuzzleEmbSignSGD(model.puzzle_emb, lr=C["puzzle_emb_lr"], weight_decay=C["puzzle_emb_weight_decay"]) \
        if cfg.prefix_len else None
    ema = EMA(model, C["ema_rate"]) if C["ema"] else None
    return model, step_fn, train_fn, opt, emb_opt, ema


def begin(run):
    """Resume, or start afresh keeping an old log; then config.json, the run's one-line summary, wandb."""
    C = run.C
    if C["init_from"] == "resume":
        resume(run)
    elif run.master and os.path.exists(run.metrics_path):
        print(f"{run.metrics_path}: kept as {keep_old_log(run.metrics_path)} (a new run starts here)")
    if run.master:
        write_text_atomic(os.path.join(C["out_dir"], "config.json"), json.dumps(C, indent=1))
        cap = f" (at most {C['max_steps']})" if C["max_steps"] else ""
        steps = f"as many steps as fit max_minutes={C['max_minutes']:g}{cap}" if C["clock_schedule"] and not run.resumed \
            else f"{run.last_step} steps"
        print(f"TRM: {run.model.num_params() / 1e6:.2f}M parameters, {run.dev} {C['dtype']}, {run.world} process(es), "
              f"{steps} of {C['global_batch_size']} puzzles; config: {json.dumps(C)}")
    if C["wandb_log"] and run.master:
        import wandb
        wandb.init(project=C["wandb_project"], name=C["wandb_run_name"], config=C)
        run.wandb = wandb


def resume(run):
    """Continue from ckpt.pt exactly: weights, optimisers, EMA, loader, and every rank's ACT carry,
    random state and unlogged metric sums."""
    C, ckpt_path = run.C, run.ckpt_path
    state = load_checkpoint(ckpt_path, C, run.world)
    check_same_data(state, C, run.data_fingerprint, ckpt_path)
    if state.get("eval_fingerprint", run.eval_fingerprint) != run.eval_fingerprint:
        print(f"note: the {C['eval_split']} split of {C['data_dir']} is not the one {ckpt_path} was evaluated on")
    try:
        run.carry, run.step = restore(state, run.model, run.opt, run.emb_opt, run.ema, run.loader, run.rank, run.dev)
    except (KeyError, TypeError, AttributeError, ValueError, RuntimeError, IndexError) as e:
        raise UserError(f"{ckpt_path} does not hold what train.py writes ({type(e).__name__}: "
                        f"{str(e).strip().splitlines()[0][:100] if str(e).strip() else ''}); it was left "
                        f"untouched: start over with --init_from=scratch --out_dir=<new dir>") from None
    if C["clock_schedule"] and "schedule" in state:  # the length planned on the clock before, kept
        run.total_steps, run.last_step = state["schedule"]["total_steps"], state["schedule"]["last_step"]
    run.resumed = True
    if run.master:
        truncate_jsonl(run.metrics_path, run.step)
        print(f"resumed from {ckpt_path} at step {run.step}")
    sums, run.seen = state["log_sums"], state["log_seen"]
    run.sums = sums[run.rank] if isinstance(sums, list) else sums  # older checkpoints: one dict


def train_loop(run):
    """Steps until last_step, the last pass, max_minutes or Ctrl-C; an evaluation after each pass."""
    C = run.C
    run.model.train()
    bar = tqdm(total=run.last_step, initial=run.step, desc="train", dynamic_ncols=True, disable=not run.master)
    run.t_start = run.t_log = time.time()
    run.loader_state = run.loader.state_dict()
    # Ctrl-C asks to stop at the end of the current step, with a checkpoint; a second one stops at once.
    previous_handler = signal.signal(signal.SIGINT, functools.partial(on_ctrl_c, run.stop))
    batches = Prefetcher(run.loader, run.dev)  # the next batch is read and copied while this step runs
    try:
        while run.step < run.last_step:
            batch, new_pass, next_state = batches.next()
            if new_pass and run.step > 0:  # a pass of eval_interval epochs is over
                if next_state["iteration"] >= run.passes:
                    break
                run_eval(run)
            run.loader_state = next_state
            train_step(run, batch)
            bar.update(1)
            if run.step == CLOCK_WARMUP:
                run.t_timed = time.time()
            at_log = run.step % C["log_interval"] == 0 or run.step == run.last_step
            if at_log:
                log_train(run, bar)
                if C["clock_schedule"]:
                    replan(run, time.time())
                    bar.total = run.last_step
            timed_out, interrupted = stop_requests(C, run.t_start, run.stop,
                                                   at_log or run.step % C["ckpt_interval"] == 0, run.dev, run.world)
            if interrupted:
                stop_if_bad(run)
                write_checkpoint(run, snapshot(run))
                raise Interrupted(f"interrupted at step {run.step}; {run.ckpt_path} holds it")
            if run.step % C["ckpt_interval"] == 0:
                stop_if_bad(run)
                run.pending = snapshot(run)
            if timed_out:
                if run.master:
                    tqdm.write(f"max_minutes={C['max_minutes']} reached at step {run.step}")
                break
    finally:
        batches.close()
        bar.close()
        signal.signal(signal.SIGINT, previous_handler)


def on_ctrl_c(stop, signum, frame):
    if stop["asked"]:
        raise KeyboardInterrupt
    stop["asked"] = True
    tqdm.write("Ctrl-C: stopping after this step with a checkpoint (press again to stop at once)")


def train_step(run, batch):
    """One optimiser step: the ACT carry advances one supervision step on this batch."""
    C = run.C
    if run.carry is None:
        run.carry = run.model.initial_carry(batch)
    run.step += 1
    for optimizer, base in ((run.opt, C["lr"]), (run.emb_opt, C["puzzle_emb_lr"])):
        for group in optimizer.param_groups if optimizer else ():
            group["lr"] = lr_at(run.step, base, C, run.total_steps)
    run.carry, outputs = run.train_fn(run.carry, batch)
    loss, metrics = act_loss(run.carry, outputs, run.cfg.loss_type)
    # The loss sums over this rank's puzzles; DDP averages over ranks, hence world / global batch.
    ((run.world / C["global_batch_size"]) * loss).backward()
    run.bad_step = torch.where(torch.isfinite(loss.detach()) | (run.bad_step < NO_BAD_STEP), run.bad_step, run.step)
    if run.pending is not None:  # this step's loss came from the pending checkpoint's weights
        stop_if_bad(run)
        write_checkpoint(run, run.pending)
        run.pending = None
    run.opt.step()
    run.opt.zero_grad(set_to_none=True)
    if run.emb_opt:
        run.emb_opt.step()
    if run.ema:
        run.ema.update(run.model)
    add_into(run.sums, metrics)
    run.seen += len(batch["inputs"])


def log_train(run, bar):
    """The training metrics since the last log line, summed over ranks: metrics.jsonl, the bar, wandb."""
    C = run.C
    stop_if_bad(run)
    (run.seen,) = all_sum([run.seen], run.dev, run.world)
    rate = run.seen / (time.time() - run.t_log)
    record = dict(iter=run.step, split="train", lr=lr_at(run.step, C["lr"], C, run.total_steps), examples_per_s=rate,
                  **summarise(all_sum_dict(run.sums, run.dev, run.world), run.seen))
    if run.master:
        append_jsonl(run.metrics_path, record)
        bar.set_postfix(loss=f"{record['lm_loss']:.3f}", acc=f"{record.get('accuracy', 0):.3f}",
                        exact=f"{record.get('exact_accuracy', 0):.3f}", ex_s=f"{rate:.0f}")
        if run.wandb:
            run.wandb.log({f"train/{k}": v for k, v in record.items()}, step=run.step)
    run.t_log, run.sums, run.seen = time.time(), {}, 0


def last_good(run):
    return (f"{run.ckpt_path} holds the last good state" if os.path.exists(run.ckpt_path)
            else f"no checkpoint was written yet (the first comes at step {run.C['ckpt_interval']})")


def stop_if_bad(run):
    """The first step whose loss was not finite, on any rank: read here, at log and checkpoint time
    only, so that the steps in between never wait for the device."""
    (first,) = all_min([run.bad_step], run.dev, run.world)
    if first < NO_BAD_STEP:
        raise UserError(f"loss is not finite at step {first:.0f}; stopped. {last_good(run)} "
                        f"(try a lower --lr, or --dtype=float32)")


def snapshot(run):
    """Everything a resume needs, as of now, copied to the CPU (rank 0; None elsewhere): every rank's
    ACT carry, random state and unlogged metric sums, so that a resumed run continues exactly."""
    carries = gather_to_rank0(carry_to(vars(run.carry), "cpu"), run.world)
    rngs = gather_to_rank0(dict(torch=torch.get_rng_state(),
                                cuda=torch.cuda.get_rng_state() if run.dev.startswith("cuda") else None), run.world)
    log_sums = gather_to_rank0(dict(run.sums), run.world)  # each rank's part of the next log line
    if run.master:
        return cpu_copy(dict(
            model=run.model.state_dict(), optimizer=run.opt.state_dict(),
            emb_optimizer=run.emb_opt and run.emb_opt.state_dict(), ema=run.ema and run.ema.state_dict(),
            loader=run.loader_state, carry=carries, rng=rngs, step=run.step, log_sums=log_sums, log_seen=run.seen,
            config=run.C, model_config=dataclasses.asdict(run.cfg), data_fingerprint=run.data_fingerprint,
            eval_fingerprint=run.eval_fingerprint, schedule=dict(total_steps=run.total_steps, last_step=run.last_step)))


def write_checkpoint(run, state):
    if run.master and state is not None:
        save_checkpoint(run.ckpt_path, state)


def run_eval(run, final=False):
    """Evaluate the EMA weights (and, with puzzle_id_ablation, with the identifiers replaced); rank 0 logs it."""
    C, model = run.C, run.model
    with run.ema.swapped_in(model) if run.ema else contextlib.nullcontext():
        result = evaluate(model, C, run.dev, run.step_fn, max_batches=0 if final else C["eval_max_batches"],
                          out_dir=C["out_dir"], world=run.world)
        if C["puzzle_id_ablation"] != "none":
            ablated = evaluate(model, C, run.dev, run.step_fn, max_batches=0 if final else C["eval_max_batches"],
                               world=run.world, ids=C["puzzle_id_ablation"])
            result.update({f"ids_{C['puzzle_id_ablation']}/{k}": v for k, v in ablated.items()})
    if not run.master:
        return result
    if result.get("labelled") == 0.0:  # e.g. ARC evaluation challenges without solutions: nothing to score
        result = {k: v for k, v in result.items() if k in ("steps", "count", "labelled", "tasks_total")}
    log_eval(run, result)
    return result


def log_eval(run, result):
    """An evaluation's metrics: metrics.jsonl, curves.png, one printed line, wandb."""
    C, step = run.C, run.step
    record = dict(iter=step, split=C["eval_split"], **result)
    append_jsonl(run.metrics_path, record)
    try:
        plot.plot_curves(run.metrics_path, os.path.join(C["out_dir"], "curves.png"))
    except OSError as e:  # a picture is not worth stopping the run for
        tqdm.write(f"curves.png not written: {e.strerror or e}")
    extra = "".join(f", {k} {v:.2%}" for k, v in result.items() if k.endswith("_rate") or "pass@" in k
                    or (k.startswith("ids_") and k.endswith("exact_accuracy")))
    if result.get("labelled") == 0.0:
        tqdm.write(f"eval @ {step}: no labels: predictions and submission.json only "
                   f"({result.get('tasks_total', 0):.0f} tasks, in {C['out_dir']})")
    else:
        tqdm.write(f"eval @ {step}: exact {result.get('exact_accuracy', 0):.2%}, token "
                   f"{result.get('accuracy', 0):.2%}, steps {result.get('steps', 0):.1f}, q_halt acc "
                   f"{result.get('q_halt_accuracy', 0):.2%}{extra}")
    if run.wandb:
        run.wandb.log({f"eval/{k}": v for k, v in result.items()}, step=step)


def finish(run):
    """The last checkpoint and the final evaluation, on the whole eval split; its metrics are returned."""
    stop_if_bad(run)
    write_checkpoint(run, snapshot(run))
    result = run_eval(run, final=True)
    if run.world > 1:
        dist.barrier()  # rank 0's last receives (the evaluation gather) done before any rank tears down gloo
        dist.destroy_process_group()
    return result


def main(argv):
    where = f" [rank {os.environ['RANK']}]" if int(os.environ.get("WORLD_SIZE", 1)) > 1 else ""
    resume = " ".join(["python train.py", *[shlex.quote(a) for a in argv if not a.startswith("--init_from=")],
                       "--init_from=resume"])
    try:
        C = configurator.configure(argv, DEFAULTS, __doc__)
        train(C)
    except Interrupted as e:
        sys.exit(f"train.py{where}: {e}; continue with: {resume}")
    except (UserError, dataset.DatasetError) as e:  # e.g. the dataset vanished mid-run
        sys.exit(f"train.py{where}: {e}")
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside the training loop
        ckpt = os.path.join(C["out_dir"], "ckpt.pt") if "C" in locals() else None
        kept = (f"{ckpt} holds the last checkpoint; continue with: {resume}" if ckpt and os.path.exists(ckpt)
                else "no checkpoint was written")
        sys.exit(f"train.py{where}: interrupted; {kept}")


if __name__ == "__main__":
    main(sys.argv[1:])
