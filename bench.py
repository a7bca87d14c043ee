"""
Time training steps of the paper's model shapes and report examples/s and MFU.

    python bench.py                                  # sudoku_mlp at batch 16 on this machine's default dtype
    python bench.py --model=sudoku_att --batch=64 --dtype=bfloat16 --compile=True --steps=10

MFU = model FLOPs / (time * peak), where the FLOPs count every matmul of every application of the
network (forward in the T-1 no-grad recursions; forward and backward, 3x, in the last one) and
the peak is measured here with a large matmul in the same dtype.
"""
import argparse
import statistics
import time

import torch

import train
from model import TRM, AdamATan2, act_loss, swiglu_inner

# The paper's shapes (spec section 7): task, vocab, seq_len, puzzle identifiers, config file.
MODELS = {
    "sudoku_mlp": (11, 81, 1, "config/sudoku_mlp.py"),
    "sudoku_att": (11, 81, 1, "config/sudoku_att.py"),
}


def step_flops(cfg, batch):
    """Matmul FLOPs of one training supervision step (2 per multiply-add)."""
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
    forward_only = (cfg.H_cycles - 1) * per_recursion
    with_grad = 3 * (per_recursion + heads)  # backward costs twice the forward
    return batch * (forward_only + with_grad)


def matmul_peak(dtype, device, n=2048, reps=5):
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    a @ b
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t)


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def main():
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--model", default="sudoku_mlp", choices=sorted(MODELS))
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--compile", default="False", choices=("True", "False"))
    p.add_argument("--steps", type=int, default=10, help="timed steps, after 3 warm-up steps")
    args = p.parse_args()
    device = train.resolve_device(args.device)
    dtype = train.resolve_dtype(args.dtype, device)
    vocab, seq_len, n_ids, config_file = MODELS[args.model]
    C = {**train.configure([config_file]), "dtype": dtype}
    cfg = train.model_config(C, dict(vocab_size=vocab, seq_len=seq_len, num_puzzle_identifiers=n_ids))
    torch.manual_seed(0)
    model = TRM(cfg).to(device).train()
    forward = torch.compile(model) if args.compile == "True" else model
    opt = AdamATan2(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    batch = {"inputs": torch.randint(1, vocab, (args.batch, seq_len), generator=g, dtype=torch.int32),
             "labels": torch.randint(1, vocab, (args.batch, seq_len), generator=g, dtype=torch.int32),
             "puzzle_identifiers": torch.zeros(args.batch, dtype=torch.int32)}
    batch = {k: v.to(device) for k, v in batch.items()}
    carry = model.initial_carry(batch)
    times = []
    for i in range(3 + args.steps):
        sync(device)
        t = time.perf_counter()
        carry, outputs = forward(carry, batch)
        loss, _ = act_loss(carry, outputs, cfg.loss_type)
        (loss / args.batch).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
        if i >= 3:
            times.append(time.perf_counter() - t)
    step = statistics.median(times)
    flops = step_flops(cfg, args.batch)
    peak = matmul_peak(getattr(torch, dtype), device)
    kind = train.cpu_kind() if device == "cpu" else torch.cuda.get_device_name()
    print(f"{args.model}: {model.num_params() / 1e6:.2f}M params, batch {args.batch}, {device} ({kind}, "
          f"{torch.get_num_threads()} threads), {dtype}, compile={args.compile}")
    print(f"  {step:.3f} s/step  {args.batch / step:.1f} examples/s  {flops / 1e9:.1f} GFLOP/step  "
          f"{flops / step / 1e9:.1f} GFLOP/s  peak {peak / 1e9:.1f} GFLOP/s  MFU {flops / step / peak:.1%}")
    if device == "cpu":
        print(f"  peak memory (RSS): {peak_rss_mb():.0f} MB")
        if args.model == "sudoku_mlp" and args.batch == 16:
            print(official_comparison(kind, dtype, step, flops / step / peak))
    else:
        print(f"  peak memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MB")


# The official code's sudoku_mlp training step at batch 16 on our 2-core CPUs (measured by the team):
# with AMX, bf16 2.70 s (about 30% of the bf16 peak); with AVX-512 but no AMX, float32 3.68 s (about
# 60% of the float32 peak; its bf16 step there is slower, 5.2 s).
OFFICIAL_SECONDS = {("AMX", "bfloat16"): 2.70, ("AVX-512", "float32"): 3.68}
OFFICIAL_MFU = {"bfloat16": 0.30, "float32": 0.60}


def official_comparison(kind, dtype, step, mfu):
    if (kind, dtype) in OFFICIAL_SECONDS:
        seconds = OFFICIAL_SECONDS[(kind, dtype)]
        return f"  vs the official code on this CPU kind: {seconds:.2f} s/step -> speed-up {seconds / step:.2f}x"
    # Another CPU kind: seconds do not compare, utilisation of the same dtype's peak does.
    official = OFFICIAL_MFU.get(dtype, OFFICIAL_MFU["float32"])
    return (f"  official step times exist for AMX (bf16) and AVX-512 (float32) CPUs only; on {kind} compare "
            f"utilisation: {mfu:.1%} vs the official ~{official:.0%} of the {dtype} peak = {mfu / official:.2f}x")


def peak_rss_mb():
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main()
