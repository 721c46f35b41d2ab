"""Warnings after an edit with no effect and after large retain-accuracy damage, each naming the knob to turn."""

from __future__ import annotations

import warnings

import pytest
import torch
from data_factories import ToyDataModule
from torch import nn
from trainers import quiet_trainer

from lightning_unlearn.callbacks import UnlearningReport
from lightning_unlearn.datamodules import ClassRemoval
from lightning_unlearn.hints import DAMAGE_HINTS, NO_EFFECT_HINTS, tuning_hint
from lightning_unlearn.methods import SSD, ActivationReset, Finetune, Pruning, RandomLabel
from lightning_unlearn.models import load_classifier


def _cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return load_classifier("tiny_cnn", 10, in_channels=1)


def _messages(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record]


def _fit(method: nn.Module, tmp_path, callbacks=None, max_epochs: int = 1) -> None:
    trainer = quiet_trainer(tmp_path, max_epochs=max_epochs, callbacks=callbacks or [], num_sanity_val_steps=0)
    trainer.fit(method, datamodule=ToyDataModule(scenario=ClassRemoval(classes=[0]), batch_size=16))


@pytest.mark.parametrize(("alpha", "warned"), [(1e9, True), (1e-3, False)])
def test_ssd_warns_when_it_dampens_almost_nothing(tmp_path, alpha, warned):
    method = SSD(_cnn(), alpha=alpha, lambda_=1.0)
    before = {k: v.clone() for k, v in method.model.state_dict().items()}
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _fit(method, tmp_path)
    hits = [m for m in _messages(record) if m.startswith("SSD dampened")]
    fraction = method.edit_stats["dampened_fraction"]
    if warned:
        assert fraction == 0.0
        assert all(torch.equal(before[k], v) for k, v in method.model.state_dict().items())
        assert len(hits) == 1 and "lower `alpha`" in hits[0] and "lambda_" in hits[0]
    else:
        assert fraction > 0.01
        assert hits == []


def test_pruning_warns_when_it_resets_no_weight(monkeypatch):
    method = Pruning(_cnn(), seed=0)
    monkeypatch.setattr(
        type(method),
        "masks",
        lambda self: {
            n: torch.zeros_like(p, dtype=torch.bool)
            for n, p in self.model.named_parameters()
            if n in self.eligible_names()
        },
    )
    with pytest.warns(UserWarning, match=r"Pruning reset 0 of \d+ eligible weights.*raise `quantile`"):
        method.apply_edit()


def test_pruning_with_a_real_mask_does_not_warn():
    method = Pruning(_cnn(), seed=0)
    assert method.copy_forget is not None
    with torch.no_grad():
        for p in method.copy_forget.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        method.apply_edit()
    assert not [m for m in _messages(record) if "eligible weights" in m]


@pytest.mark.parametrize("reset_head", [True, False])
def test_activation_reset_warns_when_no_channel_is_flagged(reset_head):
    method = ActivationReset(_cnn(), seed=0, reset_head=reset_head)
    none = {
        name: torch.zeros(dict(method.model.named_modules())[name].weight.shape[0], dtype=torch.bool)
        for name in method.layer_names
    }
    consequence = "only the head is redrawn" if reset_head else "the classifier is \\(almost\\) unchanged"
    with pytest.warns(UserWarning, match=rf"ActivationReset flagged 0 of \d+ channels: {consequence}; lower `toll`"):
        method.apply_edit(none)
    some = {name: torch.ones_like(flags) for name, flags in none.items()}
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        method.apply_edit(some)
    assert not [m for m in _messages(record) if "flagged 0" in m]


def test_report_warns_on_a_large_retain_drop_and_names_the_knob():
    report = UnlearningReport(max_retain_drop=0.05)
    method = RandomLabel(_cnn())
    with pytest.warns(UserWarning, match="RandomLabel: acc/retain fell from 97.0% to 22.0%") as record:
        report.check_damage(method, {"acc/retain": 0.97}, {"acc/retain": 0.22})
    assert "lower `lr` or `trainer.max_epochs`" in str(record[0].message)
    assert report.warnings == [str(record[0].message)]
    report.check_damage(method, {"acc/retain": 0.97}, {"acc/retain": 0.93})  # 4 points: within the tolerance
    report.check_damage(method, {}, {"acc/retain": 0.1})  # no before value: nothing to compare
    assert len(report.warnings) == 1


def test_report_checks_the_damage_at_the_end_of_fit(tmp_path, monkeypatch):
    import lightning_unlearn.callbacks.report as report_module

    monkeypatch.setattr(report_module, "collect_metrics", lambda _: ({"acc/retain": 0.9}, {"acc/retain": 0.5}))
    report = UnlearningReport(print_table=False, export=False)
    with pytest.warns(UserWarning, match="Finetune: acc/retain fell from 90.0% to 50.0%"):
        _fit(Finetune(_cnn(), lr=1e-4), tmp_path, callbacks=[report])
    assert len(report.warnings) == 1


def test_report_stays_quiet_within_the_tolerance_or_when_turned_off(tmp_path):
    for tolerance in (1.0, None):
        report = UnlearningReport(print_table=False, export=False, max_retain_drop=tolerance)
        _fit(Finetune(_cnn(), lr=1e-4), tmp_path, callbacks=[report])
        assert report.warnings == []


@pytest.mark.parametrize("bad", [-0.1, 1.5, True, "0.1"])
def test_report_refuses_a_bad_tolerance(bad):
    with pytest.raises(ValueError, match=r"max_retain_drop must be a fraction in \[0, 1\] or None"):
        UnlearningReport(max_retain_drop=bad)


def test_hints_follow_the_class_hierarchy_and_fall_back_to_lr_and_epochs():
    class MySSD(SSD):
        pass

    assert tuning_hint(MySSD, "no_effect").startswith(NO_EFFECT_HINTS["SSD"])
    assert tuning_hint(SSD, "damage").startswith(DAMAGE_HINTS["SSD"])
    assert tuning_hint(Finetune, "damage").startswith("lower `lr` or `trainer.max_epochs`")
    assert tuning_hint(object(), "no_effect").endswith("(lightning-unlearn-tune searches them for your model)")
    with pytest.raises(ValueError, match="kind must be one of"):
        tuning_hint(SSD, "broken")  # type: ignore[arg-type]


def test_every_hint_names_arguments_the_method_has():
    import inspect
    import re

    import lightning_unlearn.methods as methods

    for table in (NO_EFFECT_HINTS, DAMAGE_HINTS):
        for name, text in table.items():
            cls = getattr(methods, name)
            arguments = set(inspect.signature(cls.__init__).parameters)
            for knob in re.findall(r"`([a-z_.]+)`", text):
                assert knob.startswith("trainer.") or knob in arguments, (name, knob)
