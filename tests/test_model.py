"""The algorithm's invariants: what TRM's recursion, halting, losses and optimisers must guarantee."""
import math

import pytest
import torch

import model as M


def tiny_config(**overrides):
    cfg = dict(vocab_size=6, seq_len=16, num_puzzle_identifiers=5, hidden_size=32, num_heads=2, H_cycles=3,
               L_cycles=2, halt_max_steps=4, halt_exploration_prob=0.0, puzzle_emb_ndim=32, puzzle_emb_len=2,
               pos_encodings="rope", forward_dtype="float64")
    return M.TRMConfig(**{**cfg, **overrides})


def tiny_batch(cfg, B=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randint(1, cfg.vocab_size, (B, cfg.seq_len), generator=g, dtype=torch.int32)
    labels = torch.randint(1, cfg.vocab_size, (B, cfg.seq_len), generator=g, dtype=torch.int32)
    labels[:, : cfg.seq_len // 4] = M.IGNORE_LABEL_ID
    ids = torch.randint(0, cfg.num_puzzle_identifiers, (B,), generator=g, dtype=torch.int32)
    return dict(inputs=inputs, labels=labels, puzzle_identifiers=ids)


def tiny_model(seed=0, **overrides):
    torch.manual_seed(seed)
    model = M.TRM(tiny_config(**overrides))
    with torch.no_grad():  # non-zero heads and puzzle vectors, so every path carries signal
        model.q_head.weight.normal_(0, 0.3)
        model.q_head.bias.zero_()
        model.puzzle_emb.weights.normal_()
    return model


def record_net_calls(model):
    """Wrap f to log, per application, whether autograd was recording."""
    calls, forward = [], model.net.forward

    def logged(h, injection, rope):
        calls.append(torch.is_grad_enabled())
        return forward(h, injection, rope)

    model.net.forward = logged
    return calls


def test_only_the_last_recursion_is_back_propagated():
    model = tiny_model()
    calls = record_net_calls(model)
    batch = tiny_batch(model.config)
    model.train()
    carry = model.initial_carry(batch)
    carry, outputs = model(carry, batch)
    T, n = model.config.H_cycles, model.config.L_cycles
    assert calls == [False] * ((T - 1) * (n + 1)) + [True] * (n + 1)


def test_no_gradient_reaches_the_incoming_carry_and_the_new_carry_is_detached():
    model = tiny_model()
    batch = tiny_batch(model.config)
    model.train()
    carry = model.initial_carry(batch)
    carry, _ = model(carry, batch)  # every slot now holds a running puzzle
    carry.halted[:] = False
    carry.y.requires_grad_()
    carry.z.requires_grad_()
    new_carry, outputs = model(carry, batch)
    M.act_loss(new_carry, outputs)[0].backward()
    assert carry.y.grad is None and carry.z.grad is None, "gradient leaked into the first T-1 rounds"
    assert model.embed_tokens.grad.abs().sum() > 0, "the last recursion must still train the network"
    assert not new_carry.y.requires_grad and not new_carry.z.requires_grad
    assert new_carry.y.grad_fn is None and new_carry.z.grad_fn is None


def test_with_one_recursion_the_gradient_does_reach_the_carry():
    # The counterpart of the test above: with T = 1 the single round is back-propagated.
    model = tiny_model(H_cycles=1)
    batch = tiny_batch(model.config)
    model.train()
    carry, _ = model(model.initial_carry(batch), batch)
    carry.halted[:] = False
    carry.y.requires_grad_()
    new_carry, outputs = model(carry, batch)
    M.act_loss(new_carry, outputs)[0].backward()
    assert carry.y.grad is not None and carry.y.grad.abs().sum() > 0


def test_halted_slot_restarts_from_initial_state_with_new_puzzle_running_slot_keeps_its_own():
    model = tiny_model()
    model.eval()
    cfg = model.config
    old, new = tiny_batch(cfg, seed=1), tiny_batch(cfg, seed=2)
    with torch.no_grad():
        carry, _ = model(model.initial_carry(old), old)  # all slots now hold `old`, 1 step done
        carry.halted = torch.tensor([True, False, True, False])
        mixed, _ = model(carry, new)
        fresh, _ = model(model.initial_carry(new), new)        # `new` from the initial states
        continued = M.Carry(carry.y, carry.z, carry.steps, torch.zeros(4, dtype=torch.bool), carry.data)
        continued, _ = model(continued, new)                   # `old`, second step
    for slot, restarted in enumerate([True, False, True, False]):
        ref = fresh if restarted else continued
        source = new if restarted else old
        for k in source:
            assert torch.equal(mixed.data[k][slot], source[k][slot]), (slot, k)
        torch.testing.assert_close(mixed.y[slot], ref.y[slot])
        torch.testing.assert_close(mixed.z[slot], ref.z[slot])
        assert mixed.steps[slot] == (1 if restarted else 2)


def run_until_halt(model, batch, max_calls=50):
    carry, halted_at = model.initial_carry(batch), torch.zeros(len(batch["inputs"]), dtype=torch.int32)
    for _ in range(max_calls):
        carry, _ = model(carry, batch)
        first = carry.halted & (halted_at == 0)
        halted_at[first] = carry.steps[first]
        if (halted_at > 0).all():
            return halted_at
    raise AssertionError("never halted")


def test_eval_never_halts_before_halt_max_steps_while_training_halts_on_q():
    model = tiny_model()
    with torch.no_grad():
        model.q_head.bias.fill_(20.0)  # q_halt >> 0: "halt now"
    batch = tiny_batch(model.config)
    with torch.no_grad():
        model.train()
        assert run_until_halt(model, batch).tolist() == [1, 1, 1, 1]
        model.eval()
        assert run_until_halt(model, batch).tolist() == [model.config.halt_max_steps] * 4


def test_exploration_minimum_steps_lie_in_2_to_halt_max_steps():
    model = tiny_model(halt_exploration_prob=1.0, halt_max_steps=6)
    with torch.no_grad():
        model.q_head.bias.fill_(20.0)  # the head always wants to halt; only exploration delays it
    batch = tiny_batch(model.config, B=400)
    torch.manual_seed(0)
    with torch.no_grad():
        model.train()
        halted_at = run_until_halt(model, batch)
    assert halted_at.min() >= 2 and halted_at.max() <= 6
    assert set(halted_at.tolist()) == {2, 3, 4, 5, 6}, "the minimum is drawn uniformly from [2, N_sup]"


def test_q_continue_target_costs_one_extra_forward_and_only_when_enabled():
    for no_continue, expected_calls in [(True, 1), (False, 2)]:
        model = tiny_model(no_ACT_continue=no_continue)
        calls = record_net_calls(model)
        batch = tiny_batch(model.config)
        model.train()
        _, outputs = model(model.initial_carry(batch), batch)
        per_step = model.config.H_cycles * (model.config.L_cycles + 1)
        assert len(calls) == expected_calls * per_step
        assert ("target_q_continue" in outputs) == (not no_continue)
        if not no_continue:
            t = outputs["target_q_continue"]
            assert ((t > 0) & (t < 1)).all() and not t.requires_grad


def test_lm_loss_is_the_per_puzzle_mean_over_supervised_tokens_summed_over_the_batch():
    model = tiny_model()
    batch = tiny_batch(model.config)
    model.train()
    carry, outputs = model(model.initial_carry(batch), batch)
    _, metrics = M.act_loss(carry, outputs, "softmax")
    expected = 0.0
    for b in range(4):
        keep = batch["labels"][b] != M.IGNORE_LABEL_ID
        expected += torch.nn.functional.cross_entropy(
            outputs["logits"][b][keep].float(), batch["labels"][b][keep].long(), reduction="mean")
    torch.testing.assert_close(metrics["lm_loss"], expected.detach())


def test_metrics_count_only_halted_puzzles_and_exactness_drives_the_halt_target():
    model = tiny_model()
    batch = tiny_batch(model.config)
    model.train()
    carry, outputs = model(model.initial_carry(batch), batch)
    outputs["preds"] = torch.where(batch["labels"] == M.IGNORE_LABEL_ID, 0, batch["labels"])
    outputs["preds"][1, -1] = (outputs["preds"][1, -1] % 5) + 1  # puzzle 1 has one wrong token
    carry.halted = torch.tensor([True, True, False, False])
    loss, metrics = M.act_loss(carry, outputs)
    assert metrics["count"] == 2 and metrics["exact_accuracy"] == 1
    supervised = (batch["labels"][1] != M.IGNORE_LABEL_ID).sum()
    torch.testing.assert_close(metrics["accuracy"], (1 + (supervised - 1) / supervised).float())
    target = torch.tensor([1.0, 0.0, 1.0, 1.0])  # slots 2 and 3 are right too; q loss covers all slots
    expected_q = torch.nn.functional.binary_cross_entropy_with_logits(outputs["q_halt_logits"], target, reduction="sum")
    torch.testing.assert_close(metrics["q_halt_loss"], expected_q)


def test_stablemax_matches_its_definition_on_hand_picked_values():
    logits = torch.tensor([[0.0, 1.0, -1.0, 3.0]])
    s = torch.tensor([1.0, 2.0, 0.5, 4.0], dtype=torch.float64)  # x+1 for x>=0, 1/(1-x) below
    torch.testing.assert_close(M.log_stablemax(logits.double()), torch.log(s / s.sum()).unsqueeze(0))
    ce = M.stablemax_cross_entropy(logits.unsqueeze(0), torch.tensor([[1]]))
    torch.testing.assert_close(ce, -torch.log(torch.tensor([[2 / 7.5]], dtype=torch.float64)))
    ignored = M.stablemax_cross_entropy(logits.unsqueeze(0), torch.tensor([[M.IGNORE_LABEL_ID]]))
    assert ignored.item() == 0.0


def test_stablemax_gradient_is_finite_where_a_logit_is_exactly_one():
    for dtype in (torch.float32, torch.bfloat16):
        logits = torch.tensor([[[1.0, 0.5, -2.0]]], dtype=dtype, requires_grad=True)
        M.stablemax_cross_entropy(logits, torch.tensor([[0]])).sum().backward()
        assert torch.isfinite(logits.grad).all(), logits.grad


def test_adam_atan2_matches_its_formula_step_by_step():
    lr, (b1, b2), wd = 0.05, (0.9, 0.95), 0.1
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    opt = M.AdamATan2([p], lr=lr, betas=(b1, b2), weight_decay=wd)
    ref, m, v = p.detach().clone(), torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    for t in range(1, 6):
        grad = torch.tensor([0.3 * t, -1.0, 1e-9 * t], dtype=torch.float64)  # tiny grads: no eps blow-up
        p.grad = grad.clone()
        opt.step()
        ref = ref * (1 - lr * wd)
        m, v = b1 * m + (1 - b1) * grad, b2 * v + (1 - b2) * grad**2
        v_hat = v / (1 - b2**t)
        ref = ref - lr / (1 - b1**t) * torch.atan2(m, v_hat.sqrt())
        torch.testing.assert_close(p.detach(), ref, rtol=1e-12, atol=1e-12)
    assert (p.detach() - ref).abs().max() < 1e-12 and abs(p[2].item() - 0.5 * (1 - lr * wd) ** 5) > 1e-3


def test_ema_after_k_steps_equals_its_closed_form_and_swaps_back():
    model = tiny_model()
    rate, k = 0.9, 5
    ema = M.EMA(model, rate=rate)
    history = [model.lm_head.weight.detach().clone()]
    for step in range(k):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1 * (step + 1))
        ema.update(model)
        history.append(model.lm_head.weight.detach().clone())
    closed = rate**k * history[0] + sum((1 - rate) * rate ** (k - i) * history[i] for i in range(1, k + 1))
    torch.testing.assert_close(ema.shadow["lm_head.weight"], closed)
    live = model.lm_head.weight.detach().clone()
    with ema.swapped_in(model):
        torch.testing.assert_close(model.lm_head.weight.detach(), closed)
    assert torch.equal(model.lm_head.weight.detach(), live)


def test_sign_sgd_updates_only_batch_rows_with_summed_duplicate_gradients():
    weights = torch.ones(4, 2)
    ids = torch.tensor([1, 3, 1])
    grad = torch.tensor([[1.0, -1.0], [2.0, 2.0], [-3.0, 0.5]])  # row 1: sum (-2, -0.5)
    M.sign_sgd_rows_(weights, ids, grad, lr=0.1, weight_decay=0.5)
    decayed = 1 * (1 - 0.1 * 0.5)
    assert torch.equal(weights[0], torch.ones(2)) and torch.equal(weights[2], torch.ones(2))
    torch.testing.assert_close(weights[1], torch.tensor([decayed + 0.1, decayed + 0.1]))
    torch.testing.assert_close(weights[3], torch.tensor([decayed - 0.1, decayed - 0.1]))


def test_puzzle_table_is_a_zero_initialised_buffer_outside_the_main_optimiser():
    model = M.TRM(tiny_config())
    assert "puzzle_emb.weights" in dict(model.named_buffers())
    assert all("puzzle_emb" not in n for n, _ in model.named_parameters())
    assert model.puzzle_emb.weights.abs().sum() == 0
    assert model.q_head.weight.abs().sum() == 0 and (model.q_head.bias == -5).all()


def test_bfloat16_forward_keeps_float32_masters_and_float32_q_values():
    model = tiny_model(forward_dtype="bfloat16")
    batch = tiny_batch(model.config)
    model.train()
    carry, outputs = model(model.initial_carry(batch), batch)
    assert carry.y.dtype == torch.bfloat16 and outputs["logits"].dtype == torch.bfloat16
    assert outputs["q_halt_logits"].dtype == torch.float32
    M.act_loss(carry, outputs)[0].backward()
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in model.parameters())


@pytest.mark.parametrize("field, value, allowed", [
    ("hidden_size", 30, "multiple of 2\\*num_heads"), ("loss_type", "mse", "stablemax \\| softmax"),
    ("pos_encodings", "alibi", "rope \\| learned \\| none"), ("seq_len", 0, ">= 1"), ("vocab_size", 0, ">= 1"),
    ("forward_dtype", "int8", "float32"), ("halt_exploration_prob", 1.5, "probability"),
])
def test_config_that_cannot_work_names_the_field_and_allowed_values(field, value, allowed):
    with pytest.raises(ValueError, match=f"TRMConfig.{field}=.*allowed: .*{allowed}"):
        tiny_config(**{field: value})


def test_config_combination_the_official_code_ignores_gets_a_warning():
    with pytest.warns(UserWarning, match="mlp_t=True.*'rope' has no effect"):
        tiny_config(mlp_t=True, pos_encodings="rope")


@pytest.mark.parametrize("change, message", [
    (lambda b: b["inputs"].__setitem__((0, 0), 6), "token ids outside \\[0, vocab_size=6\\)"),
    (lambda b: b.update(inputs=b["inputs"][:, :10], labels=b["labels"][:, :10]), "expected \\(batch, seq_len=16\\)"),
    (lambda b: b["puzzle_identifiers"].__setitem__(0, 5), "puzzle identifiers outside \\[0, num_puzzle_identifiers=5\\)"),
    (lambda b: b["labels"].__setitem__((0, 5), 9), "labels outside"),
])
def test_bad_batch_raises_a_clear_error(change, message):
    model = tiny_model()
    batch = tiny_batch(model.config)
    model.check_batch(batch)
    change(batch)
    with pytest.raises(ValueError, match=message):
        model.check_batch(batch)


def test_paper_parameter_counts():
    counts = {
        "sudoku mlp-t": (dict(vocab_size=11, seq_len=81, mlp_t=True, pos_encodings="none"), 5_028_866),
        "sudoku attention": (dict(vocab_size=11, seq_len=81), 6_828_034),
        "maze attention": (dict(vocab_size=6, seq_len=900), 6_822_914),
        "arc attention": (dict(vocab_size=12, seq_len=900, num_puzzle_identifiers=1000), 6_829_058),
    }
    for name, (cfg, expected) in counts.items():
        assert M.TRM(M.TRMConfig(**cfg)).num_params() == expected, name


def test_truncated_normal_init_has_the_requested_std_and_bounds():
    t = M.trunc_normal_(torch.empty(400_000, dtype=torch.float64), std=0.5)
    assert abs(t.std().item() - 0.5) < 0.005
    # N(0,1) cut at +-2 has variance 1 - 4*phi(2)/P(|N|<2); the init widens sigma to undo that.
    widened = 0.5 / math.sqrt(1 - 4 * math.exp(-2) / math.sqrt(2 * math.pi) / math.erf(math.sqrt(2)))
    bound = t.abs().max().item()
    assert 0.999 * 2 * widened < bound <= 2 * widened + 1e-12


@pytest.mark.parametrize("dim", [-1, 1])
def test_the_written_out_backwards_are_the_true_gradients(dim):
    """RMSNorm and SiluGate carry hand-written backward passes (for speed). SiluGate: gradcheck in
    float64. RMSNorm computes in float32 whatever its input (as officially): against autograd there."""
    from model import RMSNorm, SiluGate
    torch.manual_seed(0)
    h = torch.randn(3, 6, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: SiluGate.apply(t, dim), (h,))
    h32 = h.detach().float().requires_grad_()
    g = torch.randn_like(h32)
    official = h32 * torch.rsqrt(h32.square().mean(dim, keepdim=True) + 1e-5)
    (expected,) = torch.autograd.grad(official, h32, g)
    ours = RMSNorm.apply(h32, 1e-5, dim)
    assert torch.equal(ours, official)  # the forward is the official op order, bit for bit
    torch.testing.assert_close(torch.autograd.grad(ours, h32, g)[0], expected, rtol=1e-5, atol=1e-6)


def test_mlp_t_without_transposes_gives_the_official_sums():
    """The official MLP-t transposes h to (B, D, L) and applies the SwiGLU on its last axis."""
    from model import SwiGLU
    torch.manual_seed(0)
    mlp = SwiGLU(10, 4).double()
    h = torch.randn(3, 10, 16, dtype=torch.float64)
    official = mlp(h.transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(mlp.over_tokens(h), official, rtol=1e-12, atol=1e-12)
