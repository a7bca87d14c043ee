"""bench.py's FLOP count, checked against torch's own FLOP counter on a real training step; its
options checked in one line."""
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import bench
from conftest import run_script
from model import TRM, TRMConfig, act_loss


def counted_step_flops(cfg, batch_size):
    torch.manual_seed(0)
    model = TRM(cfg).train()
    batch = {"inputs": torch.randint(1, cfg.vocab_size, (batch_size, cfg.seq_len), dtype=torch.int32),
             "labels": torch.randint(1, cfg.vocab_size, (batch_size, cfg.seq_len), dtype=torch.int32),
             "puzzle_identifiers": torch.zeros(batch_size, dtype=torch.int32)}
    carry = model.initial_carry(batch)
    # The math backend runs attention as plain matmuls, which the counter sees (the CPU flash kernel
    # is not counted by torch 2.13's FlopCounterMode).
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        carry, outputs = model(carry, batch)
        act_loss(carry, outputs)[0].backward()
    return counter.get_total_flops()


def test_step_flops_match_torch_flop_counter():
    for mlp_t in (True, False):
        cfg = TRMConfig(vocab_size=11, seq_len=81, hidden_size=64, num_heads=4, H_cycles=3, L_cycles=2,
                        mlp_t=mlp_t, pos_encodings="none", puzzle_emb_ndim=64, puzzle_emb_len=2,
                        forward_dtype="float32")
        counted, formula = counted_step_flops(cfg, 4), bench.step_flops(cfg, 4)
        assert abs(formula - counted) / counted < 0.01, (mlp_t, formula, counted)


def test_inference_flops_match_torch_flop_counter():
    cfg = TRMConfig(vocab_size=11, seq_len=81, hidden_size=64, num_heads=4, H_cycles=3, L_cycles=2, mlp_t=False,
                    pos_encodings="none", puzzle_emb_ndim=64, puzzle_emb_len=2, forward_dtype="float32")
    torch.manual_seed(0)
    model = TRM(cfg).eval()
    batch = {"inputs": torch.randint(1, 11, (4, 81), dtype=torch.int32),
             "labels": torch.randint(1, 11, (4, 81), dtype=torch.int32),
             "puzzle_identifiers": torch.zeros(4, dtype=torch.int32)}
    with torch.inference_mode(), FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        model(model.initial_carry(batch), batch)
    counted = counter.get_total_flops()
    assert abs(bench.step_flops(cfg, 4, training=False) - counted) / counted < 0.01


def test_a_shape_that_does_not_fit_is_reported_and_the_next_one_runs(monkeypatch, capsys):
    def fake(name, batch, device, dtype, compile_, steps):
        if name == "maze":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")
        return 0.5, 0.1, TRMConfig(vocab_size=11, seq_len=81, hidden_size=32, num_heads=2), 1000, {}
    monkeypatch.setattr(bench, "bench_model", fake)
    monkeypatch.setattr(bench.configurator, "matmul_flops", lambda dtype, device: 1e11)
    monkeypatch.setattr("sys.argv", ["bench.py", "--models=maze,sudoku_mlp", "--device=cpu", "--dtype=float32"])
    bench.main()
    out = capsys.readouterr().out
    assert "maze (batch 2): does not fit in memory" in out and "Going on" in out
    assert "sudoku_mlp: 0.00M params, batch 16" in out and "train" in out and "inference" in out
    assert "official" not in out, "no comparison is claimed without timing the official code in this run"


@pytest.mark.parametrize("arg, message", [
    ("--steps=0", "--steps=0: must be at least 1"),
    ("--steps=-3", "--steps=-3: must be at least 1"),
    ("--batch=-1", "--batch=-1: must be at least 1 (or 0 for the default per shape)"),
    ("--models=", "--models=: choose from sudoku_mlp"),
    ("--models=sudoku_mlp,mlp", "--models=sudoku_mlp,mlp: unknown mlp; choose from sudoku_mlp"),
    ("--batch=x", "argument --batch: invalid int value: 'x'"),
    ("--official=/nowhere", "--official=/nowhere: not a checkout of SamsungSAILMontreal/TinyRecursiveModels"),
])
def test_bad_options_are_one_line_before_any_work(arg, message, monkeypatch):
    monkeypatch.setattr(bench, "bench_model", lambda *a: pytest.fail("a model was timed"))
    monkeypatch.setattr("sys.argv", ["bench.py", "--models=sudoku_mlp", "--device=cpu", "--batch=1", arg])
    with pytest.raises(SystemExit) as info:
        bench.main()
    assert str(info.value).startswith(f"bench.py: {message}") and "\n" not in str(info.value)


def test_the_cli_prints_one_line_not_a_traceback():
    done = run_script("bench.py", "--models=sudoku_mlp", "--device=cpu", "--steps=0")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == ["bench.py: --steps=0: must be at least 1 (the median of that many "
                                                "timed steps is reported); see python bench.py --help"]


def test_the_shapes_config_files_are_found_from_any_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(bench, "timed", lambda fn, warmup, steps, device: 0.5)  # the shape, not its speed
    train_s, infer_s, cfg, params, _ = bench.bench_model("sudoku_mlp", 1, "cpu", "float32", False, 1)
    assert (cfg.hidden_size, cfg.mlp_t, cfg.seq_len) == (512, True, 81) and params > 1e6


def test_the_official_ratio_is_printed_from_both_timings_of_this_run(monkeypatch, capsys):
    cfg = TRMConfig(vocab_size=11, seq_len=81, hidden_size=32, num_heads=2)
    monkeypatch.setattr(bench, "bench_model", lambda *a: (0.5, 0.1, cfg, 1000, {}))
    monkeypatch.setattr(bench, "official_train_seconds", lambda d, c, b, dev, comp, steps: (0.8, "stand-in Adam"))
    monkeypatch.setattr(bench.configurator, "matmul_flops", lambda dtype, device: 1e11)
    monkeypatch.setattr(bench.os.path, "isdir", lambda path: True)
    monkeypatch.setattr("sys.argv", ["bench.py", "--models=sudoku_mlp", "--device=cpu", "--dtype=float32",
                                     "--official=/official"])
    bench.main()
    assert "official       800.0 ms/step  (stand-in Adam): ours is 1.60x as fast, both timed in this run" in \
        capsys.readouterr().out
