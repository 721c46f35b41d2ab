"""Cached original / retrained classifiers of the embedded datasets (digits8x8, one epoch)."""

from __future__ import annotations

import json

import pytest
import torch

from lightning_unlearn.datamodules import ClassRemoval
from lightning_unlearn.pretrained import pretrained_checkpoint, pretrained_classifier


def test_trained_once_cached_and_keyed_by_what_changes_the_weights(tmp_path):
    common = dict(recipe="digits8x8", epochs=1, cache_dir=str(tmp_path), progress=False)
    path = pretrained_checkpoint(**common)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["mode"] == "pretrain" and meta["train_time_s"] > 0 and 0.1 < meta["test_accuracy"] <= 1
    stamp = path.stat().st_mtime_ns
    assert pretrained_checkpoint(**common) == path and path.stat().st_mtime_ns == stamp  # not trained again

    model = pretrained_classifier(**common)
    stored = torch.load(path, weights_only=True)
    assert all(torch.equal(stored[k], v) for k, v in model.state_dict().items())

    other_seed = pretrained_checkpoint(train_seed=1, **common)
    retrained = pretrained_checkpoint(mode="retrain", scenario=ClassRemoval([3]), **common)
    assert len({path, other_seed, retrained}) == 3
    weights = [torch.load(p, weights_only=True) for p in (path, other_seed)]
    assert any(not torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert json.loads(retrained.with_suffix(".json").read_text())["forget"] is not None


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="recipe"):
        pretrained_checkpoint(recipe="imagenet", cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="mode"):
        pretrained_checkpoint(recipe="digits8x8", mode="finetune", cache_dir=str(tmp_path))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="train_seed"):
        pretrained_checkpoint(recipe="digits8x8", train_seed=-1, cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="epochs"):
        pretrained_checkpoint(recipe="digits8x8", epochs=0, cache_dir=str(tmp_path))
    assert not any(tmp_path.iterdir())
