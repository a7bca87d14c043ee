"""train.py never loses or runs what a user has: checkpoints are data, one run per out_dir, logs kept,
other data refused on resume, every bad setting and output location one line, Ctrl-C a clean stop."""
import json
import os
import shutil
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
from test_train import error_of, one_line_error, tiny_run


class Payload:
    """A pickle that would create `marker` when unpickled by a loader that runs code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_checkpoint_is_refused_and_its_code_never_runs(sudoku4, tmp_path):
    out, marker = tmp_path / "o", tmp_path / "ran"
    train.main(tiny_run(sudoku4, out, "--max_steps=2")[1:])
    state = torch.load(out / "ckpt.pt", weights_only=True)
    state["config"]["note"] = Payload(marker)
    torch.save(state, out / "ckpt.pt")
    msg = error_of(tiny_run(sudoku4, out, "--max_steps=4", "--init_from=resume"))
    assert "was refused: it holds a Python object (posix.system)" in msg and "loaded as data only" in msg
    assert not marker.exists(), "the payload ran"


def test_a_second_run_on_the_same_out_dir_is_refused_naming_the_holder(sudoku4, tmp_path):
    out = tmp_path / "o"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time, train; lock = train.lock_out_dir(sys.argv[1]); "
                               "print('locked', flush=True); time.sleep(60)", str(out)],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        msg = error_of(tiny_run(sudoku4, out, "--max_steps=2"))
        assert f"is in use by another train.py run (PID {holder.pid})" in msg
        assert sorted(os.listdir(out)) == ["run.lock"], "the refused run wrote nothing"
    finally:
        holder.send_signal(signal.SIGKILL)  # a killed holder's lock dies with it ...
        holder.wait()
    train.main(tiny_run(sudoku4, out, "--max_steps=2")[1:])  # ... so the next run goes ahead
    assert (out / "ckpt.pt").exists()


def test_scratch_restarts_keep_every_earlier_log(sudoku4, tmp_path):
    out = tmp_path / "o"
    logs = []
    for steps in (2, 3, 4):
        if (out / "ckpt.pt").exists():
            (out / "ckpt.pt").unlink()  # a scratch start needs the checkpoint gone
        train.main(tiny_run(sudoku4, out, f"--max_steps={steps}", "--log_interval=1")[1:])
        logs.append((out / "metrics.jsonl").read_text())
    assert (out / "metrics.1.jsonl").read_text() == logs[0]
    assert (out / "metrics.2.jsonl").read_text() == logs[1]
    assert max(json.loads(line)["iter"] for line in logs[2].splitlines()) == 4


def test_resume_tolerates_a_log_line_cut_short_by_a_kill(sudoku4, tmp_path):
    out = tmp_path / "o"
    train.main(tiny_run(sudoku4, out, "--max_steps=4", "--log_interval=1", "--ckpt_interval=2")[1:])
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"iter": 5, "split": "tr')  # the kill landed inside a write
    train.main(tiny_run(sudoku4, out, "--max_steps=6", "--log_interval=1", "--init_from=resume")[1:])
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in rows if r["split"] == "train"] == [1, 2, 3, 4, 5, 6]


def test_resume_refuses_other_data_and_accepts_a_moved_copy(sudoku4, tmp_path):
    out, maze = tmp_path / "o", tmp_path / "maze"
    done = run_script("prepare_maze.py", "--size", 5, "--braid", 0, "--generate", 40, "--num_test", 8, "--out", maze)
    assert done.returncode == 0, done.stderr
    train.main(tiny_run(sudoku4, out, "--max_steps=2")[1:])
    msg = error_of(tiny_run(maze, out, "--max_steps=4", "--init_from=resume"))
    assert f"was trained on {sudoku4}" in msg and f"--data_dir {maze} now holds other data" in msg
    copy = tmp_path / "copy"
    shutil.copytree(sudoku4, copy)
    train.main(tiny_run(copy, out, "--max_steps=4", "--init_from=resume")[1:])
    assert torch.load(out / "ckpt.pt", weights_only=True)["step"] == 4


def test_resume_refuses_the_same_directory_holding_changed_data(sudoku4, tmp_path):
    data, out = tmp_path / "data", tmp_path / "o"
    shutil.copytree(sudoku4, data)
    train.main(tiny_run(data, out, "--max_steps=2")[1:])
    done = run_script("prepare_sudoku.py", "--generate", 300, "--size", 4, "--num_test", 40, "--num_aug", 3,
                      "--seed", 1, "--out", data, "--overwrite")
    assert done.returncode == 0, done.stderr
    assert "now holds changed data" in error_of(tiny_run(data, out, "--max_steps=4", "--init_from=resume"))


def test_a_misspelt_eval_split_is_refused_before_training(sudoku4, tmp_path):
    msg = error_of(tiny_run(sudoku4, tmp_path / "o", "--max_steps=2", "--eval_split=tset"))
    assert "eval_split='tset'" in msg and "(it has test, train)" in msg
    assert not (tmp_path / "o" / "ckpt.pt").exists()


@pytest.mark.parametrize("setting", ["--max_steps=-1", "--ckpt_interval=0", "--log_interval=0",
                                     "--global_batch_size=0", "--eval_interval=0", "--halt_max_steps=0",
                                     "--ema_rate=1.5", "--max_minutes=-1.0"])
def test_out_of_range_settings_are_one_line(setting):
    key = setting[2:].partition("=")[0]
    with pytest.raises(configurator.UserError, match=f"{key}=.* is out of range: use a value"):
        configurator.configure([setting])


def test_a_config_file_that_fails_names_its_path_and_line(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("lr = 1e-3\nhidden_size = 64 // 0\n")
    with pytest.raises(configurator.UserError, match=rf"{bad}:2: ZeroDivisionError"):
        configurator.configure([str(bad)])
    bad.write_text("lr = (\n")
    with pytest.raises(configurator.UserError, match=rf"{bad}:1: "):
        configurator.configure([str(bad)])
    bad.write_bytes(b"lr = 1e-3  # caf\xe9\n")
    with pytest.raises(configurator.UserError, match=rf"{bad}: byte 16 \(0xe9\) is not UTF-8"):
        configurator.configure([str(bad)])


def test_an_out_dir_that_cannot_be_made_is_one_line(sudoku4, tmp_path):
    (tmp_path / "a_file").write_text("x")
    msg = one_line_error(run_script(*tiny_run(sudoku4, tmp_path / "a_file" / "o", "--max_steps=2")))
    assert "cannot be created or written" in msg


def test_a_full_disk_at_checkpoint_time_is_one_line_and_leaves_no_temporary_file(sudoku4, tmp_path, monkeypatch):
    out = tmp_path / "o"

    def full(obj, f, *a, **kw):
        f.write(b"partial")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(torch, "save", full)
    msg = error_of(tiny_run(sudoku4, out, "--max_steps=2"))
    assert "cannot write the checkpoint (No space left on device; is the disk full?)" in msg and "was not written" in msg
    assert not (out / "ckpt.pt").exists() and not (out / "ckpt.pt.tmp").exists()


def test_nan_before_the_first_checkpoint_names_no_checkpoint(sudoku4, tmp_path, monkeypatch):
    real = train.act_loss

    def poisoned(carry, outputs, loss_type):
        loss, metrics = real(carry, outputs, loss_type)
        return loss * float("nan"), metrics
    monkeypatch.setattr(train, "act_loss", poisoned)
    msg = error_of(tiny_run(sudoku4, tmp_path / "o", "--max_steps=4"))
    assert "loss is not finite at step 1" in msg and "no checkpoint was written yet (the first comes at step" in msg


def test_ctrl_c_stops_at_the_end_of_a_step_with_a_checkpoint_and_the_resume_command(sudoku4, tmp_path):
    out = tmp_path / "o"
    argv = tiny_run(sudoku4, out, "--max_steps=100000", "--log_interval=1", "--ckpt_interval=100000")
    proc = subprocess.Popen([sys.executable, *argv], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "metrics.jsonl").exists() and time.time() < deadline:  # training has begun
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "Traceback" not in stderr, stderr
    last = stderr.strip().splitlines()[-1]
    step = torch.load(out / "ckpt.pt", weights_only=True)["step"]
    assert f"interrupted at step {step}; {out / 'ckpt.pt'} holds it; continue with: python train.py" in last
    assert last.endswith("--init_from=resume")
    logged = [json.loads(line)["iter"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(logged) == step, "the checkpoint is of the last step trained"


def test_a_test_split_without_labels_gives_predictions_not_a_zero_score(tmp_path, capsys):
    from test_prepare_arc import _kaggle, build
    data = build(tmp_path, _kaggle(tmp_path, solutions=False))
    out = tmp_path / "o"
    train.main([f"--data_dir={data}", f"--out_dir={out}", "--device=cpu", "--dtype=float32", "--compile=False",
                "--hidden_size=16", "--num_heads=2", "--puzzle_emb_ndim=16", "--H_cycles=1", "--L_cycles=1",
                "--halt_max_steps=1", "--global_batch_size=8", "--max_steps=2"])
    captured = capsys.readouterr()
    printed = captured.out + captured.err
    assert "eval @ 2: no labels: predictions and submission.json only (3 tasks" in printed
    assert "exact 0.00%" not in printed
    final = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert final["labelled"] == 0.0 and "exact_accuracy" not in final
    assert sorted(json.loads((out / "submission.json").read_text())) == ["ev0", "ev1", "ev2"]
    import sample  # and sample.py says the same, without a traceback
    sample.main([f"--out_dir={out}", "--show=1", "--color=never"])
    assert "answered (1 steps); no known answers or rules to judge them by" in capsys.readouterr().out
    sample.main([f"--out_dir={out}", "--sweep=1,2", f"--chart={tmp_path / 'sweep.png'}"])
    assert "the chart shows time only" in capsys.readouterr().out
    assert (tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"


def test_a_corrupt_log_line_before_the_last_is_named_not_dropped(sudoku4, tmp_path):
    out = tmp_path / "o"
    train.main(tiny_run(sudoku4, out, "--max_steps=4", "--log_interval=1", "--ckpt_interval=2")[1:])
    lines = (out / "metrics.jsonl").read_text().splitlines()
    for bad in ('{"iter": 2, "split": "train", CORRUPT', '{"iter": "2", "split": "train"}'):
        text = "\n".join(lines[:1] + [bad] + lines[1:]) + "\n"
        (out / "metrics.jsonl").write_text(text)
        msg = error_of(tiny_run(sudoku4, out, "--max_steps=6", "--log_interval=1", "--init_from=resume"))
        assert f"{out / 'metrics.jsonl'}:2: not a log record of train.py" in msg
        assert (out / "metrics.jsonl").read_text() == text, "the log is left as it was"


@pytest.mark.parametrize("damage", ["config", "carry", "loader", "step", "model"])
def test_a_checkpoint_of_plain_data_in_another_layout_is_one_line(sudoku4, tmp_path, damage):
    out = tmp_path / "o"
    train.main(tiny_run(sudoku4, out, "--max_steps=2")[1:])
    state = torch.load(out / "ckpt.pt", weights_only=True)
    if damage == "config":
        state["config"] = 5
    elif damage == "step":
        state["step"] = "x"
    elif damage == "model":
        state["model"] = {}
    else:
        del state[damage]
    torch.save(state, out / "ckpt.pt")
    msg = error_of(tiny_run(sudoku4, out, "--max_steps=4", "--init_from=resume"))
    assert "is not a train.py checkpoint" in msg or "does not hold what train.py writes" in msg


def test_resume_refuses_a_change_anywhere_in_the_training_arrays(sudoku4, tmp_path):
    data, out = tmp_path / "data", tmp_path / "o"
    shutil.copytree(sudoku4, data)
    train.main(tiny_run(data, out, "--max_steps=2")[1:])
    inputs = np.load(data / "train" / "all__inputs.npy")
    inputs[6] = inputs[7]  # a row no sample of 1024 rows would read
    np.save(data / "train" / "all__inputs.npy", inputs)
    assert "now holds changed data" in error_of(tiny_run(data, out, "--max_steps=4", "--init_from=resume"))


def test_a_scratch_restart_keeps_the_config_beside_its_log(sudoku4, tmp_path):
    out = tmp_path / "o"
    train.main(tiny_run(sudoku4, out, "--max_steps=2", "--lr=1e-3")[1:])
    (out / "ckpt.pt").unlink()
    train.main(tiny_run(sudoku4, out, "--max_steps=2", "--lr=2e-3")[1:])
    assert json.loads((out / "config.1.json").read_text())["lr"] == 1e-3
    assert json.loads((out / "config.json").read_text())["lr"] == 2e-3


def test_a_short_write_reported_by_torch_save_is_one_line(sudoku4, tmp_path, monkeypatch):
    def short(obj, f, *a, **kw):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 486144 vs 486032")
    monkeypatch.setattr(torch, "save", short)
    msg = error_of(tiny_run(sudoku4, tmp_path / "o", "--max_steps=2"))
    assert "cannot write the checkpoint" in msg and "is the disk full?" in msg and "start again" in msg
    assert not (tmp_path / "o" / "ckpt.pt.tmp").exists()


def test_the_printed_resume_command_is_quoted_for_the_shell(monkeypatch):
    monkeypatch.setattr(configurator, "configure",
                        lambda argv, defaults, help_text: dict(train.DEFAULTS, out_dir="my dir"))

    def interrupted(C):
        raise train.Interrupted("interrupted at step 3; my dir/ckpt.pt holds it")
    monkeypatch.setattr(train, "train", interrupted)
    with pytest.raises(SystemExit) as info:
        train.main(["--out_dir=my dir"])
    assert str(info.value).endswith("continue with: python train.py '--out_dir=my dir' --init_from=resume")
