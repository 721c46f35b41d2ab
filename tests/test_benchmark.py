"""lightning-unlearn-benchmark on a tiny configuration (8x8 digits, two cheap methods, one scenario)."""

from __future__ import annotations

import csv
import json

import pytest

from lightning_unlearn.benchmark import CSV_COLUMNS, METHODS, SCENARIOS, RunSpec, main, run_benchmark, run_config
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


@pytest.mark.parametrize("method", list(METHODS))
def test_every_preset_builds_through_the_cli(method, tmp_path, cache):
    """Each generated config parses and instantiates (the method, its datamodule and callbacks)."""
    oracle = tmp_path / "oracle.pt"
    spec = RunSpec(method, "random_10pct", 0, "digits8x8", cache, 2)
    original = {
        "recipe": "digits8x8",
        "scenario": SCENARIOS["random_10pct"],
        "epochs": 2,
        "cache_dir": cache,
        "progress": False,
    }
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps(run_config(spec, oracle, original)))
    cli = UnlearnCLI(args=["--config", str(config)], run=False)
    assert type(cli.model).__name__ == METHODS[method].class_path.rsplit(".", 1)[1]
    assert cli.trainer.max_epochs == METHODS[method].max_epochs
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
