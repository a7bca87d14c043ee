"""Data parallelism: two gloo processes train exactly like one, resume per rank, and never hang."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import train
from conftest import ROOT, run_script
from test_train import read_metrics, tiny_run

# Exploration off: its draws differ by rank on purpose (the official code seeds each rank apart).
SAME = ["--halt_exploration_prob=0.0", "--log_interval=3", "--eval_interval=100", "--ckpt_interval=1000"]


def torchrun(nproc, *args, timeout=240):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                           *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def load(out):
    return torch.load(out / "ckpt.pt", map_location="cpu", weights_only=False)


def max_difference(a, b):
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def two_ranks(sudoku4, tmp_path_factory):
    """The same 8 steps of a 16-puzzle global batch on 2 processes, and (as a resume) 4 + 4 steps."""
    out = tmp_path_factory.mktemp("ddp")
    done = torchrun(2, *tiny_run(sudoku4, out / "two", "--max_steps=8", *SAME))
    assert done.returncode == 0, done.stderr[-3000:]
    half = torchrun(2, *tiny_run(sudoku4, out / "resumed", "--max_steps=4", *SAME))
    assert half.returncode == 0, half.stderr[-3000:]
    rest = torchrun(2, *tiny_run(sudoku4, out / "resumed", "--max_steps=8", "--init_from=resume", *SAME))
    assert rest.returncode == 0, rest.stderr[-3000:]
    return out


def test_two_processes_train_like_one(sudoku4, two_ranks, tmp_path):
    done = run_script(*tiny_run(sudoku4, tmp_path / "one", "--max_steps=8", *SAME))
    assert done.returncode == 0, done.stderr
    one, two = load(tmp_path / "one"), load(two_ranks / "two")
    # The model includes the puzzle-embedding table, which only stays equal if sign-SGD gathers all ranks' rows.
    assert max_difference(one["model"], two["model"]) < 1e-5
    assert max_difference(one["ema"]["shadow"], two["ema"]["shadow"]) < 1e-5
    assert one["model"]["puzzle_emb.weights"].abs().sum() > 0  # the embedding really was trained
    rows_one, rows_two = read_metrics(tmp_path / "one"), read_metrics(two_ranks / "two")
    assert [(r["iter"], r["split"]) for r in rows_one] == [(r["iter"], r["split"]) for r in rows_two]
    for a, b in zip(rows_one, rows_two):
        assert a.keys() == b.keys()
        assert all(abs(a[k] - b[k]) < 1e-5 for k in a if k != "split"), (a, b)
    assert rows_two[-1]["count"] == 40  # the evaluation saw every test puzzle once, across both ranks


def test_each_rank_keeps_its_own_carry_and_resumes_exactly(two_ranks):
    whole, resumed = load(two_ranks / "two"), load(two_ranks / "resumed")
    assert len(whole["carry"]) == 2
    assert not torch.equal(whole["carry"][0]["data"]["inputs"], whole["carry"][1]["data"]["inputs"])
    assert max_difference(whole["model"], resumed["model"]) < 1e-6
    for a, b in zip(whole["carry"], resumed["carry"]):
        assert torch.equal(a["steps"], b["steps"]) and torch.equal(a["data"]["inputs"], b["data"]["inputs"])
    assert read_metrics(two_ranks / "two")[-1] == read_metrics(two_ranks / "resumed")[-1]


def test_a_log_window_split_by_a_stop_is_summed_over_every_rank_on_resume(sudoku4, two_ranks, tmp_path):
    # max_minutes stops both ranks after step 1 (ranks agree on stopping at log and checkpoint steps,
    # here every step), inside the first log window (steps 1-3): each rank's share of that window is
    # in the checkpoint and comes back to that rank.
    stopped = torchrun(2, *tiny_run(sudoku4, tmp_path / "o", "--max_steps=8", "--max_minutes=1e-6", *SAME,
                                    "--ckpt_interval=1"))
    assert stopped.returncode == 0 and "reached at step 1" in stopped.stdout + stopped.stderr, stopped.stderr[-2000:]
    rest = torchrun(2, *tiny_run(sudoku4, tmp_path / "o", "--max_steps=8", "--init_from=resume", *SAME))
    assert rest.returncode == 0, rest.stderr[-2000:]

    def train_rows(out):
        return [{k: v for k, v in r.items() if k != "examples_per_s"} for r in read_metrics(out) if r["split"] == "train"]
    assert train_rows(tmp_path / "o") == train_rows(two_ranks / "two")


def test_resuming_with_another_number_of_processes_is_refused(sudoku4, two_ranks, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "ckpt.pt").write_bytes((two_ranks / "two" / "ckpt.pt").read_bytes())
    done = run_script(*tiny_run(sudoku4, copy, "--max_steps=12", "--init_from=resume", *SAME))
    assert done.returncode != 0
    assert "written by 2 process(es) and this run has 1" in done.stderr and "--nproc_per_node=2" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("env, setting, device, message", [
    ({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "3"}, {}, "cpu", "does not split evenly over 3 processes"),
    ({}, {"backend": "nccl"}, "cpu", "backend=nccl needs (CUDA GPUs|device=cuda)"),  # without / with CUDA here
    ({}, {"backend": "mpi"}, "cpu", "use auto, nccl or gloo"),
    ({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2"}, {}, "mps", "data parallelism over MPS is not supported"),
])
def test_bad_data_parallel_settings_are_one_clear_error(monkeypatch, env, setting, device, message):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    C = dict(train.DEFAULTS, global_batch_size=16, **setting)
    with pytest.raises(train.UserError, match=message):
        train.init_distributed(C, device)


def children(pid):
    """{rank: pid} of the worker processes torchrun started."""
    ranks = {}
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = dict(v.split(b"=", 1) for v in f.read().split(b"\0") if b"=" in v)
        except (OSError, ValueError):
            continue
        if ppid == pid and b"RANK" in env:
            ranks[int(env[b"RANK"])] = int(entry)
    return ranks


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the worker processes through /proc (Linux)")
def test_a_rank_that_dies_ends_the_run_instead_of_hanging(sudoku4, tmp_path):
    out = tmp_path / "dead"
    args = tiny_run(sudoku4, out, "--max_steps=100000", "--log_interval=1", "--ddp_timeout_minutes=1")
    launcher = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                                 *map(str, args)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        deadline = time.time() + 120
        while not (out / "metrics.jsonl").exists():  # both ranks are training (the log needs both)
            assert launcher.poll() is None and time.time() < deadline, "training never started"
            time.sleep(0.2)
        workers = children(launcher.pid)
        assert sorted(workers) == [0, 1]
        os.kill(workers[1], signal.SIGKILL)
        start = time.time()
        _, stderr = launcher.communicate(timeout=90)
        assert launcher.returncode != 0
        assert time.time() - start < 90
        assert not any(os.path.exists(f"/proc/{p}") and open(f"/proc/{p}/stat").read().split()[2] != "Z"
                       for p in workers.values())  # rank 0 is gone too
        assert "Signal 9" in stderr or "SIGKILL" in stderr or "exitcode" in stderr
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
