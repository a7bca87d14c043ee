"""The paper's ablations as switches (two_networks, grad_mode, latent_mode), HRM as a config, and ablate.py."""
import json

import pytest
import torch

import configurator
import model as M
import train
from conftest import ROOT
from test_fidelity import FIXTURES, build, check_step, close, load
from test_model import tiny_batch, tiny_model
from test_sample import crafted_checkpoint


def record_applications(model):
    """Forward hooks on f (and f_H): every application's output in call order, which network made it,
    whether autograd tracked it, and (after backward) the size of the gradient that reached it."""
    apps = []

    def hook(name):
        def on_forward(module, args, out):
            app = dict(net=name, tracked=out.requires_grad, grad=0.0)
            if out.requires_grad:
                out.register_hook(lambda g: app.update(grad=g.abs().sum().item()))
            apps.append(app)
        return on_forward

    model.net.register_forward_hook(hook("f_L"))
    if model.config.two_networks:
        model.net_H.register_forward_hook(hook("f_H"))
    return apps


def one_training_step(model, apps, carry_grad=False):
    """One supervision step, back-propagated; returns the incoming carry. carry_grad: the step continues
    running puzzles whose states are leaves, to see whether the gradient gets back to them."""
    batch = tiny_batch(model.config)
    model.train()
    carry = model.initial_carry(batch)
    if carry_grad:
        with torch.no_grad():
            carry, _ = model(carry, batch)
        carry.halted[:] = False  # no slot restarts from the initial states
        carry.y.requires_grad_()
        carry.z.requires_grad_()
        apps.clear()
    new_carry, outputs = model(carry, batch)
    M.act_loss(new_carry, outputs)[0].backward()
    return carry


@pytest.mark.parametrize("two_networks", [False, True])
def test_one_step_gradient_reaches_only_the_last_latent_and_answer_updates(two_networks):
    model = tiny_model(grad_mode="one_step", L_cycles=3, two_networks=two_networks)
    apps = record_applications(model)
    one_training_step(model, apps)
    T, n = model.config.H_cycles, model.config.L_cycles
    assert len(apps) == T * (n + 1)
    earlier, last_latent, answer = apps[:-2], apps[-2], apps[-1]
    assert not any(a["tracked"] for a in earlier), "everything before the last latent update runs without gradient"
    assert last_latent["grad"] > 0 and answer["grad"] > 0
    assert (last_latent["net"], answer["net"]) == (("f_L", "f_H") if two_networks else ("f_L", "f_L"))


def test_last_round_tracks_the_last_recursion_and_full_tracks_every_round_back_to_the_carry():
    T, n = 3, 2
    for grad_mode, tracked in (("last_round", n + 1), ("full", T * (n + 1))):
        model = tiny_model(grad_mode=grad_mode, H_cycles=T, L_cycles=n)
        apps = record_applications(model)
        carry = one_training_step(model, apps, carry_grad=True)
        assert [a["tracked"] for a in apps] == [False] * (T * (n + 1) - tracked) + [True] * tracked, grad_mode
        assert all(a["grad"] > 0 for a in apps[-tracked:]), grad_mode
        reached = carry.z.grad is not None and carry.z.grad.abs().sum() > 0
        assert reached == (grad_mode == "full"), f"{grad_mode}: gradient reached the incoming latent: {reached}"


def block_params(model, prefix):
    return sum(p.numel() for n, p in model.named_parameters() if n.startswith(prefix))


def test_two_networks_doubles_the_blocks_and_both_get_their_own_gradient():
    single, double = tiny_model(), tiny_model(two_networks=True)
    assert block_params(double, "net.") == block_params(double, "net_H.") == block_params(single, "net.")
    assert double.num_params() == single.num_params() + block_params(single, "net.")
    extra = set(double.state_dict()) - set(single.state_dict())
    assert set(single.state_dict()) < set(double.state_dict()) and all(k.startswith("net_H.") for k in extra)
    apps = record_applications(double)
    one_training_step(double, apps)
    n = double.config.L_cycles
    assert [a["net"] for a in apps] == (["f_L"] * n + ["f_H"]) * double.config.H_cycles
    params = dict(double.named_parameters())
    for name in [k for k in params if k.startswith("net.")]:
        g_L, g_H = params[name].grad, params[name.replace("net.", "net_H.", 1)].grad
        assert g_L.abs().sum() > 0 and g_H.abs().sum() > 0, name
        assert not torch.allclose(g_L, g_H), f"{name}: f_L and f_H received the same gradient"


def test_single_latent_is_one_state_refined_n_times_from_itself_and_x_then_from_itself():
    model = tiny_model(latent_mode="single")
    cfg, batch = model.config, tiny_batch(model.config)
    model.eval()
    with torch.no_grad():
        carry, outputs = model(model.initial_carry(batch), batch)
        # The same step by hand: the official trm_singlez, starting from z_init (official L_init).
        x, rope = model.input_embedding(batch["inputs"], batch["puzzle_identifiers"]), (model.rope_cos, model.rope_sin)
        z = model.z_init.expand_as(x)
        for _ in range(cfg.H_cycles):
            for _ in range(cfg.L_cycles):
                z = model.net(z, x, rope)
            z = model.net(z, torch.zeros_like(z), rope)
    B, length, D = len(batch["inputs"]), cfg.seq_len + cfg.prefix_len, cfg.hidden_size
    assert carry.z.shape == carry.y.shape == (B, length, D)
    assert carry.y.data_ptr() == carry.z.data_ptr(), "one state: the answer is read from the latent itself"
    torch.testing.assert_close(carry.z, z)
    torch.testing.assert_close(outputs["logits"], model.lm_head(z)[:, cfg.prefix_len:])


def test_multi_latent_keeps_one_latent_per_step_and_reads_their_sum():
    model = tiny_model(latent_mode="multi", L_cycles=3)
    cfg, batch = model.config, tiny_batch(model.config)
    n, B, length, D = cfg.L_cycles, len(batch["inputs"]), cfg.seq_len + cfg.prefix_len, cfg.hidden_size
    assert model.z_init.shape == (n, 1, D)
    carry = model.initial_carry(batch)
    assert carry.z.shape == (B, n, length, D) and carry.y.shape == (B, length, D)
    assert not torch.equal(carry.z[:, 0], carry.z[:, 1]), "each latent starts from its own vector"
    model.eval()
    with torch.no_grad():
        new_carry, outputs = model(carry, batch)
        # The same step by hand: the official trm_hier6 with n latents.
        x, rope = model.input_embedding(batch["inputs"], batch["puzzle_identifiers"]), (model.rope_cos, model.rope_sin)
        y, zs = model.y_init.expand_as(x), [model.z_init[i].expand_as(x) for i in range(n)]
        for _ in range(cfg.H_cycles):
            for i in range(n):
                zs[i] = model.net(sum(zs), y + x, rope)
            y = model.net(y, sum(zs), rope)
    assert new_carry.z.shape == (B, n, length, D)
    torch.testing.assert_close(new_carry.z, torch.stack(zs, 1))
    torch.testing.assert_close(outputs["logits"], model.lm_head(y)[:, cfg.prefix_len:])


def test_multi_latent_with_one_latent_is_trm():
    trm, multi = tiny_model(L_cycles=1), tiny_model(L_cycles=1, latent_mode="multi")
    state = trm.state_dict()
    state["z_init"] = state["z_init"].view(1, 1, -1)
    multi.load_state_dict(state)
    batch = tiny_batch(trm.config)
    trm.eval(), multi.eval()
    with torch.no_grad():
        a, out_a = trm(trm.initial_carry(batch), batch)
        b, out_b = multi(multi.initial_carry(batch), batch)
    assert torch.equal(out_a["logits"], out_b["logits"]) and torch.equal(a.z, b.z[:, 0])


@pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"{FIXTURES} is absent (the shared fixtures sit beside the "
                    "repository in the team checkout)")
def test_grad_mode_changes_gradients_never_values_and_the_default_replays_the_official_code():
    fx = load("mlp_t")
    official_grads = {M.official_to_ours(k): v for k, v in fx["grads_call1"].items()}
    for grad_mode in ("last_round", "one_step", "full"):
        model = build(fx)
        model.config.grad_mode = grad_mode  # a plain field: the network's shape does not depend on it
        model.train()
        carry, outputs = model(model.initial_carry(fx["batch"]), fx["batch"])
        loss, metrics = M.act_loss(carry, outputs, model.config.loss_type)
        check_step(carry, outputs, loss, metrics, fx["steps"][0], f"{grad_mode} call 1")
        loss.backward()
        grad = model.net.layers[0].mlp.down_proj.weight.grad
        if grad_mode == "last_round":
            close(grad, official_grads["net.layers.0.mlp.down_proj.weight"], "default gradient")
        else:
            assert not torch.allclose(grad, official_grads["net.layers.0.mlp.down_proj.weight"].to(grad.dtype))


def test_default_model_keeps_its_state_dict_names_and_shapes():
    model = M.TRM(M.TRMConfig(vocab_size=11, seq_len=81, mlp_t=True, pos_encodings="none"))
    assert not any(k.startswith("net_H.") for k in model.state_dict())
    assert model.z_init.shape == model.y_init.shape == (512,)
    assert M.official_to_ours("_orig_mod.model.inner.L_level.layers.1.mlp.gate_up_proj.weight") == \
        "net.layers.1.mlp.gate_up_proj.weight"
    assert M.official_to_ours("model.inner.H_level.layers.3.self_attn.o_proj.weight") == \
        "net_H.layers.3.self_attn.o_proj.weight", "HRM's f_H maps to net_H"


def test_hrm_config_has_the_official_hrm_parameter_count():
    C = configurator.configure([str(ROOT / "config" / "hrm_sudoku.py"), "--dtype=float32"])
    assert (C["two_networks"], C["grad_mode"], C["no_ACT_continue"], C["mlp_t"]) == (True, "one_step", False, False)
    assert (C["L_layers"], C["hidden_size"], C["H_cycles"], C["L_cycles"], C["halt_max_steps"]) == (4, 512, 2, 2, 16)
    cfg = configurator.model_config(C, dict(vocab_size=11, seq_len=81, num_puzzle_identifiers=1))
    with torch.device("meta"):  # shapes only
        assert M.TRM(cfg).num_params() == 27_275_266


@pytest.mark.parametrize("overrides, message", [
    (dict(grad_mode="two_step"), "TRMConfig.grad_mode='two_step' is invalid; allowed: last_round \\| one_step \\| full"),
    (dict(latent_mode="double"), "TRMConfig.latent_mode='double' is invalid; allowed: yz \\| single \\| multi"),
    (dict(two_networks="yes"), "TRMConfig.two_networks='yes' is invalid; allowed: True \\| False"),
    (dict(grad_mode="one_step", L_cycles=0), "TRMConfig.L_cycles=0 is invalid; allowed: an integer >= 1"),
])
def test_bad_switch_values_and_combinations_raise_one_clear_error(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_model(**overrides)


def test_a_bad_switch_on_the_command_line_is_one_line_naming_the_allowed_values(sudoku4, tmp_path):
    with pytest.raises(SystemExit) as exit_info:  # what the CLI prints, in-process
        train.main([f"--data_dir={sudoku4}", f"--out_dir={tmp_path / 'o'}", "--grad_mode=fast", "--device=cpu",
                    "--global_batch_size=16"])
    assert str(exit_info.value) == ("train.py: TRMConfig.grad_mode='fast' is invalid; allowed: "
                                    "last_round | one_step | full")


def test_chart_labels_use_only_glyphs_plot_can_draw():
    import ablate
    assert all(set(label) <= set(ablate.plot.GLYPHS) for _, _, label, _, _ in ablate.ROWS)


TINY = ["--hidden_size=16", "--num_heads=2", "--puzzle_emb_ndim=16", "--halt_max_steps=2", "--global_batch_size=16",
        "--eval_interval=1000", "--log_interval=1", "--ckpt_interval=2"]


def test_ablate_trains_each_row_and_seed_for_equal_steps_and_keeps_finished_runs(sudoku4, tmp_path, monkeypatch,
                                                                                 capsys):
    import ablate
    monkeypatch.chdir(ROOT)  # ablate.py's default --config is relative to the repository, as for train.py
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # tiny runs on a shared machine: spinning threads only cost
    out = tmp_path / "ablate"
    args = ["--rows=full,hrm", "--seeds=0,1", "--jobs=2", f"--out={out}", f"--data_dir={sudoku4}", "--max_steps=3",
            *TINY]
    ablate.main(args)  # each run is a train.py subprocess, two at a time
    results = {(row, seed): json.loads((out / row / f"seed{seed}" / "result.json").read_text())
               for row in ("full", "hrm") for seed in (0, 1)}
    assert {r["optimizer_steps"] for r in results.values()} == {3}, "every run trains the same number of steps"
    assert results["hrm", 0]["params"] > results["full", 0]["params"], "HRM: two 4-layer networks"
    for (row, seed), r in results.items():
        run_config = json.loads((out / row / f"seed{seed}" / "config.json").read_text())
        assert (run_config["seed"], run_config["max_minutes"], run_config["clock_schedule"]) == (seed, 0.0, False)
    hrm_config = json.loads((out / "hrm" / "seed0" / "config.json").read_text())
    assert (hrm_config["two_networks"], hrm_config["grad_mode"], hrm_config["L_layers"]) == (True, "one_step", 4)
    table = (out / "table.md").read_text()
    assert "| full TRM | 87.4% |" in table and "| HRM at the same width | 55.0% |" in table
    assert "seeds 0, 1" in table and "the seed spread |" in table
    assert (out / "ablations.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()
    (out / "table.md").unlink()
    ablate.main(args)  # a rerun keeps the finished runs and rewrites the table from them
    assert "4 of 4 runs finished earlier, kept" in capsys.readouterr().out and (out / "table.md").read_text() == table
    with pytest.raises(SystemExit, match="was started with other settings"):
        ablate.main(args[:-1] + ["--ckpt_interval=1"])


def test_an_unfinished_run_resumes_from_its_checkpoint_and_ends_where_a_fresh_one_would(sudoku4, tmp_path,
                                                                                        monkeypatch):
    """A table killed mid-run: the run's checkpoint stays, and the rerun continues it (train.py
    --init_from=resume) to the same step and the same weights as an uninterrupted run."""
    import ablate
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    common = ["--rows=full", "--seeds=0", f"--data_dir={sudoku4}", *TINY]
    ablate.main([f"--out={tmp_path / 'whole'}", "--max_steps=4", *common])
    ablate.main([f"--out={tmp_path / 'cut'}", "--max_steps=2", *common])  # the same run, as far as step 2 ...
    cut = tmp_path / "cut" / "full" / "seed0"
    marker = json.loads((cut / ablate.MARKER).read_text())
    marker["train_args"] = [a.replace("--max_steps=2", "--max_steps=4") for a in marker["train_args"]]
    (cut / ablate.MARKER).write_text(json.dumps(marker))  # ... and killed there: its checkpoint, no result
    (cut / "result.json").unlink()
    ablate.main([f"--out={tmp_path / 'cut'}", "--max_steps=4", *common])
    assert "--init_from=resume" in (cut / "train.log").read_text()
    whole, resumed = (torch.load(d / "full" / "seed0" / "ckpt.pt", weights_only=True) for d in (tmp_path / "whole",
                                                                                               tmp_path / "cut"))
    assert resumed["step"] == whole["step"] == 4
    assert all(torch.equal(whole["model"][k], resumed["model"][k]) for k in whole["model"])


def test_a_crafted_checkpoint_is_refused_by_the_summary_and_its_code_never_runs(tmp_path):
    import ablate
    (tmp_path / "metrics.jsonl").write_text(
        '{"iter": 1, "split": "train", "count": 16, "steps": 2.0, "examples_per_s": 40.0}\n'
        '{"iter": 1, "split": "test", "count": 40, "exact_accuracy": 0.0, "accuracy": 0.3}\n')
    marker = tmp_path / "payload-ran"
    crafted_checkpoint(tmp_path / "ckpt.pt", marker)
    with pytest.raises(configurator.UserError, match="was refused: it holds a Python object") as info:
        ablate.summarise_run(str(tmp_path))
    assert "\n" not in str(info.value) and not marker.exists(), "the payload ran"


@pytest.mark.parametrize("arg, message", [
    ("--max_steps=-1", "max_steps=-1 is out of range"),
    ("--global_batch_size=-4", "global_batch_size=-4 is out of range"),
    ("--seeds=a", "--seeds=a: give whole numbers"),
    ("--seeds=,", "--seeds=: give one or more seeds"),
    ("--jobs=0", "--jobs=0: give how many runs train at once"),
    ("--max_minutes=5", "--max_minutes is set by ablate.py"),
    ("--rows=full,nope", "--rows: unknown row 'nope'"),
    ("--out={file}/x", "{file}/x/full/seed0: cannot be made or written"),
])
def test_bad_settings_and_an_unmakeable_out_folder_are_one_line_before_any_run(arg, message, sudoku4, tmp_path,
                                                                               monkeypatch):
    import ablate
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(ablate, "start", lambda *a: pytest.fail("a run started"))
    (tmp_path / "file").write_text("a file, not a folder")
    arg, message = (x.replace("{file}", str(tmp_path / "file")) for x in (arg, message))
    with pytest.raises(SystemExit) as info:
        ablate.main([f"--out={tmp_path / 'out'}", f"--data_dir={sudoku4}", arg])  # the last --out counts
    assert str(info.value).startswith(f"ablate.py: {message}") and "\n" not in str(info.value)


def test_missing_data_names_the_command_that_makes_it(tmp_path, monkeypatch):
    import ablate
    monkeypatch.chdir(tmp_path)  # no data/ here; the default config is found beside ablate.py
    with pytest.raises(SystemExit) as info:
        ablate.main([f"--config={ROOT / ablate.CONFIG}"])
    assert "data/sudoku-6x6-medium not found; make it with `python prepare_sudoku.py --size 6 --difficulty medium`" \
        in str(info.value)


@pytest.mark.parametrize("theirs", [{"ckpt.pt": b"my own run"}, {"notes.txt": b"my notes"},
                                    {"metrics.jsonl": b"{}", "result.json": b"{}"}])
def test_ablate_never_touches_a_folder_it_did_not_start(tmp_path, theirs):
    """A run folder holding anything ablate.py did not put there is refused in one line, unchanged."""
    import ablate
    folder = tmp_path / "full" / "seed0"
    folder.mkdir(parents=True)
    for name, data in theirs.items():
        (folder / name).write_bytes(data)
    with pytest.raises(ablate.UserError, match=f"{folder} holds files that ablate.py did not make .no "
                                               f"{ablate.MARKER}.; nothing was changed") as info:
        ablate.claim(str(folder), ["--seed=0"])
    assert "\n" not in str(info.value)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == theirs


def test_claim_marks_a_new_folder_resumes_a_checkpoint_and_refuses_other_settings(tmp_path):
    import ablate
    folder = tmp_path / "full" / "seed0"
    assert ablate.claim(str(folder), ["--seed=0"]) == (None, "scratch")  # made and marked
    assert json.loads((folder / ablate.MARKER).read_text()) == {"train_args": ["--seed=0"]}
    assert ablate.claim(str(folder), ["--seed=0"]) == (None, "scratch")  # killed before its first checkpoint
    (folder / "ckpt.pt").write_bytes(b"a run's checkpoint")
    assert ablate.claim(str(folder), ["--seed=0"]) == (None, "resume")
    with pytest.raises(ablate.UserError, match="was started with other settings .--seed=0; now --seed=1."):
        ablate.claim(str(folder), ["--seed=1"])
    (folder / "result.json").write_text('{"exact_accuracy": 0.5}')
    assert ablate.claim(str(folder), ["--seed=0"]) == ({"exact_accuracy": 0.5}, None)
    assert (folder / "ckpt.pt").read_bytes() == b"a run's checkpoint", "nothing is ever deleted"


def test_a_row_is_beyond_the_seed_spread_only_when_the_ranges_do_not_overlap():
    import ablate
    runs = lambda *accs: [{"exact_accuracy": a} for a in accs]  # noqa: E731
    full = runs(0.70, 0.74)
    assert ablate.versus_full(runs(0.50, 0.60), full) == "-17.0 pts, beyond the seed spread"
    assert ablate.versus_full(runs(0.60, 0.71), full) == "-6.5 pts, within the seed spread"
    assert ablate.versus_full(runs(0.80), full) == "+8.0 pts (one seed: no spread to judge by)"
    assert ablate.versus_full(full, full) == ""


def test_the_whole_table_runs_in_one_dtype_and_a_resumed_table_keeps_it(tmp_path):
    """dtype=auto is decided once, by ablate.py, not by each run's own timing; a table that already has
    runs keeps the dtype they were started with, whatever the machine measures now."""
    import ablate
    own, base = dict(out=str(tmp_path), seeds=[0, 1]), dict(device="cpu")
    assert ablate.table_dtype(own, base) == configurator.resolve_dtype("auto", "cpu")
    ablate.claim(ablate.run_dir(own, "hrm", 1), ["config.py", "--dtype='bfloat16'", "--seed=1"])
    assert ablate.table_dtype(own, base) == "bfloat16"
