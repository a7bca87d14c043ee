"""sample.py: puzzles in, rule checks out, adaptive halting equal to solving each puzzle alone, steps
past training, the GIF's structure, and one-line errors for every bad input."""
import dataclasses
import errno
import io
import json
import os
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import configurator
import plot
import prepare_sudoku as sudoku
import sample
import train
from conftest import run_script
from dataset import DatasetError, write_dataset
from model import TRM, TRMConfig
from plot import write_gif
from test_train import tiny_run

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
# A 4x4 Sudoku and its solution (boxes 2x2).
QUESTION, ANSWER = "1...\n..2.\n.1..\n...2", "1243342121344312"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run faster on one thread, and far faster when other jobs share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def run_dir(sudoku4, tmp_path_factory):
    """A checkpoint of a tiny TRM trained for a few seconds on 4x4 Sudoku (halt_max_steps 3)."""
    out = tmp_path_factory.mktemp("sample") / "run"
    train.main(tiny_run(sudoku4, out, "--max_steps=30", "--log_interval=30")[1:])
    return out


def sample_main(capsys, *argv):
    sample.main([str(a) for a in argv])
    return capsys.readouterr().out


def error_of(*argv):
    with pytest.raises(SystemExit) as info:
        sample.main([str(a) for a in argv])
    message = str(info.value)
    assert message.startswith("sample.py: ") and "\n" not in message
    return message


def tiny_model(seed=0, halt_max_steps=3):
    """A random float64 MLP-t TRM for 4x4 Sudoku whose halting head fires at varied steps."""
    torch.manual_seed(seed)
    model = TRM(TRMConfig(vocab_size=6, seq_len=16, hidden_size=16, num_heads=2, L_layers=1, H_cycles=2,
                          L_cycles=1, halt_max_steps=halt_max_steps, puzzle_emb_ndim=0, mlp_t=True,
                          pos_encodings="none", forward_dtype="float64"))
    with torch.no_grad():
        model.q_head.weight.normal_(0, 1.0)
        model.q_head.bias.zero_()
    return model.eval()


def random_batch(n, seed=0):
    """n random 4x4 puzzles as numpy arrays, the way sample.solve takes them."""
    inputs = np.random.default_rng(seed).integers(1, 6, (n, 16)).astype(np.int32)
    return dict(inputs=inputs, labels=inputs.copy(), puzzle_identifiers=np.zeros(n, dtype=np.int32))


# ------------------------------------------------------------------------------ puzzles and rules

def test_a_typed_grid_and_its_printed_form_parse_to_the_same_tokens():
    tokens = sudoku.parse_question(QUESTION, 4, "--puzzle")
    assert sudoku.decode_grid(tokens, 4) == QUESTION.replace("\n", "")
    assert np.array_equal(sudoku.parse_question(QUESTION.replace(".", "0"), 4, "x"), tokens)
    assert np.array_equal(sudoku.parse_question(sudoku.render(tokens, 4), 4, "x"), tokens), "a printed grid pastes back"


@pytest.mark.parametrize("text, message", [
    ("1...", "4 cells, a 4x4 Sudoku has 16"),
    ("1..x" + "." * 12, "'x' at cell 4 is not a blank"),
    ("5..." + "." * 12, "'5' at cell 1 is not a blank ('.' or '0') or a digit 1-4"),
    ("1..1" + "." * 12, "breaks the rules as given: digit 1 twice in row 1"),
    ("2..." + "2..." + "." * 8, "digit 2 twice in column 1"),
    ("3..." + ".3.." + "." * 8, "digit 3 twice in box 1"),
])
def test_bad_puzzles_are_refused_naming_the_problem(text, message):
    with pytest.raises(sudoku.InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        sudoku.parse_question(text, 4, "--puzzle")


def test_puzzle_file_lines_answers_and_csv_header(tmp_path):
    plain = tmp_path / "mine.txt"
    plain.write_text(f"# my puzzles\n{QUESTION.replace(chr(10), '')}\n\n{'.' * 16},{ANSWER}\n")
    rows = sudoku.read_puzzle_file(plain, 4)
    assert [w for w, _, _ in rows] == [f"{plain}:2", f"{plain}:4"]
    assert rows[0][2] is None and sudoku.decode_grid(rows[1][2], 4) == ANSWER
    csv = tmp_path / "x.csv"
    csv.write_text(f"source,question,answer,rating\nme,{QUESTION.replace(chr(10), '')},{ANSWER},0\n")
    assert sudoku.decode_grid(sudoku.read_puzzle_file(csv, 4)[0][2], 4) == ANSWER
    short = tmp_path / "short.csv"
    short.write_text(f"source,question,answer,rating\n{QUESTION.replace(chr(10), '')}\n")
    with pytest.raises(sudoku.InputError, match=f"{short}:2: no question column"):
        sudoku.read_puzzle_file(short, 4)
    wrong = tmp_path / "wrong.txt"
    wrong.write_text(f"{QUESTION.replace(chr(10), '')},{ANSWER[:-2]}34\n")
    with pytest.raises(sudoku.InputError, match=f"{wrong}:1: the answer given is not a solution"):
        sudoku.read_puzzle_file(wrong, 4)


def test_puzzle_files_with_a_bom_are_read_and_bytes_not_utf8_are_one_line(tmp_path):
    """Every user file goes through dataset.read_text: Windows editors' BOM dropped, other encodings
    refused naming the byte (not 17 cells, not a UnicodeDecodeError)."""
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbf" + QUESTION.replace("\n", "").encode() + b"\n")
    (_, tokens, _), = sudoku.read_puzzle_file(bom, 4)
    assert sudoku.decode_grid(tokens, 4) == QUESTION.replace("\n", "")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(b"# caf\xe9\n" + QUESTION.replace("\n", "").encode() + b"\n")
    with pytest.raises(DatasetError, match=f"{latin1}: byte 5 \\(0xe9\\) is not UTF-8"):
        sudoku.read_puzzle_file(latin1, 4)
    maze = pytest.importorskip("prepare_maze")
    (tmp_path / "m.txt").write_bytes(b"\xef\xbb\xbf" + MAZE.encode())
    (_, question, _), = maze.read_puzzle_file(str(tmp_path / "m.txt"), 5)
    assert np.array_equal(question, maze.parse_puzzle(MAZE, "m", 5)[0][1])
    (tmp_path / "m.txt").write_bytes(MAZE.encode().replace(b"#", b"\x80", 1))
    with pytest.raises(DatasetError, match="byte 6 \\(0x80\\) is not UTF-8"):
        maze.read_puzzle_file(str(tmp_path / "m.txt"), 5)


def test_an_arc_task_file_with_a_bom_is_read_and_bad_bytes_are_one_line(tmp_path):
    arc = pytest.importorskip("prepare_arc")
    (tmp_path / "identifiers.json").write_text(json.dumps(["<blank>", "abc123"]))
    shape = arc.puzzle_shape(12, 100, str(tmp_path))
    raw = json.dumps(dict(train=[dict(input=[[1, 2]], output=[[2, 1]])], test=[dict(input=[[3, 4]])]))
    path = tmp_path / "abc123.json"
    path.write_bytes(b"\xef\xbb\xbf" + raw.encode())
    (name, question, label, identifier), = arc.read_puzzle_file(str(path), shape)
    assert (name, label, identifier) == (f"{path} test 0", None, 1)
    assert question.reshape(10, 10)[0, :3].tolist() == [5, 6, 1], "colours 3 4 as tokens, then the end of the row"
    path.write_bytes(raw.encode().replace(b"train", b"tr\xffin"))
    with pytest.raises(arc.InputError, match=f"{path}: byte 4 \\(0xff\\) is not UTF-8"):
        arc.read_puzzle_file(str(path), shape)
    (tmp_path / "identifiers.json").write_bytes(b'["<blank>", "abc')
    path.write_bytes(raw.encode())
    with pytest.raises(arc.InputError, match="identifiers.json: not valid JSON"):
        arc.read_puzzle_file(str(path), shape)


def test_rule_check_solved_without_a_label_and_the_reasons_it_fails():
    question = sudoku.parse_question(QUESTION, 4, "q")
    answer = sudoku.encode_grid(ANSWER, 4)
    unknown = np.full(16, sample.IGNORE_LABEL_ID)
    assert sample.verdict(sudoku, sudoku.puzzle_shape(6, 16), question, answer, unknown) == \
        (True, "the rules hold and the givens are kept")
    swapped = answer.copy()
    swapped[[1, 2]] = swapped[[2, 1]]  # still a permutation per row, but columns now repeat
    changed_given = sudoku.encode_grid("2" + ANSWER[1:], 4)
    assert sudoku.check(np.stack([question] * 3), np.stack([answer, swapped, changed_given]), 4).tolist() == \
        [True, False, False]
    assert "repeats a digit in column" in sudoku.explain(question, swapped, 4)
    assert "changes the given at cell 1" in sudoku.explain(question, changed_given, 4)
    # Rows 1-2 of columns 2 and 3 now hold the same digit twice (and so does box 1 in column 2).
    assert np.flatnonzero(sudoku.conflicts(swapped, 4)).tolist() == [1, 2, 5, 6]


# ------------------------------------------------------------------------------ inference

@pytest.mark.parametrize("slots, shrink", [(12, True), (5, True), (5, False)])
def test_adaptive_halting_equals_solving_each_puzzle_alone(slots, shrink):
    """Puzzles stream through the slots (a halted one's slot takes the next puzzle): each answer is the
    one the puzzle gets alone, and no row is computed for an empty slot unless the batch keeps its shape."""
    model, puzzles = tiny_model(), random_batch(12)
    sizes = []
    with torch.inference_mode():
        preds, q_halt, taken = sample.solve(model, puzzles, 6, halt_p=0.5, slots=slots, shrink=shrink,
                                            on_step=lambda step, index, out, done: sizes.append(len(index)))
        for i in range(12):
            p, q, t = sample.solve(model, {k: v[i:i + 1] for k, v in puzzles.items()}, 6, halt_p=0.5)
            assert np.array_equal(p[0], preds[i]) and t[0] == taken[i], f"puzzle {i}"
            np.testing.assert_allclose(q[0], q_halt[i])
    assert len(set(taken.tolist())) >= 3, "the test needs puzzles halting at different steps"
    if shrink:
        assert sum(sizes) == taken.sum(), "every row of every call is a puzzle's step: nothing wasted"
        assert sizes[-1] < sizes[0] and sizes == sorted(sizes, reverse=True)
    else:
        assert set(sizes) == {slots}, "a compiled model sees one shape"
    if slots < 12:
        assert len(sizes) < taken.sum() / slots + 6, "halted slots were refilled, not left to idle"
    halted_early = taken < 6
    assert (q_halt[halted_early] > 0).all() and (q_halt[~halted_early] <= 0).all()


def test_steps_beyond_training_continue_the_recursion_instead_of_restarting():
    model, batch = tiny_model(halt_max_steps=2), random_batch(4)
    longer = tiny_model(halt_max_steps=5)
    longer.load_state_dict(model.state_dict())
    q_ours, q_naive, q_longer = [], [], []
    with torch.inference_mode():
        sample.solve(model, batch, 5, on_step=lambda s, index, out, done: q_ours.append(out["q_halt_logits"]))
        assert model.config.halt_max_steps == 2, "the trained config is untouched"
        batch = {k: torch.from_numpy(v) for k, v in batch.items()}
        carry = model.initial_carry(batch)
        for _ in range(5):  # plain forward: halts at step 2, and the halted slots restart at step 3
            carry, out = model(carry, batch)
            q_naive.append(out["q_halt_logits"])
        carry = longer.initial_carry(batch)
        for _ in range(5):
            carry, out = longer(carry, batch)
            q_longer.append(out["q_halt_logits"])
    for ours, reference in zip(q_ours, q_longer):
        assert torch.equal(ours, reference), "the same as a model trained with the longer limit"
    assert torch.equal(q_naive[2], q_naive[0]) and not torch.equal(q_ours[2], q_ours[0])


def test_sweep_snapshots_equal_separate_runs():
    model, puzzles = tiny_model(), random_batch(10)
    swept = sample.solve_set(model, puzzles, 4, None, 4, "cpu", snapshots=[1, 2, 4], bar=False)
    for steps in (1, 2, 4):
        alone = sample.solve_set(model, puzzles, steps, None, 4, "cpu", bar=False)
        assert np.array_equal(swept["snapshots"][steps]["preds"], alone["preds"])
    assert swept["snapshots"][1]["seconds"] <= swept["snapshots"][4]["seconds"] <= swept["seconds"]


# ------------------------------------------------------------------------------ GIF

def read_gif(raw):
    """(frames as (H, W, 3) arrays, delays): an independent reader of the GIF89a blocks and LZW."""
    assert raw[:6] == b"GIF89a" and raw[-1:] == b"\x3b"
    w, h, flags = struct.unpack("<HHB", raw[6:11])
    palette = np.frombuffer(raw[13:13 + 3 * (2 << (flags & 7))], np.uint8).reshape(-1, 3)
    pos, frames, delays = 13 + len(palette) * 3, [], []
    while raw[pos] != 0x3b:
        kind = raw[pos]
        if kind == 0x21:  # extension: label, then sub-blocks
            if raw[pos + 1] == 0xf9:
                delays.append(struct.unpack("<H", raw[pos + 4:pos + 6])[0])
            pos += 2
        else:
            assert kind == 0x2c, f"unexpected block {kind:#x} at {pos}"
            assert struct.unpack("<HHHHB", raw[pos + 1:pos + 10]) == (0, 0, w, h, 0)
            min_code_size, pos = raw[pos + 10], pos + 11
        data = b""
        while raw[pos]:
            data, pos = data + raw[pos + 1:pos + 1 + raw[pos]], pos + 1 + raw[pos]
        pos += 1
        if kind == 0x2c:
            frames.append(palette[lzw_decode(data, min_code_size)].reshape(h, w, 3))
    return frames, delays


def lzw_decode(data, min_code_size):
    bits = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")
    clear, out, pos, width, table, prev = 1 << min_code_size, [], 0, min_code_size + 1, None, None
    while pos + width <= len(bits):
        code = int(bits[pos:pos + width] @ (1 << np.arange(width)))
        pos += width
        if code == clear:
            table, width, prev = [[i] for i in range(clear)] + [None, None], min_code_size + 1, None
            continue
        if code == clear + 1:
            break
        entry = table[code] if code < len(table) else table[prev] + table[prev][:1]
        if prev is not None and len(table) < 4096:
            table.append(table[prev] + entry[:1])
            if len(table) == 1 << width and width < 12:
                width += 1
        out += entry
        prev = code
    return np.array(out)


def test_gif_round_trips_frames_delays_and_a_full_code_table(tmp_path):
    rng = np.random.default_rng(0)
    palette = rng.integers(0, 256, (200, 3)).astype(np.uint8)
    noise = palette[rng.integers(0, 200, (90, 70))]  # incompressible: the 4096-code table fills and restarts
    flat = np.zeros_like(noise)
    stripes = palette[np.arange(70) % 3][None].repeat(90, 0)
    write_gif(tmp_path / "x.gif", [noise, flat, stripes], [10, 20, 300])
    frames, delays = read_gif((tmp_path / "x.gif").read_bytes())
    assert delays == [10, 20, 300] and len(frames) == 3
    for got, want in zip(frames, [noise, flat, stripes]):
        assert np.array_equal(got, want)


# ------------------------------------------------------------------------------ the command line

def test_a_typed_puzzle_is_solved_step_by_step_with_colour_and_a_gif(run_dir, tmp_path, capsys):
    gif = tmp_path / "solve.gif"
    out = sample_main(capsys, f"--out_dir={run_dir}", f"--puzzle={QUESTION}", f"--gif={gif}", "--color=always",
                      "--steps=5")
    assert "--puzzle, 4 givens: 5 supervision steps (trained with 3)" in out
    assert "step 1" in out and "p(halt)" in out and sudoku.DIM in out, "givens dimmed"
    assert ("solved: the rules hold" in out) or ("not solved:" in out)
    frames, delays = read_gif(gif.read_bytes())
    assert len(frames) == 6 and len(delays) == 6, "the question, then one frame per supervision step"
    state = configurator.read_checkpoint(run_dir / "ckpt.pt")
    model, _ = sample.load_run(str(run_dir), "cpu", "float32")
    for name, p in model.named_parameters():
        assert torch.equal(p, state["ema"]["shadow"][name]), f"{name}: EMA weights are used"


def test_a_run_trained_with_eval_steps_is_sampled_with_them_by_default(run_dir, tmp_path, capsys):
    """A run that trains few supervision steps and evaluates many (eval_steps, as the medium config)
    is solved by sample.py with its evaluation depth, not its training one."""
    state = torch.load(run_dir / "ckpt.pt", weights_only=True)
    state["config"]["eval_steps"] = 5
    (tmp_path / "run").mkdir()
    torch.save(state, tmp_path / "run" / "ckpt.pt")
    out = sample_main(capsys, f"--out_dir={tmp_path / 'run'}", f"--puzzle={QUESTION}", "--color=never")
    assert "--puzzle, 4 givens: 5 supervision steps (trained with 3)" in out
    out = sample_main(capsys, f"--out_dir={tmp_path / 'run'}", f"--puzzle={QUESTION}", "--color=never", "--steps=2")
    assert "2 supervision steps (trained with 3)" in out, "--steps still decides"


def test_test_puzzles_adaptive_eval_and_sweep(run_dir, sudoku4, tmp_path, capsys, monkeypatch):
    out = sample_main(capsys, f"--out_dir={run_dir}", f"--data_dir={sudoku4}", "--show=1", "--color=never")
    assert "test #0, " in out and "of 3 solved" not in out and out.count("supervision steps") == 1
    whole = sample_main(capsys, f"--out_dir={run_dir}", f"--data_dir={sudoku4}", "--show=1", "--color=never",
                        "--num_puzzles=3")
    sizes, solve = [], sample.solve
    monkeypatch.setattr(sample, "solve", lambda model, puzzles, steps, halt_p, slots, *a: sizes.append(
        (len(puzzles["inputs"]), slots)) or solve(model, puzzles, steps, halt_p, slots, *a))
    assert whole == sample_main(capsys, f"--out_dir={run_dir}", f"--data_dir={sudoku4}", "--show=1",
                                "--color=never", "--num_puzzles=3", "--batch_size=2"), "batches change nothing"
    assert sizes == [(3, 2)]  # 3 puzzles through 2 slots
    monkeypatch.undo()
    out = sample_main(capsys, f"--out_dir={run_dir}", f"--data_dir={sudoku4}", "--eval", "--halt=adaptive",
                      "--halt_p=0.5,0.9", "--batch_size=16", "--repeats=2")
    rows = [line.split("|") for line in out.splitlines() if line.startswith(("| fixed", "| adaptive"))]
    assert [r[1].strip() for r in rows] == ["fixed 3 steps", "adaptive: p(halt) > 0.5 (q_halt > 0), at most 3",
                                            "adaptive: p(halt) > 0.9, at most 3"]
    assert float(rows[0][2]) == 3.0 and float(rows[1][2]) <= float(rows[2][2]) <= 3.0, "a higher bar halts later"
    assert out.count("x faster") == 2
    chart = tmp_path / "sweep.png"
    out = sample_main(capsys, f"--out_dir={run_dir}", f"--data_dir={sudoku4}", "--sweep=1,2,5", f"--chart={chart}")
    assert [line.split("|")[1].strip() for line in out.splitlines() if line.startswith("| ") and "%" in line] == \
        ["1", "2", "5"]
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    message = error_of(f"--out_dir={run_dir}", f"--data_dir={sudoku4}", "--sweep=1", f"--chart={tmp_path}/no/x.png")
    assert f"--chart={tmp_path}/no/x.png: cannot write" in message


def test_official_weights_load_with_their_config(sudoku4, tmp_path, capsys):
    if not FIXTURES.is_dir():
        pytest.skip(f"{FIXTURES} is absent (the shared fixtures sit beside the repository)")
    fx = torch.load(FIXTURES / "mlp_t.pt", weights_only=True)
    torch.save(fx["state_dict"], tmp_path / "official.pt")
    names = ("hidden_size", "num_heads", "H_cycles", "L_cycles", "halt_max_steps", "puzzle_emb_ndim", "puzzle_emb_len")
    config = tmp_path / "official_cfg.py"
    config.write_text("".join(f"{k} = {fx['config'][k]!r}\n" for k in names) + "mlp_t = True\npos_encodings = 'none'\n"
                      f"data_dir = {str(sudoku4)!r}\n")
    out = sample_main(capsys, f"--official_ckpt={tmp_path / 'official.pt'}", f"--config={config}",
                      f"--puzzle={QUESTION}", "--color=never")
    assert "4 supervision steps" in out
    config.write_text(config.read_text() + "hidden_size = 64\n")
    message = error_of(f"--official_ckpt={tmp_path / 'official.pt'}", f"--config={config}", f"--puzzle={QUESTION}")
    assert "does not fit this TRMConfig" in message and "embed_tokens" in message


def test_every_bad_input_is_one_line(run_dir, tmp_path):
    ok = [f"--out_dir={run_dir}"]
    assert "out_dir 'nowhere' not found" in error_of("--out_dir=nowhere")
    assert f"{tmp_path / 'ckpt.pt'} not found" in error_of(f"--out_dir={tmp_path}")
    assert "--steps=0: must be at least 1" in error_of(*ok, "--steps=0")
    assert "--split=tset: " in error_of(*ok, "--split=tset") and "has no such split (it has test, train)" in \
        error_of(*ok, "--split=tset")
    assert "4 cells, a 4x4 Sudoku has 16" in error_of(*ok, "--puzzle=1...")
    assert "81 cells, a 4x4 Sudoku has 16" in error_of(*ok, "--puzzle=" + "." * 81)
    assert "'x' at cell 1" in error_of(*ok, "--puzzle=x" + "." * 15)
    assert "breaks the rules as given: digit 1 twice in row 1" in error_of(*ok, "--puzzle=11" + "." * 14)
    assert "looks like a maze puzzle but the checkpoint solves sudoku" in error_of(*ok, "--puzzle=#S  G#")
    assert "--sweep=1,x: give step counts" in error_of(*ok, "--sweep=1,x")
    assert "--puzzle and --puzzle_file both given" in error_of(*ok, "--puzzle=.", "--puzzle_file=x")
    assert "--puzzle_file=missing.txt: file not found" in error_of(*ok, "--puzzle_file=missing.txt")
    assert "--official_ckpt needs --config" in error_of("--official_ckpt=x.pt")
    assert "invalid choice: 'sometimes'" in error_of(*ok, "--halt=sometimes")
    assert "must lie strictly between 0 and 1" in error_of(*ok, "--halt=adaptive", "--halt_p=1")
    assert "a list only with --eval" in error_of(*ok, "--halt=adaptive", "--halt_p=0.5,0.9")
    assert "unrecognized arguments: --stepz=3" in error_of(*ok, "--stepz=3")
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    assert f"{empty}: no puzzles in it" in error_of(*ok, f"--puzzle_file={empty}")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(b"1...\xe9" + b"." * 11)
    assert f"{latin1}: byte 4 (0xe9) is not UTF-8 text" in error_of(*ok, f"--puzzle_file={latin1}")
    assert "--steps=4294967296: must be at most 2147483647" in error_of(*ok, "--steps=4294967296")
    assert "step counts must be at least 1 and at most 2147483647" in error_of(*ok, "--sweep=1,4294967296")
    assert f"--gif={tmp_path} is a directory; name a file" in error_of(*ok, f"--gif={tmp_path}")
    (tmp_path / "bad").mkdir()
    whole = (run_dir / "ckpt.pt").read_bytes()
    (tmp_path / "bad" / "ckpt.pt").write_bytes(whole[:len(whole) // 2])  # as a copy cut short
    assert f"{tmp_path / 'bad' / 'ckpt.pt'} is unreadable" in error_of(f"--out_dir={tmp_path / 'bad'}")


def test_the_cli_prints_no_traceback(run_dir):
    done = run_script("sample.py", f"--out_dir={run_dir}", "--puzzle=1.1" + "." * 13)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == ["sample.py: --puzzle: breaks the rules as given: digit 1 twice in "
                                                "row 1; fix the givens"]


class Payload:
    """A pickled object whose loading calls open(marker, "w"): the marker existing means its code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


def crafted_checkpoint(path, marker):
    """A ckpt.pt with every entry of a train.py checkpoint, its config a payload that would create marker."""
    torch.save(dict(config=Payload(str(marker)), model={}, model_config={}), path)


def test_a_crafted_checkpoint_is_refused_in_one_line_and_its_code_never_runs(tmp_path):
    (tmp_path / "run").mkdir()
    marker = tmp_path / "payload-ran"
    crafted_checkpoint(tmp_path / "run" / "ckpt.pt", marker)
    done = run_script("sample.py", f"--out_dir={tmp_path / 'run'}", f"--puzzle={QUESTION}")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "was refused: it holds a Python object" in done.stderr
    assert not marker.exists(), "the payload ran"
    torch.load(tmp_path / "run" / "ckpt.pt", weights_only=False)
    assert marker.exists(), "the payload is live: loading it as pickle runs it"


def full_disk(path, mode="r", *args, **kwargs):
    """open() on a disk with no space left: the file is created, every write fails with ENOSPC."""
    f = open(path, mode, *args, **kwargs)

    class Full:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            f.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return Full()


def test_a_full_disk_is_one_line_naming_the_path_and_leaves_no_temp_file(run_dir, sudoku4, tmp_path, monkeypatch):
    monkeypatch.setattr(plot, "open", full_disk, raising=False)  # plot.py's writers: PATH.tmp, then a rename
    gif, chart = tmp_path / "x.gif", tmp_path / "x.png"
    message = error_of(f"--out_dir={run_dir}", f"--puzzle={QUESTION}", f"--gif={gif}", "--color=never")
    assert f"--gif={gif}: cannot write (No space left on device)" in message
    message = error_of(f"--out_dir={run_dir}", f"--data_dir={sudoku4}", "--sweep=1,2", f"--chart={chart}")
    assert f"--chart={chart}: cannot write (No space left on device)" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "neither a picture nor a temp file is left"


def test_an_unwritable_picture_path_is_refused_before_any_solving(run_dir, tmp_path, monkeypatch):
    (tmp_path / "somefile").write_text("a file, not a folder")
    monkeypatch.setattr(sample, "solve", lambda *a, **k: pytest.fail("solved before the path was checked"))
    for option in ("gif", "chart"):
        path = tmp_path / "somefile" / f"x.{option}"
        message = error_of(f"--out_dir={run_dir}", f"--puzzle={QUESTION}", f"--{option}={path}")
        assert f"--{option}={path}: cannot write ({tmp_path / 'somefile'} is not a directory)" in message


def every_step(model, batch, steps):
    """Each step's answers and q_halt, recorded in full, to compare what sample.trace keeps against."""
    seen = []
    with torch.inference_mode():
        sample.solve(model, batch, steps, on_step=lambda step, index, out, done: seen.append(
            (out["preds"].numpy().copy(), out["q_halt_logits"].numpy().copy())))
    return seen


def test_a_long_solve_keeps_per_step_answers_only_where_they_are_drawn():
    model, batch = tiny_model(), random_batch(6)
    puzzles = batch
    shapes = []
    for steps in (3, 300):  # what is kept for puzzles not drawn step by step does not grow with the steps
        kept = sample.trace(model, puzzles, steps, None, 0.0, shown=0, gif=False, batch_size=4, device="cpu")
        shapes.append({k: np.shape(v) if isinstance(v, np.ndarray) else v for k, v in kept.items()})
    assert shapes[0] == shapes[1] and shapes[1]["runs"] == [] and shapes[1]["every"] is None
    seen = every_step(model, batch, 300)
    assert np.array_equal(kept["preds"], seen[-1][0]) and kept["steps"].tolist() == [300] * 6
    halts = np.array([q > 0 for _, q in seen])
    assert kept["first_halt"].tolist() == [int(h.argmax()) + 1 if h.any() else 0 for h in halts.T]
    # The puzzle shown keeps one entry per change of answer or halting decision; the GIF's, every step.
    with torch.no_grad():  # a contracting network: the answers settle after a few steps
        for p in model.net.parameters():
            p.mul_(0.1)
    seen = every_step(model, batch, 300)
    kept = sample.trace(model, puzzles, 300, None, 0.0, shown=1, gif=True, batch_size=4, device="cpu")
    changes = sum(not np.array_equal(a[0][0], b[0][0]) or (a[1][0] > 0) != (b[1][0] > 0)
                  for a, b in zip(seen, seen[1:]))
    runs = kept["runs"][0]
    assert len(runs) == 1 + changes < 10 and sum(r["last"] - r["first"] + 1 for r in runs) == 300
    assert len(kept["every"]) == 300 and all(np.array_equal(p, s[0][0]) for (_, p, _), s in zip(kept["every"], seen))


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_long_solve_draws_a_progress_bar_over_its_steps_and_a_short_one_none(monkeypatch):
    model, batch = tiny_model(), random_batch(6)
    puzzles = batch
    for steps, drawn in ((3, False), (300, True)):
        monkeypatch.setattr(sys, "stderr", Terminal())
        sample.trace(model, puzzles, steps, None, 0.0, shown=0, gif=False, batch_size=6, device="cpu")
        assert ("solve:" in sys.stderr.getvalue() and f"/{steps}" in sys.stderr.getvalue()) == drawn, steps


# ------------------------------------------------------------------------------ other tasks

MAZE = "S    \n#### \n     \n ####\n    G\n"  # one way through: right, down, left, down, right


def fake_run(tmp_path, task, vocab_size, seq_len):
    """A train.py-style checkpoint of an untrained tiny TRM, its config pointing at a one-example
    dataset of `task` (what tells sample.py the checkpoint's task)."""
    data, out = tmp_path / f"{task}-data", tmp_path / f"{task}-run"
    meta = dict(pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=vocab_size, seq_len=seq_len,
                num_puzzle_identifiers=1, task=task)
    arrays = dict(inputs=np.ones((1, seq_len), np.uint8), labels=np.ones((1, seq_len), np.uint8),
                  puzzle_identifiers=np.zeros(1, np.int32), puzzle_indices=np.array([0, 1], np.int32),
                  group_indices=np.array([0, 1], np.int32))
    write_dataset(data, {"train": (meta, {"all": arrays}), "test": (meta, {"all": arrays})}, ["<blank>"])
    cfg = TRMConfig(vocab_size=vocab_size, seq_len=seq_len, hidden_size=16, num_heads=2, L_layers=1, H_cycles=1,
                    L_cycles=1, halt_max_steps=2, puzzle_emb_ndim=0, mlp_t=True, pos_encodings="none",
                    forward_dtype="float32")
    out.mkdir()
    torch.save(dict(model=TRM(cfg).state_dict(), ema=None, config=dict(data_dir=str(data)),
                    model_config=dataclasses.asdict(cfg)), out / "ckpt.pt")
    return out


def test_maze_puzzles_are_read_checked_and_drawn(tmp_path, capsys):
    maze = pytest.importorskip("prepare_maze")
    (_, question, _), = maze.parse_puzzle(MAZE, "m.txt", maze.puzzle_shape(6, 25))
    answer = maze.shortest_path(question, 5)
    assert maze.check(np.stack([question, answer]), np.stack([answer, question]), 5).tolist() == [True, False]
    assert sample.looks_like(MAZE) == "maze" and sample.looks_like("1..4" * 4) == "sudoku"
    assert sample.looks_like("00576224") is None, "an all-digit ARC task id is not a Sudoku"
    (tmp_path / "m.txt").write_text(MAZE)
    run = fake_run(tmp_path, "maze", 6, 25)
    gif = tmp_path / "maze.gif"
    out = sample_main(capsys, f"--out_dir={run}", f"--puzzle={tmp_path / 'm.txt'}", f"--gif={gif}", "--color=never")
    assert f"{tmp_path / 'm.txt'}, 5x5 maze: 2 supervision steps" in out
    assert len(read_gif(gif.read_bytes())[0]) == 3
    (tmp_path / "small").mkdir()
    small = fake_run(tmp_path / "small", "maze", 6, 9)
    message = error_of(f"--out_dir={small}", f"--puzzle={tmp_path / 'm.txt'}")
    assert "a 5x5 maze; this checkpoint solves 3x3 mazes" in message


def test_a_puzzle_for_another_task_than_the_checkpoint_is_refused(tmp_path):
    run = fake_run(tmp_path, "maze", 6, 25)
    assert "--puzzle looks like a sudoku puzzle but the checkpoint solves maze" in error_of(
        f"--out_dir={run}", "--puzzle=" + QUESTION)
