"""
Time training and inference steps of the paper's model shapes and report examples/s, memory and MFU.

    python bench.py                                   # all four shapes, this machine's default dtype
    python bench.py --models=sudoku_mlp --batch=16 --dtype=bfloat16 --compile=True --steps=10
    python bench.py --models=sudoku_mlp --batch=16 --official=../TinyRecursiveModels   # side by side, same run

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

import configurator
from model import TRM, AdamATan2, PuzzleEmbSignSGD, act_loss, swiglu_inner

# The paper's shapes (its experiments, the official configs): vocab, seq_len, config file, per-GPU batch of the paper's run
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
    C = {**configurator.configure([os.path.join(ROOT, config_file)]), "dtype": dtype}  # from any working directory
    cfg = configurator.model_config(C, dict(vocab_size=vocab, seq_len=seq_len, num_puzzle_identifiers=1000))
    torch.manual_seed(0)
    model = TRM(cfg).to(device).train()
    forward = torch.compile(model) if compile_ else model
    opt = AdamATan2(model.parameters(), lr=1e-4)
    emb_opt = PuzzleEmbSignSGD(model.puzzle_emb, lr=1e-4) if cfg.prefix_len else None
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
        if emb_opt:
            emb_opt.step()

    def inference_step():
        with torch.inference_mode():
            forward(state["carry"], batch)

    train_s = timed(train_step, 3, steps, device)
    model.eval()
    infer_s = timed(inference_step, 2, steps, device)
    return train_s, infer_s, cfg, model.num_params(), batch


def official_train_seconds(official_dir, cfg, batch, device, compile_, steps):
    """(seconds per training step, note) of the official model, loss head and optimisers
    (SamsungSAILMontreal/TinyRecursiveModels checked out in official_dir) on the same shape, dtype
    and batch, timed in this run as our step is. The official optimiser adam-atan2 is a CUDA extension:
    where it does not import, torch's Adam stands in for it (same work per parameter, near enough)."""
    sys.path.insert(0, os.path.abspath(official_dir))
    try:
        from models.losses import ACTLossHead
        from models.recursive_reasoning.trm import TinyRecursiveReasoningModel_ACTV1
        from models.sparse_embedding import CastedSparseEmbeddingSignSGD_Distributed
    except ImportError as e:
        sys.exit(f"bench.py: --official={official_dir}: cannot import the official model ({e}); it needs a "
                 f"checkout of SamsungSAILMontreal/TinyRecursiveModels and `pip install pydantic einops`")
    finally:
        sys.path.pop(0)
    try:
        from adam_atan2 import AdamATan2 as OfficialAdam
        note = "official optimiser adam-atan2"
    except ImportError:
        OfficialAdam, note = torch.optim.Adam, "torch.optim.Adam standing in for adam-atan2 (a CUDA extension)"
    fields = {k: getattr(cfg, k) for k in ("seq_len", "puzzle_emb_ndim", "num_puzzle_identifiers", "vocab_size",
                                           "H_cycles", "L_cycles", "L_layers", "hidden_size", "expansion",
                                           "num_heads", "pos_encodings", "rms_norm_eps", "rope_theta",
                                           "halt_max_steps", "halt_exploration_prob", "forward_dtype", "mlp_t",
                                           "puzzle_emb_len", "no_ACT_continue")}
    torch.manual_seed(0)
    with torch.device(device):
        head = ACTLossHead(TinyRecursiveReasoningModel_ACTV1(dict(fields, batch_size=len(batch["inputs"]),
                                                                  H_layers=0)), "stablemax_cross_entropy")
        head.train()
        carry = head.initial_carry(batch)
    forward = torch.compile(head) if compile_ else head
    opt = OfficialAdam(head.parameters(), lr=1e-4)
    emb_opt = CastedSparseEmbeddingSignSGD_Distributed(head.model.puzzle_emb.buffers(), world_size=1, lr=1e-4) \
        if cfg.prefix_len else None
    state = {"carry": carry}

    def train_step():
        state["carry"], loss, _, _, _ = forward(carry=state["carry"], batch=batch, return_keys=[])
        ((1 / len(batch["inputs"])) * loss).backward()
        for o in (opt, emb_opt) if emb_opt else (opt,):
            o.step()
            o.zero_grad()
    return timed(train_step, 3, steps, device), note


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
    p.add_argument("--compile", default="auto", choices=("auto", "True", "False"),
                   help="torch.compile both models; auto: on CUDA (the paper's setting), not on a CPU")
    p.add_argument("--steps", type=int, default=10, help="timed steps, after 3 warm-up steps")
    p.add_argument("--official", metavar="DIR", help="a checkout of SamsungSAILMontreal/TinyRecursiveModels: "
                   "also time its training step on the same shape, dtype and batch, in this run")
    args = p.parse_args()
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown or not names:
        p.error(f"--models={args.models}: " + (f"unknown {', '.join(unknown)}; " if unknown else "") +
                f"choose from {', '.join(MODELS)}")
    if args.batch < 0:
        p.error(f"--batch={args.batch}: must be at least 1 (or 0 for the default per shape)")
    if args.official and not os.path.isdir(os.path.join(args.official, "models", "recursive_reasoning")):
        p.error(f"--official={args.official}: not a checkout of SamsungSAILMontreal/TinyRecursiveModels "
                f"(no models/recursive_reasoning/ there)")
    if args.steps < 1:
        p.error(f"--steps={args.steps}: must be at least 1 (the median of that many timed steps is reported)")
    try:
        device = configurator.resolve_device(args.device)
        dtype = configurator.resolve_dtype(args.dtype, device)
    except configurator.UserError as e:
        p.error(str(e))
    compile_ = args.compile == "True" or (args.compile == "auto" and device == "cuda")
    peak = configurator.matmul_flops(getattr(torch, dtype), device)
    kind = configurator.cpu_kind() if device == "cpu" else torch.cuda.get_device_name()
    print(f"{device} ({kind}, {torch.get_num_threads()} threads), {dtype}, compile={compile_}, "
          f"measured {dtype} matmul peak {peak / 1e9:.1f} GFLOP/s")
    for name in names:
        batch = args.batch or (MODELS[name][3] if device == "cuda" else CPU_BATCH[name])
        if device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        try:
            train_s, infer_s, cfg, params, data = bench_model(name, batch, device, dtype, compile_, args.steps)
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
        if args.official:
            official_s, note = official_train_seconds(args.official, cfg, data, device, compile_, args.steps)
            print(f"  official   {official_s * 1e3:9.1f} ms/step  ({note}): ours is {official_s / train_s:.2f}x "
                  f"as fast, both timed in this run")


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main()
