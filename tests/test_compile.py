"""Ready for a GPU by construction, checked on the CPU: torch.compile traces one graph with no break
for training (halting, exploration, the Q-continue target) and one for evaluation, and a training step
between log lines never reads a value back from the device."""
import pytest
import torch
from torch._dynamo.utils import counters

import train
from model import TRM, AdamATan2, PuzzleEmbSignSGD, TRMConfig, act_loss
from test_train import tiny_run


def random_batch(B, cfg, generator):
    return dict(inputs=torch.randint(0, cfg.vocab_size, (B, cfg.seq_len), generator=generator),
                labels=torch.randint(0, cfg.vocab_size, (B, cfg.seq_len), generator=generator),
                puzzle_identifiers=torch.randint(0, cfg.num_puzzle_identifiers, (B,), generator=generator))


@pytest.mark.parametrize("no_ACT_continue", [True, False])
def test_compiled_training_and_evaluation_trace_one_graph_each_without_breaks(no_ACT_continue):
    torch._dynamo.reset()
    torch.manual_seed(0)
    cfg = TRMConfig(vocab_size=7, seq_len=9, num_puzzle_identifiers=5, hidden_size=16, num_heads=2, H_cycles=2,
                    L_cycles=1, halt_max_steps=4, puzzle_emb_ndim=16, puzzle_emb_len=1, mlp_t=True,
                    pos_encodings="none", halt_exploration_prob=0.5, no_ACT_continue=no_ACT_continue,
                    forward_dtype="float32")
    model, g = TRM(cfg), torch.Generator().manual_seed(1)
    with torch.no_grad():  # q_halt > 0 (and > q_continue) from the start: slots halt at varied steps
        model.q_head.bias.copy_(torch.tensor([1.0, 0.0]))
    step = torch.compile(model)
    opt, emb_opt = AdamATan2(model.parameters(), lr=1e-2), PuzzleEmbSignSGD(model.puzzle_emb, lr=1e-2)
    counters.clear()
    model.train()
    carry, halting = model.initial_carry(random_batch(8, cfg, g)), set()
    for _ in range(12):  # the halting pattern changes from step to step
        carry, outputs = step(carry, random_batch(8, cfg, g))
        act_loss(carry, outputs)[0].backward()
        opt.step(), opt.zero_grad(), emb_opt.step()
        halting.add(tuple(carry.halted.tolist()))
    assert len(halting) > 3, "the test must see many halting patterns"
    assert sum(counters["graph_break"].values()) == 0, dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] == 1, "one graph for every training step: no recompilation"
    assert model.puzzle_emb.weights.abs().sum() > 0, "the puzzle embedding still learns through the compiled step"
    counters.clear()
    model.eval()
    with torch.inference_mode():
        for _ in range(2):
            batch = random_batch(8, cfg, g)
            carry = model.initial_carry(batch)
            for _ in range(cfg.halt_max_steps):
                carry, outputs = step(carry, batch)
    assert sum(counters["graph_break"].values()) == 0, dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] == 1


def test_a_training_step_between_log_lines_never_reads_from_the_device(sudoku4, tmp_path, monkeypatch):
    """Every .item() / .tolist() / float(tensor) / bool(tensor) and every collective of ours, by the
    optimiser steps done when it happens: only at log steps (every 5) and checkpoint steps (every 8)."""
    steps_done, reads = [0], []
    real_step = AdamATan2.step

    def counted_step(self, *a, **kw):
        steps_done[0] += 1
        return real_step(self, *a, **kw)
    for name in ("item", "tolist", "__float__", "__bool__"):
        real = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda t, *a, _real=real, **kw: (reads.append(steps_done[0]),
                                                                                  _real(t, *a, **kw))[1])
    real_all_sum = train.all_sum
    monkeypatch.setattr(train, "all_sum", lambda *a, **kw: (reads.append(steps_done[0]), real_all_sum(*a, **kw))[1])
    monkeypatch.setattr(AdamATan2, "step", counted_step)
    train.main(tiny_run(sudoku4, tmp_path / "o", "--max_steps=30", "--log_interval=5", "--ckpt_interval=8")[1:])
    during = sorted({s for s in reads if 0 < s < 30})
    allowed = {s for s in range(1, 30) if s % 5 == 0 or s % 8 == 0}  # a checkpoint is verified before step s+1's update
    assert during and set(during) <= allowed, f"device reads after steps {sorted(set(during) - allowed)}"
    assert not {1, 2, 3, 4, 6, 7} & set(during)


def test_a_checkpoint_is_written_only_once_its_weights_gave_a_finite_loss(sudoku4, tmp_path):
    """A huge puzzle-embedding rate gives finite weights whose next loss is not finite: that state is
    never saved as 'the last good one'."""
    out = tmp_path / "o"
    with pytest.raises(SystemExit) as exit_info:
        train.main(tiny_run(sudoku4, out, "--max_steps=20", "--ckpt_interval=1", "--puzzle_emb_lr=1e30")[1:])
    message = str(exit_info.value)
    assert "loss is not finite at step" in message
    bad = int(message.split("loss is not finite at step ")[1].split(";")[0])
    if (out / "ckpt.pt").exists():
        saved = torch.load(out / "ckpt.pt", weights_only=True)
        assert saved["step"] < bad - 1 and "holds the last good state" in message
        assert torch.isfinite(saved["model"]["puzzle_emb.weights"]).all()
        assert saved["model"]["puzzle_emb.weights"].abs().max() < 1e29
    else:
        assert "no checkpoint was written yet" in message


def test_compiled_sampling_streams_puzzles_through_one_graph():
    """sample.py --compile: adaptive halting keeps the batch shape (halted slots take the next puzzle),
    so one graph serves every step, and the answers are the eager ones."""
    import numpy as np
    import sample
    torch._dynamo.reset()
    torch.manual_seed(0)
    cfg = TRMConfig(vocab_size=7, seq_len=9, num_puzzle_identifiers=5, hidden_size=16, num_heads=2, H_cycles=2,
                    L_cycles=1, halt_max_steps=4, puzzle_emb_ndim=16, puzzle_emb_len=1, mlp_t=True,
                    pos_encodings="none", forward_dtype="float64")  # float64: as few rounding differences as can be
    model = TRM(cfg).double().eval()
    with torch.no_grad():  # q_halt varies with the puzzle: slots halt at varied steps
        model.q_head.weight.normal_(0, 1.0)
        model.q_head.bias.zero_()
    puzzles = {k: v.numpy() for k, v in random_batch(40, cfg, torch.Generator().manual_seed(2)).items()}
    compiled, sizes = torch.compile(model), []
    counters.clear()
    with torch.inference_mode():
        preds, q, taken = sample.solve(compiled, puzzles, 6, halt_p=0.5, slots=8, shrink=False,
                                       on_step=lambda step, index, out, done: sizes.append(len(index)))
        eager = sample.solve(model, puzzles, 6, halt_p=0.5, slots=8)
    assert len(set(taken.tolist())) >= 3 and set(sizes) == {8}
    assert sum(counters["graph_break"].values()) == 0, dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] == 1, "one graph for every step: no recompilation"
    assert np.array_equal(preds, eager[0]) and np.array_equal(taken, eager[2]), "the same answers and exits"
    # Fusion rounds RMSNorm's float32 steps differently, and the recursion amplifies that (~1e-6 after one step).
    np.testing.assert_allclose(q, eager[1], rtol=0.05, atol=0.05)
