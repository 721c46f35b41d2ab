"""lightning-unlearn-benchmark on a tiny configuration (8x8 digits, two cheap methods, one scenario)."""

from __future__ import annotations

import csv
import json

import pytest
import yaml

from lightning_unlearn.benchmark import (
    CSV_COLUMNS,
    SCENARIOS,
    RunSpec,
    load_preset,
    main,
    preset_methods,
    preset_path,
    run_benchmark,
    run_config,
)
from lightning_unlearn.main import UnlearnCLI
from lightning_unlearn.pretrained import pretrained_checkpoint


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    """One cache of original / retrained digits models for the whole module."""
    return str(tmp_path_factory.mktemp("cache"))


def test_tiny_benchmark_outputs_and_resume(tmp_path, cache):
    out = tmp_path / "bench"
    kwargs = dict(
        methods=["gradient_ascent", "ssd"],
        scenarios=["class_removal"],
        seeds=2,
        workers=1,
        recipe="digits8x8",
        recipe_epochs=2,
        cache_dir=cache,
    )
    records = run_benchmark(out=out, **kwargs)

    assert [(r["method"], r["seed"]) for r in records] == [
        ("gradient_ascent", 0),
        ("gradient_ascent", 1),
        ("ssd", 0),
        ("ssd", 1),
    ]
    for record in records:
        metrics = record["metrics"]
        for name in ("acc/forget", "acc/test_retain", "mia/svc_confidence_efficacy", "gap/avg", "dist/zrf"):
            assert 0 <= metrics[name] <= 1, name
        assert metrics["cost/unlearn_time_s"] > 0 and metrics["cost/time_ratio"] > 0
        assert record["reference"]["acc/forget"] == 0.0  # the oracle never saw the forgotten class
        oracle_time = json.loads(
            pretrained_checkpoint("digits8x8", "retrain", SCENARIOS_OBJ(), epochs=2, cache_dir=cache, train=False)
            .with_suffix(".json")
            .read_text()
        )["train_time_s"]
        assert metrics["cost/time_ratio"] == pytest.approx(metrics["cost/unlearn_time_s"] / oracle_time)
    ascent = [r["metrics"] for r in records if r["method"] == "gradient_ascent"]
    assert ascent[0]["cost/optimizer_steps"] > 0 and ascent[0] != ascent[1]  # the seeds shuffle differently
    assert all(r["metrics"]["cost/optimizer_steps"] == 0 for r in records if r["method"] == "ssd")

    with open(out / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 and list(rows[0]) == ["method", "scenario", "seed", *CSV_COLUMNS.values(), "wall_s"]
    assert float(rows[0]["gap_avg"]) == pytest.approx(records[0]["metrics"]["gap/avg"])
    markdown = (out / "results.md").read_text()
    assert "### class_removal" in markdown and "| retrain (oracle) | 0.0 |" in markdown
    assert "| gradient_ascent |" in markdown and " ± " in markdown
    for plot in ("forget_vs_test.png", "cost_vs_gap.png"):
        assert (out / plot).read_bytes()[:4] == b"\x89PNG"

    # the run is the shipped preset with only the benchmark's own settings changed
    ran = json.loads((out / "runs" / "gradient_ascent" / "class_removal" / "seed1" / "benchmark.yaml").read_text())
    shipped = yaml.safe_load(preset_path("gradient_ascent", "class_removal").read_text())
    assert not _unexpected(ran, shipped, ALLOWED | {"data.class_path"})  # another recipe: its datamodule class
    assert ran["model"]["init_args"]["lr"] == shipped["model"]["init_args"]["lr"]

    # resume: finished runs are not repeated
    result = out / "runs" / "ssd" / "class_removal" / "seed1" / "result.json"
    stamp = result.stat().st_mtime_ns
    (out / "runs" / "gradient_ascent" / "class_removal" / "seed0" / "result.json").unlink()
    again = run_benchmark(out=out, **kwargs)
    assert result.stat().st_mtime_ns == stamp
    assert again[2:] == records[2:]


def SCENARIOS_OBJ():  # noqa: N802
    from lightning_unlearn.datamodules import ClassRemoval

    return ClassRemoval([0])


#: What the benchmark may set in a shipped preset: seeds, outputs, the cached original and its evaluation.
ALLOWED = {
    "seed_everything",
    "trainer.logger",
    "trainer.callbacks",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.check_val_every_n_epoch",
    "trainer.num_sanity_val_steps",
    "model.init_args.model",
    "model.init_args.seed",
    "data.init_args.shuffle_seed",
}


def _differences(a, b, prefix=""):
    """Dotted paths where two nested configs differ (a key present in one only counts as a difference)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = set()
        for key in set(a) | set(b):
            out |= _differences(a.get(key, _MISSING), b.get(key, _MISSING), f"{prefix}{key}.")
        return out
    return set() if a == b else {prefix.rstrip(".")}


def _unexpected(a, b, allowed):
    """Differences outside the allowed paths (a difference inside an allowed path counts as that path)."""
    return {d for d in _differences(a, b) if not any(d == p or d.startswith(p + ".") for p in allowed)}


_MISSING = object()
PAIRS = [(m, sc) for sc in SCENARIOS for m in preset_methods([sc])]


def test_every_method_has_presets_on_the_benchmark_scenarios():
    methods = preset_methods()
    assert {"laf", "laf_r", "ssd", "jit", "finetune", "pruning_complex", "l2ul"} <= set(methods)
    # every method runs every scenario, except where the method itself cannot: L2UL forgets k instances,
    # UNSIR needs whole forget classes
    only = {"l2ul": {"k16"}, "unsir": {"class_removal"}}
    for method in methods:
        have = {sc for m, sc in PAIRS if m == method}
        assert have == only.get(method, set(SCENARIOS)), method


@pytest.mark.parametrize(("method", "scenario"), PAIRS, ids=[f"{m}-{sc}" for m, sc in PAIRS])
def test_run_config_is_the_shipped_preset(method, scenario, tmp_path):
    """A run's config equals the shipped file apart from the benchmark's own settings (no second copy of values)."""
    spec = RunSpec(method, scenario, 1, "mnist5k", str(tmp_path), None)
    original = {"recipe": "mnist5k", "scenario": SCENARIOS[scenario], "cache_dir": str(tmp_path), "progress": False}
    config = run_config(spec, tmp_path / "oracle.pt", original)
    shipped = yaml.safe_load(preset_path(method, scenario).read_text())
    assert not _unexpected(config, shipped, ALLOWED)
    assert config["trainer"].get("max_epochs") == shipped["trainer"].get("max_epochs")
    assert config["data"]["init_args"].get("batch_size") == shipped["data"]["init_args"].get("batch_size")
    assert config["seed_everything"] == 1 and config["data"]["init_args"]["shuffle_seed"] == 1


def test_laf_preset_keeps_the_authors_batch_size(tmp_path):
    """The bug the presets fixed: the benchmark ran LAF at the pretraining batch (128) instead of its 32."""
    spec = RunSpec("laf", "class_removal", 0, "mnist5k", str(tmp_path), None)
    config = run_config(spec, tmp_path / "oracle.pt", {"recipe": "mnist5k"})
    assert config["data"]["init_args"]["batch_size"] == 32


def test_a_preset_for_another_scenario_is_refused(tmp_path):
    folder = tmp_path / "presets" / "class_removal"
    folder.mkdir(parents=True)
    config = yaml.safe_load(preset_path("finetune", "random_10pct").read_text())
    (folder / "finetune.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match="not the benchmark's 'class_removal'"):
        load_preset("finetune", "class_removal", tmp_path / "presets")
    with pytest.raises(ValueError, match="no preset"):
        load_preset("ssd", "class_removal", tmp_path / "presets")


@pytest.mark.parametrize("method", preset_methods())
def test_every_preset_builds_through_the_cli(method, tmp_path, cache):
    """Each generated config parses and instantiates (the method, its datamodule and callbacks)."""
    scenario = next(sc for sc in SCENARIOS if preset_path(method, sc).is_file())
    oracle = tmp_path / "oracle.pt"
    spec = RunSpec(method, scenario, 0, "digits8x8", cache, 2)
    original = {
        "recipe": "digits8x8",
        "scenario": SCENARIOS[scenario],
        "epochs": 2,
        "cache_dir": cache,
        "progress": False,
    }
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps(run_config(spec, oracle, original)))
    cli = UnlearnCLI(args=["--config", str(config)], run=False)
    shipped = yaml.safe_load(preset_path(method, scenario).read_text())
    assert type(cli.model).__name__ == shipped["model"]["class_path"].rsplit(".", 1)[1]
    # the shipped value, or the method's own budget for a preset that leaves max_epochs to the method
    assert cli.trainer.max_epochs == shipped["trainer"].get("max_epochs", cli.model.required_epochs())
    if "seed" in cli.model.hparams:
        assert cli.model.hparams["seed"] == 0


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown method"):
        run_benchmark(methods=["magic"], out=tmp_path)
    with pytest.raises(ValueError, match="unknown scenario"):
        run_benchmark(scenarios=["everything"], out=tmp_path)
    with pytest.raises(ValueError, match="seeds"):
        run_benchmark(seeds=0, out=tmp_path)
    with pytest.raises(SystemExit):
        main(["--methods", "magic"])
