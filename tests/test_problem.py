"""The benchmark and the audit on the user's own classifier and data (shipped presets, user model/data substituted)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml
from test_byo import UserCNN

from lightning_unlearn.benchmark import load_preset
from lightning_unlearn.benchmark import main as benchmark_main
from lightning_unlearn.callbacks import RetrainComparison
from lightning_unlearn.models import load_weights
from lightning_unlearn.privacy_audit import main as audit_main
from lightning_unlearn.problem import UserProblem, compose, load_spec, preset_scenario

_DM = "lightning_unlearn.datamodules"
CLASS0 = {"class_path": f"{_DM}.ClassRemoval", "init_args": {"classes": [0]}}


def _data_spec(scenario: dict | None = None) -> dict:
    return {
        "class_path": f"{_DM}.DatasetDataModule",
        "init_args": {
            "train": {"class_path": "test_byo.GeneratedImages", "init_args": {"n": 40}},
            "test": {"class_path": "test_byo.GeneratedImages", "init_args": {"n": 20, "seed": 1}},
            "scenario": scenario or CLASS0,
            "batch_size": 8,
        },
    }


@pytest.fixture
def problem_files(tmp_path: Path) -> dict[str, Path]:
    torch.manual_seed(0)
    torch.save(UserCNN().state_dict(), tmp_path / "original.pt")
    classifier = {
        "class_path": "lightning_unlearn.models.load_weights",
        "init_args": {"model": {"class_path": "test_byo.UserCNN"}, "ckpt_path": str(tmp_path / "original.pt")},
    }
    files = {"classifier": tmp_path / "classifier.yaml", "data": tmp_path / "data.yaml", "oracle": tmp_path / "r.yaml"}
    files["classifier"].write_text(yaml.safe_dump(classifier))
    files["data"].write_text(yaml.safe_dump({"data": _data_spec()}))  # the fragment form
    oracle = {
        "trainer": {"max_epochs": 2},
        "model": {
            "class_path": "lightning_unlearn.methods.RetrainOracle",
            "init_args": {"optimizer": {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.01}}},
        },
    }
    files["oracle"].write_text(yaml.safe_dump(oracle))
    return files


def test_compose_keeps_the_method_settings_and_takes_the_users_model_and_data():
    preset = load_preset("laf", "class_removal")
    classifier = {"class_path": "test_byo.UserCNN", "init_args": {}}
    data = _data_spec({"class_path": f"{_DM}.ClassRemoval", "init_args": {"classes": [3]}})
    config = compose(preset, classifier, data)
    assert config["model"]["class_path"] == preset["model"]["class_path"]
    for key, value in preset["model"]["init_args"].items():
        if key != "model":
            assert config["model"]["init_args"][key] == value, key
    assert config["model"]["init_args"]["model"] == classifier
    assert config["trainer"] == preset["trainer"]
    assert config["data"]["class_path"] == f"{_DM}.DatasetDataModule"
    assert config["data"]["init_args"]["batch_size"] == preset["data"]["init_args"]["batch_size"] == 32  # LAF's
    assert config["data"]["init_args"]["scenario"]["init_args"] == {"classes": [3]}  # the user's scenario
    assert config["data"]["init_args"]["train"] == data["init_args"]["train"]
    assert preset["model"]["init_args"]["model"] != classifier  # the preset is not modified


def test_specs_read_from_a_spec_or_a_fragment_and_errors_are_clear(tmp_path):
    spec = {"class_path": "test_byo.UserCNN", "init_args": {"in_channels": 3}}
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(spec))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump({"model": {"init_args": {"model": spec}}}))
    assert load_spec(tmp_path / "a.yaml", "model") == spec == load_spec(tmp_path / "b.yaml", "model")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"something": 1}))
    with pytest.raises(ValueError, match="expected a spec with a class_path"):
        load_spec(tmp_path / "c.yaml", "data")
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_spec(tmp_path / "missing.yaml", "data")


def test_preset_folder_follows_the_scenario_kind():
    assert preset_scenario(_data_spec()) == "class_removal"
    assert preset_scenario(_data_spec({"class_path": f"{_DM}.KInstances", "init_args": {"k": 4}})) == "k16"
    with pytest.raises(ValueError, match="has no shipped presets; use one of ClassRemoval"):
        preset_scenario(_data_spec({"class_path": f"{_DM}.SubclassRemoval"}))


def test_user_problem_needs_an_oracle(tmp_path):
    with pytest.raises(ValueError, match="give the retrain oracle"):
        UserProblem({}, _data_spec(), {"class_removal": CLASS0})
    (tmp_path / "o.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="one oracle"):
        UserProblem({}, _data_spec(), {"class_removal": CLASS0, "k16": {}}, oracle=str(tmp_path / "o.pt"))


@pytest.mark.slow
def test_benchmark_runs_the_presets_on_the_users_model_and_data(problem_files, tmp_path, capsys):
    # the user's model is a torchvision ResNet-18 with the user's weights, as in the README (no head_name set)
    import torchvision

    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), tmp_path / "resnet.pt")
    resnet = {
        "class_path": "lightning_unlearn.models.load_weights",
        "init_args": {
            "model": {"class_path": "torchvision.models.resnet18", "init_args": {"num_classes": 10}},
            "ckpt_path": str(tmp_path / "resnet.pt"),
        },
    }
    problem_files["classifier"].write_text(yaml.safe_dump(resnet))
    out = tmp_path / "bench"
    args = ["--classifier", str(problem_files["classifier"]), "--data", str(problem_files["data"])]
    args += ["--oracle-config", str(problem_files["oracle"]), "--methods", "ssd", "random_label"]
    args += ["--seeds", "1", "--workers", "1", "--out", str(out)]
    benchmark_main(args)
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [(r["method"], r["scenario"]) for r in rows] == [("ssd", "class_removal"), ("random_label", "class_removal")]
    assert all(r["gap_avg"] != "" and r["acc_forget"] != "" for r in rows)
    oracle = next((out / "oracles").glob("class_removal-*/classifier.pt"))
    run = json.loads((out / "runs/random_label/class_removal/seed0/benchmark.yaml").read_text())
    preset = load_preset("random_label", "class_removal")
    assert run["model"]["init_args"]["lr"] == preset["model"]["init_args"]["lr"]
    assert run["model"]["init_args"]["model"]["init_args"]["model"]["class_path"] == "torchvision.models.resnet18"
    assert run["data"]["class_path"] == f"{_DM}.DatasetDataModule"
    comparison = next(c for c in run["trainer"]["callbacks"] if c["class_path"].endswith("RetrainComparison"))
    assert comparison["init_args"]["reference_ckpt"] == str(oracle)
    # a second run reuses the cached oracle and the finished runs
    stamp = oracle.stat().st_mtime_ns
    benchmark_main(args)
    assert oracle.stat().st_mtime_ns == stamp


def test_benchmark_refuses_half_a_problem(problem_files, capsys):
    with pytest.raises(SystemExit) as info:
        benchmark_main(["--classifier", str(problem_files["classifier"])])
    assert info.value.code == 2
    assert "needs both --classifier FILE and --data FILE" in capsys.readouterr().err


@pytest.mark.slow
def test_audit_runs_a_shipped_preset_on_the_users_model_and_data(problem_files, tmp_path):
    out = tmp_path / "audit"
    audit_main(
        [
            "--method",
            "random_label",
            "--classifier",
            str(problem_files["classifier"]),
            "--data",
            str(problem_files["data"]),
            "--retrain-config",
            str(problem_files["oracle"]),
            "--models",
            "2",
            "--workers",
            "1",
            "--out",
            str(out),
        ]
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["models"] == 2 and summary["forget_examples"] == 4
    method = yaml.safe_load((out / "method.yaml").read_text())
    assert method["model"]["class_path"].endswith("RandomLabel")
    assert method["model"]["init_args"]["model"]["init_args"]["model"]["class_path"] == "test_byo.UserCNN"
    retrain = yaml.safe_load((out / "retrain.yaml").read_text())
    assert retrain["data"]["init_args"]["mode"] == "retrain"
    # each retrained model starts from its own initialisation (the oracle's seed argument follows the model seed)
    first, second = (torch.load(out / "models" / f"retrained_{i:03d}.pt", weights_only=True) for i in (0, 1))
    assert not torch.equal(first["forget_logits"], second["forget_logits"])


def test_load_weights_reads_lightning_checkpoints_and_refuses_other_architectures(tmp_path):
    torch.manual_seed(0)
    source = UserCNN()
    torch.save({"state_dict": {f"model.{k}": v for k, v in source.state_dict().items()}}, tmp_path / "m.ckpt")
    loaded = load_weights(UserCNN(), tmp_path / "m.ckpt")
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in loaded.state_dict().items())
    with pytest.raises(ValueError, match="does not match Linear"):
        load_weights(torch.nn.Linear(3, 2), tmp_path / "m.ckpt")
    with pytest.raises(ValueError, match="does not fit UserCNN"):
        load_weights(UserCNN(num_classes=3), tmp_path / "m.ckpt")


def test_retrain_comparison_needs_an_architecture_and_a_checkpoint():
    with pytest.raises(ValueError, match="needs reference_ckpt"):
        RetrainComparison(arch="tiny_cnn", num_classes=10)
    with pytest.raises(ValueError, match="reference_model \\(a module\\) or arch and num_classes"):
        RetrainComparison(reference_ckpt="x.pt")
