"""Every method's config runs on 2 CPU processes (DDP, gloo); statistics passes give the 1-process edit."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ddp_methods_script import EXTRA, OVERFIT_EDITS, STATISTICS
from test_reliability import MATRIX

from lightning_unlearn.main import main

pytestmark = pytest.mark.slow  # two-process runs of every method: minutes

SCRIPT = Path(__file__).with_name("ddp_methods_script.py")
EDIT_STATS = (
    "ssd/selected_fraction",
    "ssd/dampened_fraction",
    "ssd/zeroed_count",
    "actreset/channels_reset",
    "actreset/channel_fraction",
    "prune/reset_count",
    "prune/reset_fraction",
    "prune/mask_forget_fraction",
    "prune/mask_retain_fraction",
)


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory) -> Path:
    """One interpreter runs every method config on 2 processes (``ddp_fork``), one after the other."""
    out = tmp_path_factory.mktemp("ddp")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", LIGHTNING_UNLEARN_CACHE=str(out / "cache"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SCRIPT.parents[1]), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), *MATRIX, *EXTRA],
        env=env,
        cwd=out,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout.decode()[-4000:]
    return out


@pytest.mark.parametrize("name", list(MATRIX))
def test_method_runs_on_two_processes(name, ddp_runs):
    folder = ddp_runs / name
    result = json.loads((folder / "result.json").read_text())
    assert result["world_size"] == 2
    assert any(key.startswith("acc/") for key in result["metrics"])
    assert all(math.isfinite(v) for k, v in result["metrics"].items() if k.startswith(("acc/", "mia/")))
    unlearned = torch.load(folder / "ddp" / "classifier.pt", weights_only=True)
    original = torch.load(folder / "original.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in unlearned.values() if v.is_floating_point())
    assert any(not torch.equal(unlearned[k], v) for k, v in original.items()), "nothing was unlearned"


@pytest.mark.parametrize("name", sorted({*STATISTICS, *OVERFIT_EDITS}))
def test_statistics_edit_equals_one_process(name, ddp_runs, monkeypatch):
    folder = ddp_runs / name
    monkeypatch.chdir(folder)
    monkeypatch.setenv("LIGHTNING_UNLEARN_CACHE", str(ddp_runs / "cache"))
    result = json.loads((folder / "result.json").read_text())
    single = main(["fit", "--config", result["config"], f"--trainer.default_root_dir={folder / 'single'}"])
    logged = {k: float(v) for k, v in single.trainer.callback_metrics.items()}
    stats = [k for k in EDIT_STATS if k in logged]
    assert stats, "the method logged no edit statistics"
    for key in stats:
        assert result["metrics"][key] == pytest.approx(logged[key], rel=1e-9), key
    if name != "ActivationReset":  # no training after the edit: the whole classifier must agree
        two = torch.load(folder / "ddp" / "classifier.pt", weights_only=True)
        one = torch.load(folder / "single" / "classifier.pt", weights_only=True)
        for key, value in one.items():
            assert torch.allclose(value, two[key], atol=1e-6, rtol=1e-5), key


def test_salun_mask_equals_one_process(ddp_runs, monkeypatch):
    """SalUn's saliency statistic is summed across ranks once: the 2-process mask is the 1-process mask."""
    folder = ddp_runs / "SalUn"
    monkeypatch.chdir(folder)
    monkeypatch.setenv("LIGHTNING_UNLEARN_CACHE", str(ddp_runs / "cache"))
    result = json.loads((folder / "result.json").read_text())
    main(["fit", "--config", result["config"], f"--trainer.default_root_dir={folder / 'single'}"])
    two = torch.load(folder / "ddp" / "salun_mask.pt", weights_only=True)
    one = torch.load(folder / "single" / "salun_mask.pt", weights_only=True)
    assert one["k"] == two["k"] > 0
    # Summation order differs across ranks (float rounding): at most a swap of entries tied at the threshold.
    assert sum(int((one["mask"][n] != two["mask"][n]).sum()) for n in one["mask"]) <= 2
