"""Argument checks (lightning_unlearn.validation), the seeded-generator helper and the random-label table."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lightning_unlearn.methods.base import check_choice as base_check_choice
from lightning_unlearn.methods.base import check_integer as base_check_integer
from lightning_unlearn.methods.base import check_positive as base_check_positive
from lightning_unlearn.methods.random_labels import draw_label_offsets, draw_wrong_labels
from lightning_unlearn.seeding import seeded_generator
from lightning_unlearn.validation import (
    check_choice,
    check_fraction,
    check_integer,
    check_integers,
    check_positive,
    is_integer,
    is_number,
)


def test_methods_base_reexports_the_same_checks():
    assert base_check_integer is check_integer
    assert base_check_positive is check_positive
    assert base_check_choice is check_choice


def test_is_integer_and_is_number_refuse_bools():
    assert is_integer(3) and is_integer(-1) and is_integer(0)
    assert not is_integer(True) and not is_integer(False) and not is_integer(2.0) and not is_integer("2")
    assert not is_integer(np.int64(2)) and is_integer(np.int64(2), numpy=True)
    assert not is_integer(np.bool_(True), numpy=True)
    assert is_number(1) and is_number(0.5) and not is_number(True) and not is_number("0.5")
    assert is_number(np.float32(0.5), numpy=True) and not is_number(np.float32(0.5))


def test_check_integer_accepts_and_refuses():
    check_integer("seed", 0)
    check_integer("epochs", 5, 1)
    check_integer("limit", None, 1, optional=True)
    with pytest.raises(ValueError, match=r"^seed must be an integer >= 0, got -1$"):
        check_integer("seed", -1)
    with pytest.raises(ValueError, match=r"^epochs must be an integer >= 1, got True$"):
        check_integer("epochs", True, 1)
    with pytest.raises(ValueError, match=r"^epochs must be an integer >= 1, got 2\.0$"):
        check_integer("epochs", 2.0, 1)
    with pytest.raises(ValueError, match=r"^limit must be an integer >= 1 or None, got 0$"):
        check_integer("limit", 0, 1, optional=True)
    with pytest.raises(ValueError, match="got None"):
        check_integer("seed", None)


def test_check_integers():
    assert check_integers("hidden", [3, 4], 1) == (3, 4)
    assert check_integers("sizes", (), 1) == ()
    for bad in ([3, 0], [3, True], [3.0], "12", 7):
        with pytest.raises(ValueError, match=r"^(hidden|sizes) must hold integers >= 1, got"):
            check_integers("hidden", bad, 1)


def test_check_positive():
    check_positive("lr", 1e-3)
    check_positive("weight_decay", 0.0, allow_zero=True)
    with pytest.raises(ValueError, match=r"^lr must be a finite number > 0, got 0\.0$"):
        check_positive("lr", 0.0)
    with pytest.raises(ValueError, match=r"^lr must be a finite number > 0, got inf$"):
        check_positive("lr", math.inf)
    with pytest.raises(ValueError, match=r"^lr must be a finite number > 0, got nan$"):
        check_positive("lr", math.nan)
    with pytest.raises(ValueError, match=r"^weight_decay must be a finite number >= 0, got -1$"):
        check_positive("weight_decay", -1, allow_zero=True)
    with pytest.raises(TypeError, match=r"^lr must be a finite number > 0, got '0\.1'$"):
        check_positive("lr", "0.1")  # type: ignore[arg-type]


def test_check_choice():
    check_choice("mode", "unlearn", ["unlearn", "pretrain"])
    with pytest.raises(ValueError, match=r"^mode must be one of \('unlearn', 'pretrain'\), got 'train'$"):
        check_choice("mode", "train", ["unlearn", "pretrain"])


def test_check_fraction_intervals_and_messages():
    assert check_fraction("rate", 1) == 1.0 and isinstance(check_fraction("rate", 1), float)
    assert check_fraction("p", 0, include_low=True) == 0.0
    with pytest.raises(ValueError, match=r"^rate must be a number in \(0, 1\], got 0$"):
        check_fraction("rate", 0)
    with pytest.raises(ValueError, match=r"^f must be a number in \(0, 1\), got 1$"):
        check_fraction("f", 1, include_high=False)
    with pytest.raises(ValueError, match=r"^tolerance must be an accuracy fraction in \[0, 1\], got 1\.5$"):
        check_fraction("tolerance", 1.5, include_low=True, what="an accuracy fraction")
    with pytest.raises(ValueError, match=r"^NoisyLabels: rate must be in \(0, 1\], got True$"):
        check_fraction("NoisyLabels: rate", True, what=None)
    with pytest.raises(ValueError, match="got nan"):
        check_fraction("rate", math.nan)
    with pytest.raises(ValueError, match="got '0.5'"):
        check_fraction("rate", "0.5")
    with pytest.raises(ValueError, match=r"delta must be a number in \[0, 1\)"):
        check_fraction("delta", np.float32(0.5), include_low=True, include_high=False)
    assert check_fraction("delta", np.int64(0), include_low=True, include_high=False, numpy=True) == 0.0


@pytest.mark.parametrize(("seed", "offsets"), [(0, ()), (7, (10_001,)), (3 * 1_000_003, (2,)), (2**62, (5, 6))])
def test_seeded_generator_equals_a_hand_seeded_generator(seed, offsets):
    ours = seeded_generator(seed, *offsets)
    reference = torch.Generator().manual_seed(seed + sum(offsets))
    assert ours.initial_seed() == reference.initial_seed()
    assert torch.equal(torch.randperm(50, generator=ours), torch.randperm(50, generator=reference))
    assert torch.equal(torch.rand(8, generator=ours), torch.rand(8, generator=reference))
    assert torch.equal(torch.randint(0, 10, (8,), generator=ours), torch.randint(0, 10, (8,), generator=reference))


@pytest.mark.parametrize("exclude_true", [True, False])
def test_random_label_table_matches_the_previous_draws(exclude_true):
    # the tables RandomLabel/SalUn and the Precision poisons drew before sharing this helper
    low = 1 if exclude_true else 0
    reference = torch.randint(low, 10, (37,), generator=torch.Generator().manual_seed(123))
    table = draw_label_offsets(37, 10, torch.Generator().manual_seed(123), exclude_true=exclude_true)
    assert torch.equal(table, reference)
    assert int(table.min()) >= low and int(table.max()) <= 9
    if exclude_true:
        y = torch.arange(37) % 10
        assert bool(((y + table) % 10 != y).all())


def test_wrong_labels_match_the_skip_the_true_label_draw():
    y = torch.arange(40) % 7
    t = torch.randint(0, 6, y.shape, generator=torch.Generator().manual_seed(9))
    labels = draw_wrong_labels(y, 7, torch.Generator().manual_seed(9))
    assert torch.equal(labels, t + (t >= y).long())
    assert bool((labels != y).all()) and int(labels.max()) <= 6


def test_check_sgd_names_the_setting_out_of_range():
    from lightning_unlearn.validation import check_sgd

    check_sgd(0.9, 5e-4, lr=0.1, retain_lr=1e-3)
    check_sgd(0.0, 0.0, lr=1e-5)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\), got 1.0"):
        check_sgd(1.0, 0.0, lr=0.1)
    with pytest.raises(ValueError, match="weight_decay must be a finite number >= 0"):
        check_sgd(0.9, -1.0, lr=0.1)
    with pytest.raises(ValueError, match="retain_lr must be a finite number > 0"):
        check_sgd(0.9, 0.0, lr=0.1, retain_lr=0.0)
