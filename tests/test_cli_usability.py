"""The command line in the user's terms: short class names, method help, short error messages, result tables."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch import LightningDataModule
from test_cli import tiny_config
from test_hostile_inputs import _evil_checkpoint
from torch.utils.data import DataLoader, TensorDataset

from lightning_unlearn import main as main_module
from lightning_unlearn.errors import MAX_MESSAGE_LINES, load_error_reason
from lightning_unlearn.methods import SSD
from lightning_unlearn.models import load_classifier
from lightning_unlearn.presets import CONFIG_ROOT

ROOT = Path(__file__).resolve().parents[1]
UNSAFE_ADVICE = ("weights_only=False", "`weights_only` set to `False`", "add_safe_globals")
TINY_MODEL = [
    "--model.model.class_path=lightning_unlearn.models.load_classifier",
    "--model.model.arch=tiny_cnn",
    "--model.model.num_classes=10",
    "--model.model.in_channels=1",
]


class PlainData(LightningDataModule):
    """A user's datamodule that does not derive from the library's base."""

    def __init__(self, n: int = 8) -> None:
        super().__init__()
        self.n = n

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.rand(self.n, 1, 28, 28), torch.zeros(self.n, dtype=torch.long)))


def _config(tmp_path: Path, edit=None) -> Path:
    path = tiny_config(CONFIG_ROOT / "quickstart.yaml", tmp_path)
    if edit is not None:
        cfg = yaml.safe_load(path.read_text())
        edit(cfg)
        path.write_text(yaml.safe_dump(cfg))
    return path


def _run(monkeypatch, capsys, *argv: str) -> tuple[int, str, str]:
    """``lightning-unlearn *argv`` in this process: exit code, stdout and stderr."""
    monkeypatch.setattr(sys, "argv", ["lightning-unlearn", *argv])
    monkeypatch.delenv("LIGHTNING_UNLEARN_DEBUG", raising=False)
    with pytest.raises(SystemExit) as info:
        main_module.run()
    out = capsys.readouterr()
    return int(info.value.code or 0), out.out, out.err


def _assert_short_error(code: int, err: str, *expected: str) -> None:
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("Seed set to")]
    assert code == 2, err
    assert 1 <= len(lines) <= MAX_MESSAGE_LINES, err
    assert "Traceback" not in err and "Does not validate against any of the Union subtypes" not in err
    for text in expected:
        assert text in err, err
    assert not any(advice in err for advice in UNSAFE_ADVICE), err


# ----------------------------------------------------------------------------------------- short class names, help
def test_short_method_and_datamodule_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = main_module.main(["--model", "SSD", "--data", "MNIST5kDataModule", *TINY_MODEL], run=False)
    assert type(cli.model) is SSD
    assert type(cli.datamodule).__name__ == "MNIST5kDataModule"


def test_a_plain_lightning_datamodule_is_still_accepted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = main_module.main(
        ["--model", "Finetune", "--data", f"{__name__}.PlainData", "--data.n", "4", *TINY_MODEL], run=False
    )
    assert isinstance(cli.datamodule, PlainData) and cli.datamodule.n == 4
    # no named evaluation splits: no forgetting metrics are added
    assert "ForgettingMetrics" not in [type(c).__name__ for c in cli.trainer.callbacks]


def test_fit_help_lists_the_methods_and_model_help_prints_a_methods_arguments(monkeypatch, capsys):
    code, out, _ = _run(monkeypatch, capsys, "fit", "--help")
    assert code == 0
    for name in ("lightning_unlearn.methods.SSD", "lightning_unlearn.methods.SCRUB", "MNIST5kDataModule"):
        assert name in out
    code, out, _ = _run(monkeypatch, capsys, "fit", "--model.help", "SSD")
    assert code == 0
    assert "--model.alpha" in out and "--model.full_importance_path" in out


def test_trainer_method_defaults_are_safe_loading_and_no_lightning_tables(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, _ = _run(monkeypatch, capsys, "test", "--config", str(_config(tmp_path)), "--print_config")
    printed = yaml.safe_load(out)
    assert code == 0 and printed["weights_only"] is True and printed["verbose"] is False


# ----------------------------------------------------------------------------------------- short errors
def test_unknown_class_of_the_dataset_is_one_short_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)

    def forget_class_12(cfg: dict) -> None:
        cfg["data"]["init_args"]["scenario"]["init_args"]["classes"] = [12]

    code, _, err = _run(monkeypatch, capsys, "fit", "--config", str(_config(tmp_path, forget_class_12)))
    _assert_short_error(code, err, "ClassRemoval: unknown class id 12; allowed ids 0..9")


def test_negative_learning_rate(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = _run(monkeypatch, capsys, "fit", "--config", str(_config(tmp_path)), "--model.lr=-1")
    _assert_short_error(code, err, "lr must be a finite number > 0, got -1.0")


def test_missing_files_are_named(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = str(_config(tmp_path))
    code, _, err = _run(monkeypatch, capsys, "fit", "--config", config, "--ckpt_path", "missing.ckpt")
    _assert_short_error(code, err, "missing.ckpt")
    code, _, err = _run(monkeypatch, capsys, "fit", "--config", "no_such_config.yaml")
    _assert_short_error(code, err, "no_such_config.yaml")

    def missing_classifier(cfg: dict) -> None:
        cfg["model"]["init_args"]["model"]["init_args"]["ckpt_path"] = "missing_classifier.pt"

    code, _, err = _run(monkeypatch, capsys, "fit", "--config", str(_config(tmp_path, missing_classifier)))
    _assert_short_error(code, err, "missing_classifier.pt")


def test_unsafe_checkpoints_are_refused_naming_the_file_without_unsafe_advice(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "pwned"
    evil = _evil_checkpoint(tmp_path / "evil.ckpt", marker)
    config = str(_config(tmp_path))
    code, _, err = _run(monkeypatch, capsys, "fit", "--config", config, "--ckpt_path", str(evil))
    _assert_short_error(code, err, f"cannot use checkpoint {evil}", "not an allowed global")

    def evil_classifier(cfg: dict) -> None:
        cfg["model"]["init_args"]["model"]["init_args"]["ckpt_path"] = str(evil)

    code, _, err = _run(monkeypatch, capsys, "fit", "--config", str(_config(tmp_path, evil_classifier)))
    _assert_short_error(code, err, f"refused to load {evil}")
    assert not marker.exists()


def test_load_errors_of_the_library_never_advise_unsafe_loading(tmp_path):
    evil = _evil_checkpoint(tmp_path / "evil.pt", tmp_path / "pwned")
    with pytest.raises(Exception) as raw:
        torch.load(evil, weights_only=True)
    assert any(advice in str(raw.value) for advice in UNSAFE_ADVICE)  # control: torch's text does advise it
    reason = load_error_reason(raw.value)
    assert "GLOBAL builtins.exec" in reason or "GLOBAL exec" in reason
    with pytest.raises(ValueError) as from_factory:
        load_classifier("tiny_cnn", 10, str(evil), in_channels=1)
    with pytest.raises(ValueError) as from_cli:
        main_module.check_checkpoint(evil)
    for message in (reason, str(from_factory.value), str(from_cli.value)):
        assert not any(advice in message for advice in UNSAFE_ADVICE), message


def test_unknown_key_and_wrong_type_keep_the_key_message(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)

    def unknown_key(cfg: dict) -> None:
        cfg["model"]["init_args"]["no_such_option"] = 3

    code, _, err = _run(monkeypatch, capsys, "fit", "--config", str(_config(tmp_path, unknown_key)))
    _assert_short_error(code, err, "no_such_option", "is not accepted", "--model.help RandomLabel")
    code, _, err = _run(monkeypatch, capsys, "fit", "--config", str(_config(tmp_path)), "--model.lr", "abc")
    _assert_short_error(code, err, 'key "model.lr"', "abc")
    code, _, err = _run(monkeypatch, capsys, "fit", "--model", "NoSuchMethod")
    _assert_short_error(code, err, "NoSuchMethod", "lists the known methods")


def test_debug_flag_and_environment_variable_raise_the_full_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = str(_config(tmp_path))
    monkeypatch.setattr(sys, "argv", ["lightning-unlearn", "fit", "--config", config, "--model.lr=-1", "--debug"])
    with pytest.raises(ValueError, match="lr must be a finite number"):
        main_module.run()
    monkeypatch.setattr(sys, "argv", ["lightning-unlearn", "fit", "--config", config, "--model.lr=-1"])
    monkeypatch.setenv("LIGHTNING_UNLEARN_DEBUG", "1")
    with pytest.raises(ValueError, match="lr must be a finite number"):
        main_module.run()


def test_python_callers_still_get_the_exceptions(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="lr must be a finite number"):
        main_module.main(["--config", str(_config(tmp_path)), "--model.lr=-1"], run=False)
    with pytest.raises(SystemExit):
        main_module.main(["--config", str(_config(tmp_path)), "--model.lr", "abc"], run=False)


@pytest.mark.slow
def test_console_script_prints_a_short_message_without_traceback(tmp_path):
    config = _config(tmp_path)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("LIGHTNING_UNLEARN_DEBUG", None)
    command = [sys.executable, "-m", "lightning_unlearn", "fit", "--config", str(config), "--model.lr=-1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    _assert_short_error(result.returncode, result.stderr, "lr must be a finite number > 0")
    result = subprocess.run([*command, "--debug"], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert result.returncode != 0 and "Traceback" in result.stderr


# ----------------------------------------------------------------------------------------- result tables
def test_test_and_validate_print_the_librarys_table_by_split(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = str(_config(tmp_path))
    for subcommand in ("test", "validate"):
        monkeypatch.setattr(sys, "argv", ["lightning-unlearn", subcommand, "--config", config])
        main_module.run()
        out = capsys.readouterr().out
        assert "DataLoader 0" not in out
        assert "split" in out and "acc (%)" in out
        for split in ("forget", "retain", "test_forget"):
            assert f" {split} " in out, out


def test_results_tables_put_splits_in_rows_and_percentages():
    from rich.console import Console

    metrics = {"acc/forget": 0.25, "acc/retain": 0.5, "loss/forget": 1.5, "mia/entropy_rate": 0.125, "cost/s": 2.0}
    console = Console(width=200, record=True)
    console.print(*main_module.results_tables(metrics, ["forget", "retain"]))
    text = console.export_text()
    forget_row = next(line for line in text.splitlines() if " forget " in line)
    assert "25.00" in forget_row and "1.5" in forget_row
    assert "mia/entropy_rate (%)" in text and "12.50" in text and "cost/s" in text
