"""
train.py's settings as every script reads them: its defaults, then config files, then --key=value
(nanoGPT keeps its configurator apart from train.py for the same reason), the model shape they give,
the device and precision they choose, and the run a checkpoint holds.

    C = configurator.configure(["config/sudoku_cpu.py", "--lr=1e-3"])   # train.py's defaults, then these

Errors a user can fix are UserError: one line, no traceback.
"""
import ast
import difflib
import functools
import math
import os
import pickle
import re
import statistics
import sys
import time
import traceback

import torch

import dataset
from model import TRMConfig, config_fields

TRAIN_PY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train.py")


class UserError(Exception):
    """A mistake the user can fix; printed as one line, no traceback."""


# ------------------------------------------------------------------------------------------------
# Settings: defaults, then config files, then --key=value

# Names from other code bases (nanoGPT, the paper) that users will type.
ALIASES = dict(learning_rate="lr", batch_size="global_batch_size", max_iters="max_steps", wd="weight_decay",
               T="H_cycles", n="L_cycles", n_layer="L_layers", n_embd="hidden_size", n_head="num_heads",
               N_sup="halt_max_steps", forward_dtype="dtype")
FROM_DATASET = ("vocab_size", "seq_len", "num_puzzle_identifiers")


@functools.lru_cache(maxsize=None)
def train_settings():
    """(DEFAULTS, help text) of train.py, read from its source without importing it: the settings
    block at its top assigns plain values only, each one a setting, as in nanoGPT's train.py."""
    with open(TRAIN_PY, encoding="utf-8") as f:
        tree = ast.parse(f.read(), TRAIN_PY)
    defaults = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id == "DEFAULTS":
                break
            if not node.targets[0].id.startswith("_"):
                defaults[node.targets[0].id] = ast.literal_eval(node.value)
    return defaults, ast.get_docstring(tree, clean=False)


def configure(argv, defaults=None, help_text=None):
    """nanoGPT-style: run each config/*.py given, then apply --key=value (ast.literal_eval'd).
    defaults, help_text: the settings and what --help prints; train.py's when not given."""
    if defaults is None:
        defaults, help_text = train_settings()
    settings = dict(defaults)

    def assign(key, value, where):
        if key not in defaults:
            close = ([ALIASES[key]] if key in ALIASES else []) + difflib.get_close_matches(key, defaults, n=3)
            raise UserError(f"{where}: unknown setting '{key}'" + (f"; did you mean {', '.join(close)}?" if close else ""))
        default = defaults[key]
        if isinstance(default, float) and type(value) is int:
            value = float(value)
        ok = (value is None and key in FROM_DATASET) or default is None and type(value) is int \
            or type(value) is type(default)
        if not ok:
            raise UserError(f"{where}: {key}={value!r} is a {type(value).__name__}, expected a "
                            f"{type(default).__name__} like the default {default!r}")
        settings[key] = value

    for arg in argv:
        if arg in ("-h", "--help"):
            print(help_text + "\nSettings and defaults:\n" + "\n".join(f"  --{k}={v!r}" for k, v in defaults.items()))
            sys.exit(0)
        if arg.startswith("--"):
            key, eq, text = arg[2:].partition("=")
            if not eq:
                raise UserError(f"{arg}: write overrides as --key=value")
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                value = text  # a bare word is a string: --device=cpu
            assign(key, value, arg)
        else:
            for key, value in run_config_file(arg).items():
                if not key.startswith("_") and not callable(value) and type(value).__name__ != "module":
                    assign(key, value, arg)
    check_ranges(settings)
    return settings


def run_config_file(path):
    """The names a config file assigns. Config files are Python, run as they are (as nanoGPT's):
    run only your own. Any error in one is reported as its path and line. The file sees its own
    absolute path as __file__, so that it can run the config it builds on from any working directory."""
    if not os.path.isfile(path):
        raise UserError(f"{path}: config file not found (configs live in config/)")
    try:
        code = compile(dataset.read_text(path), path, "exec")
    except dataset.DatasetError as e:
        raise UserError(str(e)) from None
    except SyntaxError as e:
        raise UserError(f"{path}:{e.lineno}: {e.msg}; fix the config file") from None
    scope = {"__file__": os.path.abspath(path)}
    try:
        exec(code, scope)
    except Exception as e:
        frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == path]
        line = f":{frames[-1].lineno}" if frames else ""
        raise UserError(f"{path}{line}: {type(e).__name__}: {e}; fix the config file") from None
    return scope


# Allowed ranges of the numeric settings, (lowest, highest); None = unbounded. Model shapes are
# checked again by TRMConfig.
RANGES = dict(global_batch_size=(1, None), epochs=(1, None), max_steps=(0, None), max_minutes=(0, None),
              eval_interval=(1, None), eval_max_batches=(0, None), log_interval=(1, None), ckpt_interval=(1, None),
              lr=(0, None), lr_min_ratio=(0, 1), lr_warmup_steps=(0, None), weight_decay=(0, None),
              beta1=(0, 1), beta2=(0, 1), puzzle_emb_lr=(0, None), puzzle_emb_weight_decay=(0, None),
              ema_rate=(0, 1), ddp_timeout_minutes=(0.01, None), seed=(0, 2**63 - 1), vocab_size=(1, None),
              seq_len=(1, None), num_puzzle_identifiers=(1, None), hidden_size=(1, None), num_heads=(1, None),
              expansion=(0.01, None), L_layers=(1, None), H_cycles=(1, None), L_cycles=(1, None),
              halt_max_steps=(1, None), halt_exploration_prob=(0, 1), puzzle_emb_ndim=(0, None),
              puzzle_emb_len=(0, None), rope_theta=(1e-9, None), rms_norm_eps=(1e-30, None))


def check_ranges(settings):
    for key, (lo, hi) in RANGES.items():
        value = settings.get(key)
        if value is None or isinstance(value, bool):
            continue
        if not math.isfinite(value) or (lo is not None and value < lo) or (hi is not None and value > hi):
            allowed = f"at least {lo}" if hi is None else f"between {lo} and {hi}"
            raise UserError(f"{key}={value!r} is out of range: use a value {allowed}")


def model_config(C, meta):
    fields = {k: C[k] for k in config_fields() if k in C}
    for key in FROM_DATASET:
        if fields[key] is None:
            fields[key] = meta[key]
        elif fields[key] != meta[key]:
            raise UserError(f"{key}={fields[key]} but the dataset {C['data_dir']} has {key}={meta[key]}; "
                            f"drop the setting to take it from the dataset")
    fields["forward_dtype"] = C["dtype"]
    try:
        return TRMConfig(**fields)
    except ValueError as e:
        raise UserError(str(e)) from None


# ------------------------------------------------------------------------------------------------
# Device, precision


def resolve_device(name):
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device='cuda' but this torch build sees no CUDA GPU; use --device=cpu (or auto)")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("device='mps' but MPS is not available here; use --device=cpu (or auto)")
    if name not in ("cpu", "cuda", "mps"):
        raise UserError(f"device={name!r}: use auto, cpu, cuda or mps")
    return name


def matmul_flops(dtype, device="cpu", n=2048, reps=5):
    """Measured FLOP/s of an n x n matmul in `dtype`: the peak bench.py's MFU divides by."""
    a = torch.randn(n, n, generator=torch.Generator().manual_seed(0)).to(device, dtype)  # global RNG untouched
    for i in range(reps + 1):  # the first is a warm-up: thread pool, kernel choice
        if i == 1:
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t = time.perf_counter()
        a @ a
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - t)


FAST_BF16 = 1.25  # dtype=auto: bf16 must beat float32 by this much to be worth its rounding


@functools.lru_cache(maxsize=None)
def cpu_bf16_speedup(repeats=5):
    """How many times faster a bf16 matmul runs than a float32 one on this CPU: the median of `repeats`
    side-by-side timings, so that a busy moment does not decide (a few ms each; a quarter second where
    bf16 is emulated). Flags alone cannot tell: about 4x with AMX and on AMD Zen 5's AVX-512, about 0.5x
    on AVX-512 CPUs whose bf16 is slow, under 0.05x on AVX2."""
    return statistics.median(matmul_flops(torch.bfloat16, n=512, reps=3) / matmul_flops(torch.float32, n=512, reps=3)
                             for _ in range(repeats))


def cpu_kind():
    """The CPU kinds whose speeds differ, to label measured figures: 'AMX', 'AVX-512 fast-bf16'
    (bf16 faster than float32 without AMX), 'AVX-512' (bf16 slower) or 'AVX2'."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return "unknown"
    if "amx_bf16" in flags:
        return "AMX"
    if "avx512f" in flags:
        return "AVX-512 fast-bf16" if cpu_bf16_speedup() > FAST_BF16 else "AVX-512"
    return "AVX2"


def resolve_dtype(name, device_type):
    """auto: bf16 on CUDA, and on a CPU where a bf16 matmul measures faster than float32; float32
    elsewhere (MPS, and CPUs where bf16 is slow or emulated)."""
    if name == "auto":
        fast_bf16 = (device_type == "cuda" and torch.cuda.is_bf16_supported()) or \
            (device_type == "cpu" and cpu_bf16_speedup() > FAST_BF16)
        return "bfloat16" if fast_bf16 else "float32"
    if name not in ("bfloat16", "float32", "float64"):
        raise UserError(f"dtype={name!r}: use auto, bfloat16, float32 or float64")
    return name


# ------------------------------------------------------------------------------------------------
# A run's checkpoint, as sample.py and ablate.py read it (train.py writes it)


def read_checkpoint(path, fix="Restore it from a backup, or start over with --init_from=scratch --out_dir=<new dir>"):
    """A checkpoint's contents, loaded as data only: tensors, numbers, strings, lists and dicts.
    torch.load's weights_only=True refuses any other pickled object, so a crafted file cannot run code."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        refused = re.search(r"GLOBAL (\S+)", str(e)) if isinstance(e, pickle.UnpicklingError) else None
        if refused:  # weights_only met an object it will not build: never load it another way
            raise UserError(f"{path} was refused: it holds a Python object ({refused[1]}) where a checkpoint has "
                            f"only tensors and plain data; checkpoints are loaded as data only, never run") from None
        reason = str(e).strip().splitlines()[0][:120] if str(e).strip() else ""
        raise UserError(f"{path} is unreadable ({type(e).__name__}: {reason}); it was left untouched. {fix}") from None
    if not isinstance(state, dict) or not all(isinstance(state.get(k), dict) for k in ("config", "model", "model_config")):
        raise UserError(f"{path} is not a train.py checkpoint (no config, model and model_config entries)")
    return state
