"""configurator.py: the config files give the same settings from any working directory."""
import pytest

import configurator
from conftest import ROOT

CONFIGS = sorted(p.name for p in (ROOT / "config").glob("*.py"))


@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_gives_the_same_settings_from_any_working_directory(name, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    from_root = configurator.configure([f"config/{name}"])
    monkeypatch.chdir(tmp_path)
    elsewhere = configurator.configure([str(ROOT / "config" / name)])
    monkeypatch.chdir(ROOT / "config")
    beside = configurator.configure([name])
    assert list(elsewhere.items()) == list(from_root.items()) == list(beside.items())


def test_a_chained_config_runs_the_one_it_builds_on_and_keeps_no_name_of_its_own(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = configurator.configure([str(ROOT / "config" / "sudoku_cpu.py")])
    medium = configurator.configure([str(ROOT / "config" / "sudoku_cpu_medium.py")])
    assert medium == dict(base, data_dir="data/sudoku-medium", out_dir="out-sudoku-cpu-medium", eval_steps=16,
                          max_minutes=8.0, max_steps=0)
    ablation = configurator.configure([str(ROOT / "config" / "sudoku_ablate.py")])
    assert ablation == dict(base, data_dir="data/sudoku-6x6-medium", out_dir="out-ablate", global_batch_size=64,
                            halt_max_steps=8, eval_steps=0, eval_max_batches=4, log_interval=25, max_steps=500,
                            max_minutes=0.0, clock_schedule=False, eval_interval=20, ckpt_interval=100)
