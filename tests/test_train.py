"""train.py: the configurator, exact resume after SIGKILL, and one-line errors for bad input."""
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import configurator
import train
from conftest import ROOT, run_script

TINY = ["--hidden_size=32", "--num_heads=2", "--H_cycles=2", "--L_cycles=1", "--halt_max_steps=3",
        "--puzzle_emb_ndim=32", "--puzzle_emb_len=1", "--mlp_t=True", "--pos_encodings='none'",
        "--global_batch_size=16", "--compile=False", "--dtype=float32", "--device=cpu", "--lr_warmup_steps=5",
        "--lr=3e-3", "--puzzle_emb_lr=1e-2", "--ema_rate=0.9", "--halt_exploration_prob=0.5"]


def tiny_run(data, out, *extra):
    return ["train.py", f"--data_dir={data}", f"--out_dir={out}", *TINY, *extra]


def test_config_file_then_overrides(tmp_path):
    cfg = tmp_path / "cfg.py"
    cfg.write_text("lr = 3e-4\nhidden_size = 64\nmlp_t = True\n_private = 1\nimport math\n")
    C = configurator.configure([str(cfg), "--lr=1e-3", "--eval_interval=500", "--device=cpu", "--vocab_size=11",
                                "--weight_decay=1"])
    assert (C["lr"], C["hidden_size"], C["mlp_t"], C["eval_interval"]) == (1e-3, 64, True, 500)
    assert C["device"] == "cpu" and C["vocab_size"] == 11
    assert C["weight_decay"] == 1.0 and isinstance(C["weight_decay"], float)
    assert C["epochs"] == train.DEFAULTS["epochs"]


@pytest.mark.parametrize("argv, message", [
    (["--learning_rate=1e-3"], "unknown setting 'learning_rate'; did you mean lr"),
    (["--hiden_size=64"], "did you mean hidden_size"),
    (["--lr=fast"], "lr='fast' is a str, expected a float"),
    (["--compile=1"], "compile=1 is a int, expected a bool"),
    (["--epochs=1.5"], "epochs=1.5 is a float, expected a int"),
    (["--lr"], "write overrides as --key=value"),
    (["no_such_config.py"], "config file not found"),
])
def test_configurator_rejects_bad_settings_naming_the_key(argv, message):
    with pytest.raises(configurator.UserError, match=message):
        configurator.configure(argv)


def read_metrics(out):
    with open(out / "metrics.jsonl") as f:
        rows = [json.loads(line) for line in f]
    for row in rows:
        row.pop("examples_per_s", None)  # wall-clock, the one thing allowed to differ
    return rows


def test_sigkill_then_resume_equals_the_uninterrupted_run(sudoku4, tmp_path):
    args = ["--max_steps=60", "--ckpt_interval=10", "--log_interval=1", "--eval_interval=2"]  # eval at 37, 60
    full, cut = tmp_path / "full", tmp_path / "cut"
    done = run_script(*tiny_run(sudoku4, full, *args))
    assert done.returncode == 0, done.stderr

    proc = subprocess.Popen([sys.executable, *tiny_run(sudoku4, cut, *args)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until step 15 is logged: a checkpoint exists at step 10
        if (cut / "metrics.jsonl").exists() and any(json.loads(line)["iter"] >= 15 for line in
                                                    open(cut / "metrics.jsonl") if line.strip()):
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(cut / "ckpt.pt", weights_only=False)["step"]
    assert 10 <= killed_at < 60, "the kill must land mid-run for this test to mean anything"

    done = run_script(*tiny_run(sudoku4, cut, *args, "--init_from=resume"))
    assert done.returncode == 0, done.stderr
    assert f"resumed from {cut / 'ckpt.pt'} at step {killed_at}" in done.stdout
    a, b = (torch.load(d / "ckpt.pt", weights_only=False) for d in (full, cut))
    assert a["step"] == b["step"] == 60
    for part in ("model", "optimizer", "emb_optimizer", "ema", "carry", "loader"):
        assert_same(a[part], b[part], part)
    assert read_metrics(full) == read_metrics(cut)


def assert_same(x, y, where):
    if isinstance(x, dict):
        assert x.keys() == y.keys(), where
        for k in x:
            assert_same(x[k], y[k], f"{where}.{k}")
    elif isinstance(x, (list, tuple)):
        assert len(x) == len(y), where
        for i, (u, v) in enumerate(zip(x, y)):
            assert_same(u, v, f"{where}[{i}]")
    elif isinstance(x, torch.Tensor):
        assert torch.equal(x, y), where
    else:
        assert x == y, where


def test_training_learns_and_writes_metrics_config_and_curves(sudoku4, tmp_path):
    out = tmp_path / "run"
    # 300 training puzzles in batches of 16: a pass of eval_interval=3 epochs is 56 steps.
    done = run_script(*tiny_run(sudoku4, out, "--max_steps=120", "--eval_interval=3", "--log_interval=20"))
    assert done.returncode == 0, done.stderr
    rows = read_metrics(out)
    train_rows = [r for r in rows if r["split"] == "train"]
    evals = [r for r in rows if r["split"] == "test"]
    assert [r["iter"] for r in evals] == [56, 112, 120]
    keys = {"iter", "split", "lm_loss", "accuracy", "exact_accuracy", "q_halt_accuracy", "steps"}
    assert keys <= set(evals[0]) and keys | {"lr"} <= set(train_rows[0])
    assert train_rows[-1]["lm_loss"] < 0.8 * train_rows[0]["lm_loss"], "the loss must fall"
    assert evals[-1]["accuracy"] > 0.4, "4x4 Sudoku cells: well above chance (0.25) after 120 steps"
    assert evals[-1]["steps"] == 3.0, "evaluation runs every puzzle for all halt_max_steps"
    saved = json.loads((out / "config.json").read_text())
    assert saved["hidden_size"] == 32 and saved["dtype"] == "float32"
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def one_line_error(done):
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    return done.stderr.strip().splitlines()[-1]


def error_of(argv):
    """train.py's message for a bad run, in-process (what the CLI prints after 'train.py: ')."""
    with pytest.raises(SystemExit) as exit_info:
        train.main(argv[1:] if argv[0] == "train.py" else argv)
    return str(exit_info.value)


def test_cli_errors_are_one_line_without_traceback(tmp_path):
    msg = one_line_error(run_script(*tiny_run(tmp_path / "nowhere", tmp_path / "o")))
    assert msg.startswith("train.py: ") and "nowhere/train/dataset.json: not found" in msg
    assert "prepare_sudoku.py" in msg


def test_dataset_disagreeing_with_the_config_says_so(sudoku4, tmp_path):
    msg = error_of(tiny_run(sudoku4, tmp_path / "o", "--vocab_size=11"))
    assert "vocab_size=11 but the dataset" in msg and "vocab_size=6" in msg


def test_batch_larger_than_the_training_set(sudoku4, tmp_path):
    msg = error_of(tiny_run(sudoku4, tmp_path / "o", "--global_batch_size=100000"))
    assert "global_batch_size 100000" in msg and "lower the batch size" in msg


def test_cuda_requested_without_cuda(sudoku4, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    msg = error_of(tiny_run(sudoku4, tmp_path / "o") + ["--device=cuda"])
    assert "device='cuda'" in msg and "--device=cpu" in msg


def test_corrupt_checkpoint_is_named_and_left_untouched(sudoku4, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "ckpt.pt").write_bytes(b"PK\x03\x04 truncated")
    msg = error_of(tiny_run(sudoku4, out, "--init_from=resume"))
    assert f"{out / 'ckpt.pt'} is unreadable" in msg and "left untouched" in msg
    assert (out / "ckpt.pt").read_bytes() == b"PK\x03\x04 truncated"
    msg = error_of(tiny_run(sudoku4, out))  # scratch would overwrite it: refused
    assert "ckpt.pt exists" in msg and "--init_from=resume" in msg


def test_resume_with_another_model_shape_names_the_fields(sudoku4, tmp_path):
    out = tmp_path / "o"
    train.main(tiny_run(sudoku4, out, "--max_steps=2")[1:])
    msg = error_of(tiny_run(sudoku4, out, "--max_steps=4", "--init_from=resume", "--hidden_size=64", "--L_cycles=3"))
    assert "hidden_size: checkpoint 32 vs now 64" in msg and "L_cycles: checkpoint 1 vs now 3" in msg


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(sudoku4, tmp_path, monkeypatch):
    out = tmp_path / "o"
    real, calls = train.act_loss, []

    def poisoned(carry, outputs, loss_type):
        loss, metrics = real(carry, outputs, loss_type)
        calls.append(1)
        return (loss * float("nan") if len(calls) == 6 else loss), metrics

    monkeypatch.setattr(train, "act_loss", poisoned)
    msg = error_of(tiny_run(sudoku4, out, "--max_steps=10", "--ckpt_interval=2"))
    assert "loss is not finite at step 6" in msg and "ckpt.pt holds the last good state" in msg
    assert torch.load(out / "ckpt.pt", weights_only=False)["step"] == 4


def test_compiled_training_and_evaluation_match_eager(sudoku4, tmp_path):
    """compile=True (the default off the CPU configs) trains and evaluates like eager mode."""
    results = {}
    for compiled in (False, True):
        out = tmp_path / f"compile-{compiled}"
        train.main(tiny_run(sudoku4, out, "--max_steps=4", "--log_interval=2", f"--compile={compiled}")[1:])
        results[compiled] = read_metrics(out)
    eager, compiled = results[False], results[True]
    assert [(r["iter"], r["split"]) for r in eager] == [(r["iter"], r["split"]) for r in compiled]
    for a, b in zip(eager, compiled):
        for key in ("lm_loss", "accuracy", "q_halt_loss"):
            assert abs(a[key] - b[key]) <= 1e-4 * max(1.0, abs(a[key])), (a["iter"], a["split"], key)


def test_eval_steps_past_n_sup_goes_on_without_restarting_and_scores_every_puzzle(sudoku4):
    """eval_steps=7 on a model trained for N_sup=3: each batch's carry advances 7 steps, never restarted
    at the model's own limit, and the score is sample.py's (independent code) after 7 steps."""
    import sample
    C = configurator.configure(tiny_run(sudoku4, "unused", "--eval_steps=7")[1:])
    meta, sets = train.dataset.load_split(C["data_dir"], "test")
    torch.manual_seed(0)
    model = train.TRM(configurator.model_config(C, meta))
    calls = []

    def forward(carry, batch):
        calls.append((carry.steps.clone(), carry.halted.clone()))
        return model(carry, batch)

    result = train.evaluate(model, C, "cpu", forward)
    batches = -(-meta["total_puzzles"] // C["global_batch_size"])
    assert len(calls) == 7 * batches
    for i, (steps, halted) in enumerate(calls):
        assert halted.all() if i % 7 == 0 else (~halted).all() and (steps == i % 7).all(), f"call {i}"
    puzzles = {"inputs": np.asarray(next(iter(sets.values()))["inputs"], np.int32)}
    puzzles["puzzle_identifiers"] = np.zeros(len(puzzles["inputs"]), np.int32)
    with torch.inference_mode():
        preds = sample.solve(model.eval(), puzzles, 7, slots=16)[0]
    labels = np.asarray(next(iter(sets.values()))["labels"])
    assert result["count"] == len(labels) == meta["total_puzzles"]
    assert result["exact_accuracy"] == pytest.approx((preds == labels).all(-1).mean())


@pytest.mark.parametrize("ids", ["blank", "random"])
def test_puzzle_id_ablation_changes_the_identifiers_the_model_sees_and_nothing_else(sudoku4, ids):
    C = configurator.configure(tiny_run(sudoku4, "unused")[1:])
    meta = {"vocab_size": 6, "seq_len": 16, "num_puzzle_identifiers": 7}  # pretend 6 trained identifiers
    torch.manual_seed(0)
    model = train.TRM(configurator.model_config(C, meta))
    seen = {"none": [], ids: []}

    def spy(mode):
        def forward(carry, batch):
            seen[mode].append({k: v.clone() for k, v in batch.items()})
            return model(carry, batch)
        return forward

    for mode in seen:
        train.evaluate(model, C, "cpu", spy(mode), ids=mode)
    assert len(seen["none"]) == len(seen[ids]) > 0
    for normal, ablated in zip(seen["none"], seen[ids]):
        assert torch.equal(normal["inputs"], ablated["inputs"]) and torch.equal(normal["labels"], ablated["labels"])
        real = normal["inputs"][:, 0] != 0  # padding rows keep the blank identifier either way
        shown = ablated["puzzle_identifiers"][real]
        assert (normal["puzzle_identifiers"][real] == 0).all()  # Sudoku puzzles all carry identifier 0...
        if ids == "blank":
            assert (shown == 0).all()
        else:  # ...so a random trained identifier (1..6) is always a different one
            assert ((shown >= 1) & (shown < 7)).all() and len(shown.unique()) > 1


@pytest.mark.parametrize("speedup, chosen", [(4.5, "bfloat16"), (1.0, "float32"), (0.5, "float32"), (0.03, "float32")])
def test_auto_dtype_follows_the_measured_cpu_bf16_speed(monkeypatch, speedup, chosen):
    # Flags cannot decide it: AMD Zen 5 has no AMX but bf16 matmuls 4x faster than float32, while
    # other AVX-512 CPUs run bf16 at half the float32 speed.
    monkeypatch.setattr(configurator, "cpu_bf16_speedup", lambda: speedup)
    assert configurator.resolve_dtype("auto", "cpu") == chosen
    assert configurator.resolve_dtype("float32", "cpu") == "float32" and \
        configurator.resolve_dtype("bfloat16", "cpu") == "bfloat16"


def test_the_bf16_measurement_is_real_and_leaves_the_seeded_rng_alone():
    configurator.cpu_bf16_speedup.cache_clear()
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    speedup = configurator.cpu_bf16_speedup()
    assert torch.equal(torch.rand(3), expected)  # the model built after it is the same on every CPU
    assert 0 < speedup < 100 and configurator.cpu_bf16_speedup() == speedup  # measured once


def test_the_configurator_reads_the_settings_block_and_help_of_train_py(capsys):
    defaults, help_text = configurator.train_settings()
    assert list(defaults.items()) == list(train.DEFAULTS.items()) and help_text == train.__doc__
    with pytest.raises(SystemExit):
        train.main(["--help"])
    from_train = capsys.readouterr().out
    with pytest.raises(SystemExit):
        configurator.configure(["--help"])
    assert capsys.readouterr().out == from_train and from_train.startswith(train.__doc__ + "\nSettings and defaults:\n")


# ------------------------------------------------------------------------------ a schedule that fits the clock

def test_the_clock_schedule_ends_when_the_budget_does_capped_by_max_steps():
    # 25 steps and 30 s in, at 0.5 s a step, a 2-minute budget leaves 180 more steps.
    assert train.steps_in_budget(25, 30.0, 0.5, 2.0) == 205
    assert train.steps_in_budget(25, 30.0, 0.5, 2.0, max_steps=100) == 100
    assert train.steps_in_budget(25, 200.0, 0.5, 2.0) == 26, "a spent budget still takes the next step"


class FakeClock:
    """time.time() for train.py that advances `per_step` seconds with each optimiser step and stands
    still otherwise, so that the measured step time is exact; at step `stop_at`, Ctrl-C is pressed."""

    def __init__(self, monkeypatch, per_step, stop_at=None):
        self.now, real_step = 1000.0, train.train_step

        def step(run, batch):
            real_step(run, batch)
            self.now += per_step
            if run.step == stop_at:
                run.stop["asked"] = True
        monkeypatch.setattr(train.time, "time", lambda: self.now)
        monkeypatch.setattr(train, "train_step", step)


def test_the_clock_schedule_plans_from_the_step_time_and_a_resume_keeps_it_and_the_dtype(sudoku4, tmp_path,
                                                                                          monkeypatch):
    """At 1 s a step a half-minute budget plans 30 steps, and the cosine ends there (lr_min_ratio). Resumed
    on a slower machine (1.5 s a step, which would plan 35), where bf16 now measures fast, the run keeps its
    30 steps and its float32: it continues the schedule it started, not a new one."""
    argv = tiny_run(sudoku4, tmp_path / "run", "--clock_schedule=True", "--max_minutes=0.5", "--lr_min_ratio=0.1",
                    "--log_interval=5", "--ckpt_interval=5", "--dtype=auto")[1:]
    monkeypatch.setattr(configurator, "cpu_bf16_speedup", lambda: 0.03)  # bf16 slow here: float32 (and fast)
    FakeClock(monkeypatch, per_step=1.0, stop_at=15)
    with pytest.raises(train.Interrupted):
        train.train(configurator.configure(argv))
    state = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=True)
    assert state["step"] == 15 and state["schedule"] == dict(total_steps=30, last_step=30)
    assert state["config"]["dtype"] == "float32"
    assert json.loads((tmp_path / "run" / "config.json").read_text())["dtype"] == "float32"

    monkeypatch.setattr(configurator, "cpu_bf16_speedup", lambda: 4.5)
    FakeClock(monkeypatch, per_step=1.5)
    train.train(configurator.configure(argv + ["--init_from=resume"]))
    state = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=True)
    assert state["step"] == 30 and state["config"]["dtype"] == "float32"
    logged = [row for row in read_metrics(tmp_path / "run") if row["split"] == "train"]
    assert logged[-1]["iter"] == 30 and logged[-1]["lr"] == pytest.approx(0.1 * 3e-3), "the cosine ends at step 30"


def test_clock_schedule_without_a_budget_is_one_line(sudoku4, tmp_path):
    with pytest.raises(SystemExit) as info:
        train.main(tiny_run(sudoku4, tmp_path / "out", "--clock_schedule=True")[1:])
    assert str(info.value.code) == ("train.py: clock_schedule=True fits the schedule to max_minutes, which is 0: "
                                    "set --max_minutes, or --clock_schedule=False for a fixed max_steps schedule")
