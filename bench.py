"""
Time training and inference steps of the paper's model shapes and report examples/s, memory and MFU.

    python bench.py                                   # all four shapes, this machine's default dtype
    python bench.py --models=sudoku_mlp --batch=16 --dtype=bfloat16 --compile=True --steps=10

MFU = model FLOPs / (time * peak), where the FLOPs count every matmul of every application of the
network (training: forward in the T-1 no-grad recursions, forward and backward, 3x, in the last one;
inference: forward in all T) and the peak is measured here with a large matmul in the same dtype.
"""
import argparse
import os
import resource
import statistics
import sys
import time

import torch

import train
from model import TRM, AdamATan2, act_loss, swiglu_inner

# The paper's shapes (spec section 7): vocab, seq_len, config file, per-GPU batch of the paper's run
# (768 over 1 GPU for Sudoku, over 4 for Maze and ARC). The puzzle-embedding table is kept small:
# its size does not change the step's cost, only the batch's rows are read.
MODELS = {
    "sudoku_mlp": (11, 81, "config/sudoku_mlp.py", 768),
    "sudoku_att": (11, 81, "config/sudoku_att.py", 768),
    "maze": (6, 900, "config/maze.py", 192),
    "arc1": (12, 900, "config/arc1.py", 192),
}
ROOT = os.path.dirname(os.path.abspath(__file__))
CPU_BATCH = {"sudoku_mlp": 16, "sudoku_att": 16, "maze": 2, "arc1": 2}  # a step of a few seconds on 2 cores


def step_flops(cfg, batch, training=True):
    """Matmul FLOPs of one supervision step (2 per multiply-add)."""
    D, L = cfg.hidden_size, cfg.seq_len + cfg.prefix_len
    inner, inner_t = swiglu_inner(D, cfg.expansion), swiglu_inner(L, cfg.expansion)
    mlp = 2 * L * (D * 2 * inner + inner * D)
    if cfg.mlp_t:
        mix = 2 * D * (L * 2 * inner_t + inner_t * L)
    else:
        mix = 2 * L * (D * 3 * D + D * D) + 2 * 2 * L * L * D  # projections + scores and values
    f = cfg.L_layers * (mix + mlp)
    per_recursion = (cfg.L_cycles + 1) * f
    heads = 2 * L * D * cfg.vocab_size
    if not training:
        return batch * (cfg.H_cycles * per_recursion + heads)
    forward_only = (cfg.H_cycles - 1) * per_recursion
    with_grad = 3 * (per_recursion + heads)  # backward costs twice the forward
    return batch * (forward_only + with_grad)


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, warmup, steps, device):
    """Median seconds of `steps` calls after `warmup` calls."""
    times = []
    for i in range(warmup + steps):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_model(name, batch_size, device, dtype, compile_, steps):
    """(train seconds/step, inference seconds/step, cfg, parameters) of one shape."""
    vocab, seq_len, config_file, _ = MODELS[name]
    C = {**train.configure([os.path.join(ROOT, config_file)]), "dtype": dtype}  # from any working directory
    cfg = train.model_config(C, dict(vocab_size=vocab, seq_len=seq_len, num_puzzle_identifiers=1000))
    torch.manual_seed(0)
    model = TRM(cfg).to(device).train()
    forward = torch.compile(model) if compile_ else model
    opt = AdamATan2(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    batch = {"inputs": torch.randint(1, vocab, (batch_size, seq_len), generator=g, dtype=torch.int32),
             "labels": torch.randint(1, vocab, (batch_size, seq_len), generator=g, dtype=torch.int32),
             "puzzle_identifiers": torch.randint(0, 1000, (batch_size,), generator=g, dtype=torch.int32)}
    batch = {k: v.to(device) for k, v in batch.items()}
    state = {"carry": model.initial_carry(batch)}

    def train_step():
        state["carry"], outputs = forward(state["carry"], batch)
        loss, _ = act_loss(state["carry"], outputs, cfg.loss_type)
        (loss / batch_size).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def inference_step():
        with torch.inference_mode():
            forward(state["carry"], batch)

    train_s = timed(train_step, 3, steps, device)
    model.eval()
    infer_s = timed(inference_step, 2, steps, device)
    return train_s, infer_s, cfg, model.num_params()


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage dump
        sys.exit(f"bench.py: {message}; see python bench.py --help")


def main():
    p = Parser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated, from " + ", ".join(MODELS))
    p.add_argument("--batch", type=int, default=0, help="per device; 0 = the paper's per-GPU batch on CUDA, "
                                                        "a few-second step on CPU (16 Sudoku, 2 Maze/ARC)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--compile", default="False", choices=("True", "False"))
    p.add_argument("--steps", type=int, default=10, help="timed steps, after 3 warm-up steps")
    args = p.parse_args()
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown or not names:
        p.error(f"--models={args.models}: " + (f"unknown {', '.join(unknown)}; " if unknown else "") +
                f"choose from {', '.join(MODELS)}")
    if args.batch < 0:
        p.error(f"--batch={args.batch}: must be at least 1 (or 0 for the default per shape)")
    if args.steps < 1:
        p.error(f"--steps={args.steps}: must be at least 1 (the median of that many timed steps is reported)")
    try:
        device = train.resolve_device(args.device)
        dtype = train.resolve_dtype(args.dtype, device)
    except train.UserError as e:
        p.error(str(e))
    peak = train.matmul_flops(getattr(torch, dtype), device)
    kind = train.cpu_kind() if device == "cpu" else torch.cuda.get_device_name()
    print(f"{device} ({kind}, {torch.get_num_threads()} threads), {dtype}, compile={args.compile}, "
          f"measured {dtype} matmul peak {peak / 1e9:.1f} GFLOP/s")
    for name in names:
        batch = args.batch or (MODELS[name][3] if device == "cuda" else CPU_BATCH[name])
        if device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        try:
            train_s, infer_s, cfg, params = bench_model(name, batch, device, dtype, args.compile == "True", args.steps)
        except torch.OutOfMemoryError as e:
            print(f"{name} (batch {batch}): does not fit in memory ({str(e).splitlines()[0][:100]}); "
                  f"try a smaller --batch. Going on.")
            continue
        memory = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else peak_rss_mb()
        flops, inf_flops = step_flops(cfg, batch), step_flops(cfg, batch, training=False)
        print(f"{name}: {params / 1e6:.2f}M params, batch {batch}, peak memory {memory:.0f} MB"
              f"{' (process RSS so far)' if device == 'cpu' else ''}")
        print(f"  train      {train_s * 1e3:9.1f} ms/step  {batch / train_s:8.1f} examples/s  "
              f"{flops / 1e9:8.1f} GFLOP/step  MFU {flops / train_s / peak:.1%}")
        print(f"  inference  {infer_s * 1e3:9.1f} ms/step  {batch / infer_s:8.1f} examples/s  "
              f"{inf_flops / 1e9:8.1f} GFLOP/step  MFU {inf_flops / infer_s / peak:.1%}")
        if device == "cpu" and name == "sudoku_mlp" and batch == 16:
            print(official_comparison(kind, dtype, train_s, flops / train_s / peak))


# The official code's sudoku_mlp training step at batch 16 on our 2-core CPUs (measured by the team):
# with AMX, bf16 2.70 s (about 30% of the bf16 peak); with AVX-512 but no AMX and slow bf16, float32
# 3.68 s (about 60% of the float32 peak; its bf16 step there is slower, 5.2 s).
OFFICIAL_SECONDS = {("AMX", "bfloat16"): 2.70, ("AVX-512", "float32"): 3.68}
OFFICIAL_MFU = {"bfloat16": 0.30, "float32": 0.60}


def official_comparison(kind, dtype, step, mfu):
    if (kind, dtype) in OFFICIAL_SECONDS:
        seconds = OFFICIAL_SECONDS[(kind, dtype)]
        return f"  vs the official code on this CPU kind: {seconds:.2f} s/step -> speed-up {seconds / step:.2f}x"
    # Another CPU kind: seconds do not compare, utilisation of the same dtype's peak does.
    official = OFFICIAL_MFU.get(dtype, OFFICIAL_MFU["float32"])
    return (f"  official step times exist for AMX (bf16) and AVX-512 slow-bf16 (float32) CPUs only; on {kind} compare "
            f"utilisation: {mfu:.1%} vs the official ~{official:.0%} of the {dtype} peak = {mfu / official:.2f}x")


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main()
