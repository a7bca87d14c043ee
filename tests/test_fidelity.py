"""model.py replays the official TRM code's outputs (tests/fixtures, float64) within 1e-5.

Each fixture holds official weights, a batch, four training-mode supervision steps (carry, logits,
q-values, loss, metrics), the first step's gradients, an eval rollout, one sign-SGD step and a
stable-max check. tests/fixtures/README.md says what they hold and how the official code made them."""
from pathlib import Path

import pytest
import torch

import model as M

FIXTURES = Path(__file__).resolve().parent / "fixtures"
VARIANTS = ["mlp_t", "attn_rope", "attn_learned_qcont"]
TOL = dict(rtol=1e-5, atol=1e-5)



def load(variant):
    return torch.load(FIXTURES / f"{variant}.pt", weights_only=True)


def build(fx):
    cfg = {k: v for k, v in fx["config"].items() if k in M.config_fields()}
    cfg["loss_type"] = fx["loss_config"]["loss_type"].replace("_cross_entropy", "")
    model = M.TRM(M.TRMConfig(**cfg))
    return M.load_official_state_dict(model, fx["state_dict"])


def close(actual, expected, what):
    torch.testing.assert_close(actual, expected.to(actual.dtype), **TOL, msg=lambda m: f"{what}: {m}")


def check_step(carry, outputs, loss, metrics, ref, what):
    assert torch.equal(carry.halted, ref["carry"]["halted"]), f"{what}: halted"
    assert torch.equal(carry.steps, ref["carry"]["steps"]), f"{what}: steps"
    close(carry.y, ref["carry"]["z_H"], f"{what} y (z_H)")
    close(carry.z, ref["carry"]["z_L"], f"{what} z (z_L)")
    for k, v in ref["carry"]["current_data"].items():
        assert torch.equal(carry.data[k], v), f"{what}: current_data[{k}]"
    for k, v in ref["outputs"].items():
        if k == "preds":
            assert torch.equal(outputs[k], v), f"{what}: preds"
        else:
            assert outputs[k].dtype == v.dtype, f"{what}: {k} dtype {outputs[k].dtype} vs {v.dtype}"
            close(outputs[k], v, f"{what} {k}")
    assert set(outputs) - {"preds"} >= set(ref["outputs"]) - {"preds"}
    assert "target_q_continue" in outputs if "target_q_continue" in ref["outputs"] else True
    assert loss.dtype == ref["loss"].dtype, f"{what}: loss dtype"
    close(loss.detach(), ref["loss"], f"{what} loss")
    assert set(metrics) == set(ref["metrics"]), f"{what}: metric names {set(metrics)} vs {set(ref['metrics'])}"
    for k, v in ref["metrics"].items():
        close(metrics[k], v, f"{what} metric {k}")


@pytest.mark.parametrize("variant", VARIANTS)
def test_training_steps_match_official(variant):
    fx = load(variant)
    model, batch = build(fx), fx["batch"]
    loss_type = model.config.loss_type
    model.train()
    carry = model.initial_carry(batch)
    for call, ref in enumerate(fx["steps"], start=1):
        carry, outputs = model(carry, batch)
        loss, metrics = M.act_loss(carry, outputs, loss_type)
        check_step(carry, outputs, loss, metrics, ref, f"{variant} train call {call}")
        assert bool(carry.halted.all()) == bool(ref["all_finish"])
        if call == 1:
            loss.backward()
            grads = {M.official_to_ours(k): v for k, v in fx["grads_call1"].items()}
            local_ids, local_rows = model.puzzle_emb.local
            close(local_rows.grad, grads.pop("puzzle_emb.local_weights"), f"{variant} puzzle-emb grad")
            assert torch.equal(local_ids, ref["puzzle_emb_local"]["local_ids"].to(local_ids.dtype))
            for name, p in model.named_parameters():
                assert p.grad.dtype == torch.float32
                close(p.grad, grads.pop(name), f"{variant} grad {name}")
            assert not grads, f"official gradients with no parameter here: {list(grads)}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_eval_rollout_matches_official(variant):
    fx = load(variant)
    model, batch, ref = build(fx), fx["batch"], fx["eval"]
    model.eval()
    with torch.inference_mode():
        carry, calls = model.initial_carry(batch), 0
        while True:
            carry, outputs = model(carry, batch)
            step_ref = ref["per_step"][calls]
            calls += 1
            assert torch.equal(carry.halted, step_ref["halted"]) and torch.equal(carry.steps, step_ref["steps"])
            close(outputs["logits"], step_ref["logits"], f"{variant} eval step {calls} logits")
            close(outputs["q_halt_logits"], step_ref["q_halt_logits"], f"{variant} eval step {calls} q_halt")
            if carry.halted.all():
                break
        loss, metrics = M.act_loss(carry, outputs, model.config.loss_type)
    assert calls == ref["inference_steps"] == model.config.halt_max_steps
    check_step(carry, outputs, loss, metrics,
               dict(carry=ref["carry"], outputs={k: ref[k] for k in ("logits", "preds", "q_halt_logits",
                                                                     "q_continue_logits")},
                    loss=ref["loss"], metrics=ref["metrics"]), f"{variant} eval final")


@pytest.mark.parametrize("variant", VARIANTS)
def test_sign_sgd_step_matches_official(variant):
    fx = load(variant)
    ref = fx["sign_sgd"]
    model = build(fx)
    assert torch.equal(model.puzzle_emb.weights, ref["weights_before"])
    # The optimiser's own path: forward, backward, step on the leaf rows it collected.
    model.train()
    carry, outputs = model(model.initial_carry(fx["batch"]), fx["batch"])
    M.act_loss(carry, outputs, model.config.loss_type)[0].backward()
    opt = M.PuzzleEmbSignSGD(model.puzzle_emb, lr=ref["lr"], weight_decay=ref["weight_decay"])
    opt.step()
    close(model.puzzle_emb.weights, ref["weights_after"], f"{variant} sign-SGD weights")
    assert model.puzzle_emb.local is None, "the step consumes the collected rows"
    # And the update rule alone on the official gradient.
    weights = ref["weights_before"].clone()
    M.sign_sgd_rows_(weights, ref["local_ids"], ref["local_weights_grad"], ref["lr"], ref["weight_decay"])
    assert torch.equal(weights, ref["weights_after"])


def test_stablemax_matches_official():
    ref = load("mlp_t")["stablemax"]
    logits, labels = ref["logits"], ref["labels"]
    close(M.log_stablemax(logits.to(torch.float64)), ref["log_stablemax"], "log_stablemax")
    sm = M.stablemax_cross_entropy(logits, labels)
    assert sm.dtype == torch.float64
    close(sm, ref["stablemax_cross_entropy"], "stablemax CE")
    close(M.softmax_cross_entropy(logits, labels), ref["softmax_cross_entropy"], "softmax CE")


def test_official_state_dict_round_trip_and_mismatch_message():
    fx = load("attn_rope")
    model = build(fx)
    for name, value in fx["state_dict"].items():
        assert torch.equal(model.state_dict()[M.official_to_ours(name)], value)
    compiled_names = {"_orig_mod." + k: v for k, v in fx["state_dict"].items()}
    M.load_official_state_dict(model, compiled_names)  # torch.compile's prefix is understood
    other = M.TRM(M.TRMConfig(**{**vars(model.config), "hidden_size": 64}))
    with pytest.raises(ValueError, match=r"net\.layers\.0\.self_attn\.qkv_proj\.weight: checkpoint \(96, 32\) vs model \(192, 64\)"):
        M.load_official_state_dict(other, fx["state_dict"])
