"""
The Tiny Recursive Model (TRM, Jolicoeur-Martineau 2025, arXiv 2510.04871) in one file.

Read it top to bottom beside the paper: the config, the tiny network f, the model and its
supervision step (the deep recursion of the paper's Figure 3), deep supervision with ACT halting,
the losses, and the optimisers (AdamATan2, sign-SGD for the puzzle embedding, EMA).

Naming: the paper's answer y and latent z are the official code's z_H and z_L; T = H_cycles
recursions, each n = L_cycles latent updates; N_sup = halt_max_steps supervision steps.
Numerics follow the official code op for op (see tests/test_fidelity.py), including its float32
islands when forward_dtype is float64: rms_norm, RoPE, the q-head and the softmax loss.

The paper's ablations are switches of this one model, each a small branch where it acts:
two_networks (HRM's separate f_L and f_H), grad_mode (HRM's 1-step gradient, or full backprop) and
latent_mode (the official trm_singlez and trm_hier6 variants). HRM itself is config/hrm_sudoku.py.
"""
import math
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, fields

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

IGNORE_LABEL_ID = -100  # labels equal to this are not supervised


@dataclass
class TRMConfig:
    vocab_size: int = 11
    seq_len: int = 81
    num_puzzle_identifiers: int = 1
    hidden_size: int = 512
    num_heads: int = 8
    expansion: float = 4.0
    L_layers: int = 2             # blocks in the network f
    H_cycles: int = 3             # T: recursions per supervision step (T-1 without gradients)
    L_cycles: int = 6             # n: latent updates per recursion
    halt_max_steps: int = 16      # N_sup: supervision steps
    halt_exploration_prob: float = 0.1
    puzzle_emb_ndim: int = 512    # 0 = no puzzle embedding
    puzzle_emb_len: int = 16      # prefix positions; 0 = ceil(puzzle_emb_ndim / hidden_size)
    mlp_t: bool = False           # MLP over the sequence instead of self-attention
    pos_encodings: str = "rope"   # "rope" | "learned" | "none"
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    no_ACT_continue: bool = True  # True: halt on q_halt > 0 alone (TRM); False: HRM's Q-continue
    loss_type: str = "stablemax"  # "stablemax" | "softmax"
    forward_dtype: str = "bfloat16"
    # The paper's ablations (its Sudoku-Extreme ablation table) as switches; the defaults are TRM.
    two_networks: bool = False    # True: HRM's separate f_L (latent update) and f_H (answer update)
    grad_mode: str = "last_round" # "last_round" (TRM) | "one_step" (HRM's 1-step gradient) | "full"
    latent_mode: str = "yz"       # "yz" (TRM) | "single" (official trm_singlez) | "multi" (trm_hier6)

    def __post_init__(self):
        def bad(name, allowed):
            raise ValueError(f"TRMConfig.{name}={getattr(self, name)!r} is invalid; allowed: {allowed}")
        choices = dict(pos_encodings=("rope", "learned", "none"), loss_type=("stablemax", "softmax"),
                       forward_dtype=("float32", "bfloat16", "float16", "float64"),
                       grad_mode=("last_round", "one_step", "full"), latent_mode=("yz", "single", "multi"))
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                bad(name, " | ".join(allowed))
        for name in ("mlp_t", "no_ACT_continue", "two_networks"):
            if not isinstance(getattr(self, name), bool):
                bad(name, "True | False")
        # L_cycles >= 1 is also what grad_mode="one_step" needs: a last latent update to back-propagate.
        for name in ("vocab_size", "seq_len", "num_puzzle_identifiers", "hidden_size", "num_heads",
                     "L_layers", "H_cycles", "L_cycles", "halt_max_steps"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                bad(name, "an integer >= 1")
        if not self.mlp_t and self.hidden_size % (2 * self.num_heads):
            bad("hidden_size", f"a multiple of 2*num_heads = {2 * self.num_heads} (even head size)")
        if not 0.0 <= self.halt_exploration_prob <= 1.0:
            bad("halt_exploration_prob", "a probability in [0, 1]")
        if self.puzzle_emb_ndim < 0 or self.puzzle_emb_len < 0:
            bad("puzzle_emb_ndim", "puzzle_emb_ndim >= 0 and puzzle_emb_len >= 0")
        if self.puzzle_emb_ndim > self.prefix_len * self.hidden_size:
            bad("puzzle_emb_ndim", f"at most puzzle_emb_len * hidden_size = {self.prefix_len * self.hidden_size}")
        if self.mlp_t and self.pos_encodings == "rope":
            warnings.warn("TRMConfig: mlp_t=True has no attention, so pos_encodings='rope' has no effect "
                          "(as in the official code); use pos_encodings='none'", stacklevel=3)

    @property
    def prefix_len(self):  # positions taken by the puzzle embedding before the grid tokens
        if self.puzzle_emb_ndim == 0:
            return 0
        return self.puzzle_emb_len or -(-self.puzzle_emb_ndim // self.hidden_size)


# ----------------------------------------------------------------------------------------------
# The tiny network f


def trunc_normal_(tensor, std):
    """Normal truncated at +-2 sigma, rescaled so the truncated law has standard deviation `std`
    (the official/JAX LeCun init: plain truncation would shrink std by a factor 0.88)."""
    if std == 0:
        return tensor.zero_()
    lo, hi = -2.0, 2.0
    a, b = math.erf(lo / math.sqrt(2)), math.erf(hi / math.sqrt(2))
    mass = (b - a) / 2                                     # P(lo < N(0,1) < hi)
    pdf = math.exp(-0.5 * hi**2) / math.sqrt(2 * math.pi)  # density at hi (and at lo)
    std = std / math.sqrt(1 - 2 * hi * pdf / mass)         # variance of the truncated law
    with torch.no_grad():
        tensor.uniform_(a, b).erfinv_().mul_(math.sqrt(2) * std).clamp_(lo * std, hi * std)
    return tensor


class Linear(nn.Module):
    """Bias-free by default; float32 master weight cast to the activations' dtype at use."""

    def __init__(self, fan_in, fan_out, bias=False):
        super().__init__()
        self.weight = nn.Parameter(trunc_normal_(torch.empty(fan_out, fan_in), std=fan_in**-0.5))
        self.bias = nn.Parameter(torch.zeros(fan_out)) if bias else None

    def forward(self, x):
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.weight.to(x.dtype), bias)


def rms_norm(h, eps, dim=-1):
    return RMSNorm.apply(h, eps, dim)


class RMSNorm(torch.autograd.Function):
    """h / rms(h) along `dim`. The forward is the official op order in float32, bit for bit (another
    order drifts ~5x per supervision step). The backward is written out, g' = (g - y * mean(g * y)) / rms,
    where autograd would take about twice the passes over the activations and keep h, h^2 and 1/rms."""

    @staticmethod
    def forward(ctx, h, eps, dim):
        h32 = h.to(torch.float32)
        rstd = torch.rsqrt(h32.square().mean(dim, keepdim=True) + eps)
        y = h32 * rstd
        ctx.save_for_backward(y, rstd)
        ctx.dim = dim
        return y.to(h.dtype)

    @staticmethod
    def backward(ctx, g):
        y, rstd = ctx.saved_tensors
        g32 = g.to(torch.float32)
        mean_gy = torch.linalg.vecdot(g32, y, dim=ctx.dim).unsqueeze(ctx.dim) / y.shape[ctx.dim]
        return (g32 * rstd).addcmul_(y, mean_gy * rstd, value=-1).to(g.dtype), None, None


def swiglu_inner(width, expansion):  # round(e * w * 2/3), rounded up to a multiple of 256
    return -(-round(expansion * width * 2 / 3) // 256) * 256


class SwiGLU(nn.Module):
    def __init__(self, width, expansion):
        super().__init__()
        inner = swiglu_inner(width, expansion)
        self.gate_up_proj = Linear(width, 2 * inner)
        self.down_proj = Linear(inner, width)

    def forward(self, h):
        return self.down_proj(silu_gate(self.gate_up_proj(h), -1))

    def over_tokens(self, h):
        """MLP-t's SwiGLU over the sequence axis of h (B, L, D). The official code transposes h to
        (B, D, L) and back around it; W @ h, one matrix product per puzzle, gives the same sums with no
        transposed copies (1.6x faster forward and backward on a CPU, measured)."""
        B = h.shape[0]
        w_in, w_out = (lin.weight.to(h.dtype).expand(B, -1, -1) for lin in (self.gate_up_proj, self.down_proj))
        return torch.bmm(w_out, silu_gate(torch.bmm(w_in, h), 1))


def silu_gate(gate_up, dim):
    return SiluGate.apply(gate_up, dim)


class SiluGate(torch.autograd.Function):
    """silu(gate) * up from the two halves of one projection along `dim`. The backward writes both
    halves' gradients into one buffer, where autograd would compute them apart and then concatenate."""

    @staticmethod
    def forward(ctx, gate_up, dim):
        gate, up = gate_up.chunk(2, dim)
        act = F.silu(gate)
        ctx.save_for_backward(gate_up, act)
        ctx.dim = dim
        return act * up

    @staticmethod
    def backward(ctx, g):
        gate_up, act = ctx.saved_tensors
        gate, up = gate_up.chunk(2, ctx.dim)
        if torch.compiler.is_compiling():  # the compiler fuses the concatenation into the products itself
            return torch.cat((torch.ops.aten.silu_backward(g * up, gate), g * act), ctx.dim), None
        grad = torch.empty_like(gate_up)
        d_gate, d_up = grad.chunk(2, ctx.dim)
        torch.mul(g, up, out=d_gate)  # then, in place, times silu'(gate)
        torch.ops.aten.silu_backward.grad_input(d_gate, gate, grad_input=d_gate)
        torch.mul(g, act, out=d_up)
        return grad, None


def rope_tables(head_dim, length, theta):
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    freqs = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)
    angles = torch.cat((freqs, freqs), dim=-1)  # rotate-half layout
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):  # x: (B, L, heads, head_dim); rotated in float32 as officially
    x32 = x.to(cos.dtype)
    x1, x2 = x32.chunk(2, dim=-1)
    return ((x32 * cos.unsqueeze(-2)) + (torch.cat((-x2, x1), dim=-1) * sin.unsqueeze(-2))).to(x.dtype)


class Attention(nn.Module):  # non-causal multi-head self-attention
    def __init__(self, hidden_size, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.qkv_proj = Linear(hidden_size, 3 * hidden_size)
        self.o_proj = Linear(hidden_size, hidden_size)

    def forward(self, h, rope):
        B, L, D = h.shape
        q, k, v = self.qkv_proj(h).view(B, L, 3 * self.num_heads, D // self.num_heads).split(self.num_heads, dim=2)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.o_proj(out.transpose(1, 2).reshape(B, L, D))


class Block(nn.Module):
    """Post-norm: h = rms(h + mix(h)); h = rms(h + swiglu(h)). mix is attention or MLP-t."""

    def __init__(self, cfg):
        super().__init__()
        self.eps = cfg.rms_norm_eps
        if cfg.mlp_t:  # a SwiGLU over the sequence axis, its width the full length with the prefix
            self.mlp_t = SwiGLU(cfg.seq_len + cfg.prefix_len, cfg.expansion)
        else:
            self.self_attn = Attention(cfg.hidden_size, cfg.num_heads)
        self.mlp = SwiGLU(cfg.hidden_size, cfg.expansion)

    def forward(self, h, rope):
        if hasattr(self, "mlp_t"):  # mixes the tokens; the norm, too, runs over the sequence axis
            h = rms_norm(h + self.mlp_t.over_tokens(h), self.eps, dim=1)
        else:
            h = rms_norm(h + self.self_attn(h, rope), self.eps)
        return rms_norm(h + self.mlp(h), self.eps)


class Net(nn.Module):
    """The single tiny network f(h, injection) = blocks(h + injection); official name L_level."""

    def __init__(self, cfg):
        super().__init__()
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.L_layers))

    def forward(self, h, injection, rope):
        h = h + injection
        for block in self.layers:
            h = block(h, rope)
        return h


class PuzzleEmbedding(nn.Module):
    """One learned vector per puzzle identifier, zero-initialised. The table is a buffer: the main
    optimiser never sees it. In training, the rows of the batch are copied into `local_rows`, a leaf
    that collects their gradient for PuzzleEmbSignSGD (official CastedSparseEmbedding's local_weights):
    a fixed buffer written in place, so torch.compile sees no new leaf (no graph break)."""

    def __init__(self, num_ids, ndim):
        super().__init__()
        self.register_buffer("weights", torch.zeros(num_ids, ndim))
        self.register_buffer("local_ids", None, persistent=False)
        self.register_buffer("local_rows", None, persistent=False)

    def prepare(self, batch_size):
        """Make the leaf for batches of `batch_size` (outside any compiled region: called by initial_carry)."""
        device = self.weights.device
        if self.local_rows is None or self.local_rows.shape[0] != batch_size or \
                self.local_rows.device != device or not self.local_rows.is_leaf:  # .to() makes a non-leaf copy
            self.local_ids = torch.zeros(batch_size, dtype=torch.int32, device=device)
            self.local_rows = torch.zeros(batch_size, self.weights.shape[1], device=device, requires_grad=True)

    @property
    def local(self):
        """(ids, rows) of the last training forward while its gradient waits for the optimiser, else None."""
        return None if self.local_rows is None or self.local_rows.grad is None else (self.local_ids, self.local_rows)

    def forward(self, ids):
        if not self.training:
            return self.weights[ids]
        self.prepare(ids.shape[0])  # a no-op after initial_carry (callers resuming a carry may skip it)
        with torch.no_grad():
            self.local_ids.copy_(ids)
            self.local_rows.copy_(self.weights[ids])
        return self.local_rows


# ----------------------------------------------------------------------------------------------
# The model: one call = one supervision step


@dataclass
class Carry:
    """What persists between supervision steps, one slot per puzzle in the batch."""
    y: torch.Tensor        # answer state (B, L, D), official z_H; latent_mode "single": the same tensor as z
    z: torch.Tensor        # latent state (B, L, D), official z_L; latent_mode "multi": (B, n, L, D), one per step
    steps: torch.Tensor    # supervision steps done (B,) int32
    halted: torch.Tensor   # (B,) bool: the slot takes a new puzzle at the next call
    data: dict             # the slot's puzzle: inputs, labels, puzzle_identifiers


class TRM(nn.Module):
    def __init__(self, cfg: TRMConfig):
        super().__init__()
        self.config = cfg
        D, length = cfg.hidden_size, cfg.seq_len + cfg.prefix_len
        self.dtype = getattr(torch, cfg.forward_dtype)
        self.embed_scale = math.sqrt(D)
        self.embed_tokens = nn.Parameter(trunc_normal_(torch.empty(cfg.vocab_size, D), std=1 / math.sqrt(D)))
        if cfg.pos_encodings == "learned":
            self.embed_pos = nn.Parameter(trunc_normal_(torch.empty(length, D), std=1 / math.sqrt(D)))
        if cfg.pos_encodings == "rope" and not cfg.mlp_t:
            cos, sin = rope_tables(D // cfg.num_heads, length, cfg.rope_theta)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        if cfg.prefix_len:
            self.puzzle_emb = PuzzleEmbedding(cfg.num_puzzle_identifiers, cfg.puzzle_emb_ndim)
        self.net = Net(cfg)  # f; with two_networks, f_L (official L_level) for the latent updates only
        if cfg.two_networks:  # HRM's second network f_H (official H_level) for the answer update
            self.net_H = Net(cfg)
        self.lm_head = Linear(D, cfg.vocab_size)
        self.q_head = Linear(D, 2, bias=True)  # (halt, continue) logits read at position 0
        with torch.no_grad():  # halting starts "off": q_halt = -5 whatever the state
            self.q_head.weight.zero_()
            self.q_head.bias.fill_(-5.0)
        # The starting y and z: fixed random vectors (std 1), broadcast over batch and positions;
        # latent_mode "multi" has one per latent, shaped (n, 1, D) to broadcast over (B, n, L, D).
        z_shape = (cfg.L_cycles, 1, D) if cfg.latent_mode == "multi" else (D,)
        self.register_buffer("y_init", trunc_normal_(torch.empty(D, dtype=self.dtype), std=1.0))
        self.register_buffer("z_init", trunc_normal_(torch.empty(z_shape, dtype=self.dtype), std=1.0))

    def num_params(self):  # trainable parameters; the puzzle table is a buffer, so not counted
        return sum(p.numel() for p in self.parameters())

    def input_embedding(self, inputs, puzzle_ids):
        x = F.embedding(inputs.to(torch.int32), self.embed_tokens.to(self.dtype))
        if self.config.prefix_len:
            p = self.puzzle_emb(puzzle_ids).to(self.dtype)
            p = F.pad(p, (0, self.config.prefix_len * self.config.hidden_size - p.shape[-1]))
            x = torch.cat((p.view(-1, self.config.prefix_len, self.config.hidden_size), x), dim=-2)
        if self.config.pos_encodings == "learned":
            x = 0.707106781 * (x + self.embed_pos.to(self.dtype))  # 1/sqrt(2) keeps the variance
        return self.embed_scale * x

    def latent_update(self, y, z, x, i, rope):  # the i-th of the n latent updates
        if self.config.latent_mode == "single":  # trm_singlez: no answer state; from itself and x
            return self.net(z, x, rope)
        if self.config.latent_mode == "multi":   # trm_hier6: latent i rewritten from the sum of all
            zs = list(z.unbind(1))
            zs[i] = self.net(sum(zs), y + x, rope)  # sum() adds z_1 + z_2 + ... in the official order
            return torch.stack(zs, 1)
        return self.net(z, y + x, rope)  # refine the latent from question, answer and itself

    def latent_recursion(self, y, z, x, rope, one_step=False):
        cfg, n = self.config, self.config.L_cycles
        for i in range(n):  # one_step: HRM's 1-step gradient, only the last latent update is tracked
            with torch.no_grad() if one_step and i < n - 1 else nullcontext():
                z = self.latent_update(y, z, x, i, rope)
        f_H = self.net_H if cfg.two_networks else self.net
        if cfg.latent_mode == "single":  # the state refined once more from itself alone; y reads it
            y = z = f_H(z, 0, rope)
        else:  # then the answer from the latent ("multi": from the sum of the latents)
            y = f_H(y, sum(z.unbind(1)) if cfg.latent_mode == "multi" else z, rope)
        return y, z

    def deep_recursion(self, y, z, x):
        cfg = self.config
        rope = (self.rope_cos, self.rope_sin) if hasattr(self, "rope_cos") else None
        # T-1 recursions only improve the states: no gradient, no memory ("full": kept, memory ~ T*(n+1))
        with nullcontext() if cfg.grad_mode == "full" else torch.no_grad():
            for _ in range(cfg.H_cycles - 1):
                y, z = self.latent_recursion(y, z, x, rope)
        # the last one is back-propagated through ("one_step": only its last latent and answer updates)
        return self.latent_recursion(y, z, x, rope, one_step=cfg.grad_mode == "one_step")

    def q_logits(self, y):
        q = self.q_head(y[:, 0]).to(torch.float32)
        return q[..., 0], q[..., 1]

    def initial_carry(self, batch):
        B, length = batch["inputs"].shape[0], self.config.seq_len + self.config.prefix_len
        if self.config.prefix_len:
            self.puzzle_emb.prepare(B)
        z = self.z_init.expand(B, *self.z_init.shape[:-2], length, -1)  # (B, L, D), "multi" (B, n, L, D)
        return Carry(y=self.y_init.expand(B, length, -1).clone(), z=z.clone(),
                     steps=torch.zeros(B, dtype=torch.int32, device=self.y_init.device),
                     halted=torch.ones(B, dtype=torch.bool, device=self.y_init.device),  # all take a puzzle
                     data={k: torch.zeros_like(v) for k, v in batch.items()})

    def forward(self, carry: Carry, batch: dict):
        """One supervision step. Returns the new (detached) carry and the outputs. The batch is not
        validated here (on a GPU each check would wait for the device): callers check their data once,
        on the CPU, with check_batch or when the dataset is opened."""
        cfg, reset = self.config, carry.halted
        # Halted slots restart from the initial states with the new batch's puzzle; others go on.
        data = {k: torch.where(reset.view(-1, *[1] * (v.ndim - 1)), batch[k], v) for k, v in carry.data.items()}
        y = torch.where(reset.view(-1, 1, 1), self.y_init, carry.y)
        z = torch.where(reset.view(-1, *[1] * (carry.z.ndim - 1)), self.z_init, carry.z)
        steps = torch.where(reset, 0, carry.steps) + 1

        x = self.input_embedding(data["inputs"], data["puzzle_identifiers"])
        y, z = self.deep_recursion(y, z, x)
        logits = self.lm_head(y)[:, cfg.prefix_len:]
        q_halt, q_continue = self.q_logits(y)
        outputs = dict(logits=logits, q_halt_logits=q_halt, q_continue_logits=q_continue)

        with torch.no_grad():
            outputs["preds"] = logits.argmax(-1)
            last = steps >= cfg.halt_max_steps
            halted = last  # evaluation always runs all N_sup steps, so a batch stays in lockstep
            if self.training and cfg.halt_max_steps > 1:
                halted = halted | ((q_halt > 0) if cfg.no_ACT_continue else (q_halt > q_continue))
                # Exploration: some slots draw a minimum step count in [2, N_sup] before halting.
                explore = torch.rand_like(q_halt) < cfg.halt_exploration_prob
                min_steps = explore * torch.randint_like(steps, low=2, high=cfg.halt_max_steps + 1)
                halted = halted & (steps >= min_steps)
                if not cfg.no_ACT_continue:  # HRM's Q-learning target: one more step, no gradient
                    next_halt, next_continue = self.q_logits(self.deep_recursion(y, z, x)[0])
                    outputs["target_q_continue"] = torch.sigmoid(
                        torch.where(last, next_halt, torch.maximum(next_halt, next_continue)))
        return Carry(y.detach(), z.detach(), steps, halted, data), outputs

    def check_batch(self, batch):
        """ValueError unless the batch (CPU tensors) fits the model: shapes, token and identifier ranges."""
        cfg, where = self.config, "the dataset and the model config disagree; rebuild one to match the other"
        inputs, labels = batch["inputs"], batch["labels"]
        if inputs.ndim != 2 or inputs.shape[1] != cfg.seq_len or labels.shape != inputs.shape:
            raise ValueError(f"batch inputs {tuple(inputs.shape)} / labels {tuple(labels.shape)}: expected "
                             f"(batch, seq_len={cfg.seq_len}); {where}")
        if inputs.numel() and (inputs.min() < 0 or inputs.max() >= cfg.vocab_size):
            raise ValueError(f"batch inputs hold token ids outside [0, vocab_size={cfg.vocab_size}); {where}")
        bad = (labels != IGNORE_LABEL_ID) & ((labels < 0) | (labels >= cfg.vocab_size))
        if bad.any():
            raise ValueError(f"batch labels outside [0, vocab_size={cfg.vocab_size}) or {IGNORE_LABEL_ID}; {where}")
        ids = batch["puzzle_identifiers"]
        if cfg.prefix_len and ids.numel() and (ids.min() < 0 or ids.max() >= cfg.num_puzzle_identifiers):
            raise ValueError(f"puzzle identifiers outside [0, num_puzzle_identifiers={cfg.num_puzzle_identifiers}); {where}")


# ----------------------------------------------------------------------------------------------
# Losses and metrics


def log_stablemax(x, dim=-1):
    """log of s(x_i) / sum_j s(x_j) with s(x) = x + 1 for x >= 0 and 1 / (1 - x) below:
    a softmax whose tails grow polynomially, not exponentially (Prieto et al. 2025)."""
    # The 1e-30 is not cosmetic: torch.where back-propagates through both branches, and at x == 1
    # exactly the unused 1/(1-x) would give 0 * inf = NaN gradients (it happens in training).
    s = torch.where(x < 0, 1 / (1 - x + 1e-30), x + 1)
    return torch.log(s / s.sum(dim=dim, keepdim=True))


def stablemax_cross_entropy(logits, labels):  # per token, float64, 0 where ignored
    valid = labels != IGNORE_LABEL_ID
    logp = log_stablemax(logits.to(torch.float64))
    picked = logp.gather(-1, torch.where(valid, labels, 0).long().unsqueeze(-1)).squeeze(-1)
    return -torch.where(valid, picked, 0)


def softmax_cross_entropy(logits, labels):  # per token, float32, 0 where ignored
    flat = logits.to(torch.float32).reshape(-1, logits.shape[-1])
    return F.cross_entropy(flat, labels.long().reshape(-1), ignore_index=IGNORE_LABEL_ID,
                           reduction="none").view(labels.shape)


def act_loss(carry: Carry, outputs: dict, loss_type: str = "stablemax"):
    """Deep-supervision loss of one step, summed over the batch (the caller divides by the global
    batch size), and metric sums over the puzzles that halted at this step."""
    labels, q_halt = carry.data["labels"], outputs["q_halt_logits"]
    with torch.no_grad():
        mask = labels != IGNORE_LABEL_ID
        counts = mask.sum(-1)
        divisor = counts.clamp_min(1).unsqueeze(-1)
        is_correct = mask & (outputs["preds"] == labels)
        seq_correct = is_correct.sum(-1) == counts  # the whole puzzle right
        done = carry.halted & (counts > 0)
        metrics = dict(count=done.sum(),
                       accuracy=torch.where(done, (is_correct.to(torch.float32) / divisor).sum(-1), 0).sum(),
                       exact_accuracy=(done & seq_correct).sum(),
                       q_halt_accuracy=(done & ((q_halt >= 0) == seq_correct)).sum(),
                       steps=torch.where(done, carry.steps, 0).sum())
    token_loss = (stablemax_cross_entropy if loss_type == "stablemax" else softmax_cross_entropy)
    lm_loss = (token_loss(outputs["logits"], labels) / divisor).sum()  # per-puzzle mean, summed
    # The halting head learns to predict "this puzzle is already exactly right".
    q_halt_loss = F.binary_cross_entropy_with_logits(q_halt, seq_correct.to(q_halt.dtype), reduction="sum")
    metrics.update(lm_loss=lm_loss.detach(), q_halt_loss=q_halt_loss.detach())
    q_loss = q_halt_loss
    if "target_q_continue" in outputs:
        q_continue_loss = F.binary_cross_entropy_with_logits(
            outputs["q_continue_logits"], outputs["target_q_continue"], reduction="sum")
        metrics["q_continue_loss"] = q_continue_loss.detach()
        q_loss = q_halt_loss + q_continue_loss
    return lm_loss + 0.5 * q_loss, metrics


# ----------------------------------------------------------------------------------------------
# Optimisers and EMA


class AdamATan2(torch.optim.Optimizer):
    """Adam with atan2(m, sqrt(v)) in place of m / (sqrt(v) + eps): bounded, scale invariant, no
    epsilon (Everett et al. 2024). Exactly the `adam-atan2` 0.0.3 CUDA kernel the official code uses:
    scale constants a = b = 1 (the paper suggests a = 1.27), decoupled decay p *= 1 - lr*wd first,
    then p -= lr / (1 - beta1^t) * atan2(m, sqrt(v / (1 - beta2^t))): the first moment's bias
    correction sits outside the atan2, the second's inside."""

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr, (beta1, beta2), wd = group["lr"], group["betas"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
                state["step"] += 1
                t, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
                p.mul_(1 - lr * wd)
                m.lerp_(p.grad, 1 - beta1)
                v.lerp_(p.grad.square(), 1 - beta2)
                p.add_(torch.atan2(m, v.sqrt() / math.sqrt(1 - beta2**t)), alpha=-lr / (1 - beta1**t))


class PuzzleEmbSignSGD(torch.optim.Optimizer):
    """Sign-SGD with decoupled weight decay on the puzzle-embedding rows of the last batch only:
    w <- w*(1 - lr*wd) - lr*sign(sum of the row's gradients), the sum taken over every
    data-parallel rank. Rows absent from the batch are untouched (no decay either)."""

    def __init__(self, puzzle_emb: PuzzleEmbedding, lr=1e-2, weight_decay=0.1):
        super().__init__([puzzle_emb.weights], dict(lr=lr, weight_decay=weight_decay))
        self.puzzle_emb = puzzle_emb

    @torch.no_grad()
    def step(self):
        local = self.puzzle_emb.local
        if local is None:
            return
        ids, grad = local[0], local[1].grad
        local[1].grad = None  # consumed: a step without a new backward changes nothing
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            ids, grad = _all_gather(ids), _all_gather(grad)
        group = self.param_groups[0]
        sign_sgd_rows_(self.puzzle_emb.weights, ids, grad, group["lr"], group["weight_decay"])


def _all_gather(t):
    out = torch.empty((dist.get_world_size() * t.shape[0], *t.shape[1:]), dtype=t.dtype, device=t.device)
    dist.all_gather_into_tensor(out, t.contiguous())
    return out


def sign_sgd_rows_(weights, ids, grad, lr, weight_decay):
    """The update of the rows `ids`, each by the sign of the sum of its gradients (an identifier can
    appear several times). Shapes stay those of the batch (no torch.unique, whose output size would
    make a GPU wait): rows are sorted, equal ids summed per run, and every copy writes the same value."""
    order = ids.argsort()
    sorted_ids = ids[order].long()
    run = torch.cumsum(torch.cat([sorted_ids.new_ones(1), (sorted_ids[1:] != sorted_ids[:-1]).long()]), 0) - 1
    summed = torch.zeros_like(grad).index_add_(0, run, grad[order])
    weights[sorted_ids] = weights[sorted_ids] * (1.0 - lr * weight_decay) - lr * torch.sign(summed[run])


class EMA:
    """Exponential moving average of the trainable weights: shadow <- rate*shadow + (1-rate)*w
    after every optimiser step. Evaluation and checkpoints use it (`with ema.swapped_in(model)`)."""

    def __init__(self, model, rate=0.999):
        self.rate = rate
        self.shadow = {n: p.detach().clone() for n, p in model.named_parameters()}

    @torch.no_grad()
    def update(self, model):
        for n, p in model.named_parameters():
            self.shadow[n].lerp_(p.detach(), 1 - self.rate)

    @contextmanager
    def swapped_in(self, model):
        params = dict(model.named_parameters())
        live = {n: p.detach().clone() for n, p in params.items()}
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(self.shadow[n])
        try:
            yield model
        finally:
            with torch.no_grad():
                for n, p in params.items():
                    p.copy_(live[n])

    def state_dict(self):
        return dict(rate=self.rate, shadow=self.shadow)

    def load_state_dict(self, state):
        self.rate = state["rate"]
        for n, t in state["shadow"].items():
            self.shadow[n].copy_(t)


# ----------------------------------------------------------------------------------------------
# Official checkpoints

_OFFICIAL_RENAMES = {"H_init": "y_init", "L_init": "z_init", "L_level.": "net.", "H_level.": "net_H.",
                     "embed_tokens.embedding_weight": "embed_tokens", "embed_pos.embedding_weight": "embed_pos"}


def official_to_ours(name):
    """'_orig_mod.model.inner.L_level.layers.0.mlp.down_proj.weight' -> 'net.layers.0.mlp.down_proj.weight'"""
    for prefix in ("_orig_mod.", "model.", "inner."):
        name = name[len(prefix):] if name.startswith(prefix) else name
    for old, new in _OFFICIAL_RENAMES.items():
        name = name.replace(old, new)
    return name


def load_official_state_dict(model: TRM, state_dict: dict):
    """Load a state dict saved by the official TinyRecursiveModels code (its names, possibly with the
    torch.compile prefix). The config must match; otherwise every differing key and shape is named."""
    ours = model.state_dict()
    theirs = {official_to_ours(k): v for k, v in state_dict.items()}
    problems = [f"missing {k} {tuple(v.shape)}" for k, v in ours.items() if k not in theirs]
    problems += [f"unexpected {k} {tuple(v.shape)}" for k, v in theirs.items() if k not in ours]
    problems += [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(ours[k].shape)}"
                 for k, v in theirs.items() if k in ours and v.shape != ours[k].shape]
    if problems:
        raise ValueError("official state dict does not fit this TRMConfig (pass the config it was trained "
                         "with): " + "; ".join(problems))
    model.load_state_dict(theirs)
    return model


def config_fields():
    return [f.name for f in fields(TRMConfig)]
