"""Boundary Shrink and Boundary Expanding: hand-computed neighbours, the attack's bound, the shadow head, resume."""

from __future__ import annotations

import math

import pytest
import torch
from data_factories import ToyDataModule
from lightning.pytorch import seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from trainers import quiet_trainer

from lightning_unlearn.datamodules import ClassRemoval
from lightning_unlearn.methods import BoundaryExpanding, BoundaryShrink
from lightning_unlearn.methods.boundary import (
    classifier_linear,
    expand_head,
    fgsm_neighbor_labels,
    fgsm_perturb,
    prune_head,
)
from lightning_unlearn.models import export_classifier, load_classifier
from lightning_unlearn.models.cut import FeatureHeadClassifier


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return load_classifier("tiny_cnn", 10, in_channels=1)


def toy_data(batch_size: int = 4) -> ToyDataModule:
    return ToyDataModule(scenario=ClassRemoval(classes=[0]), batch_size=batch_size)


def hand_linear() -> nn.Module:
    """Linear 2 -> 3 without bias, W = [[2, 0], [0, 2], [1, 1]]."""
    layer = nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 1.0]]))
    return layer


HAND_X = torch.tensor([[0.5, 0.45], [0.9, 0.1]])
HAND_Y = torch.tensor([0, 0])


# ------------------------------------------------------------------------------------------------ the attack
def test_fgsm_step_and_neighbours_match_hand_computed_values():
    teacher = hand_linear()
    perturbed = fgsm_perturb(teacher, HAND_X, HAND_Y, bound=0.1, levels=255)
    # x + 0.1 * sign(grad): (0.4, 0.55) rounded to the 1/255 grid is (102/255, 140/255); (0.8, 0.2) is on it
    expected = torch.tensor([[102 / 255, 140 / 255], [204 / 255, 51 / 255]])
    assert torch.allclose(perturbed, expected, atol=1e-7)
    with torch.no_grad():
        logits = teacher(perturbed)
    assert torch.allclose(logits[0], torch.tensor([0.8, 1.098039, 0.949020]), atol=1e-6)
    assert torch.allclose(logits[1], torch.tensor([1.6, 0.4, 1.0]), atol=1e-6)
    # the first attack crosses into class 1; the second fails: plain argmax keeps the true class 0,
    # the corrected rule takes the best wrong class 2
    assert fgsm_neighbor_labels(teacher, HAND_X, HAND_Y, exclude_true=False).tolist() == [1, 0]
    assert fgsm_neighbor_labels(teacher, HAND_X, HAND_Y, exclude_true=True).tolist() == [1, 2]


def test_method_neighbours_follow_the_preset_on_the_hand_model():
    corrected = BoundaryShrink(hand_linear())
    reference = BoundaryShrink(hand_linear(), preset="reference")
    assert corrected.neighbors(HAND_X, HAND_Y).tolist() == [1, 2]
    assert reference.neighbors(HAND_X, HAND_Y).tolist() == [1, 0]
    assert BoundaryShrink(hand_linear(), preset="reference", neighbor="exclude_true").neighbors(
        HAND_X, HAND_Y
    ).tolist() == [1, 2]
    assert corrected.attack_augment is False and reference.attack_augment is True


@pytest.mark.parametrize("levels", [255, None])
def test_fgsm_step_respects_its_bound_in_pixel_space(levels):
    teacher = tiny_model().train()
    torch.manual_seed(1)
    x = torch.randint(0, 256, (16, 1, 8, 8)).float() / 255  # 8-bit images, some pixels at 0 and 1
    y = torch.randint(0, 10, (16,))
    bound = 0.1
    perturbed = fgsm_perturb(teacher, x, y, bound=bound, levels=levels)
    step = (perturbed - x).abs()
    slack = 0.5 / levels if levels is not None else 0.0
    assert float(step.max()) <= bound + slack + 1e-6
    assert float(perturbed.min()) >= 0.0 and float(perturbed.max()) <= 1.0
    if levels is not None:
        assert torch.allclose(perturbed * levels, torch.round(perturbed * levels), atol=1e-4)
    else:  # every pixel moves by exactly the bound unless the [0, 1] clamp stops it (or its gradient is 0)
        inside = ((x + bound) <= 1.0) & ((x - bound) >= 0.0) & (step > 0)
        assert torch.allclose(step[inside], torch.full_like(step[inside], bound), atol=1e-6)
    assert teacher.training, "the attack restores the teacher's mode"
    assert all(p.grad is None for p in teacher.parameters()), "the attack takes the input gradient only"


# ------------------------------------------------------------------------------------------------ Boundary Shrink
class SpyShrink(BoundaryShrink):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.targets: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.attacks = 0

    def neighbors(self, x, y):
        self.attacks += 1
        return super().neighbors(x, y)

    def training_step(self, batch, batch_idx):
        x, y, index = self.labelled_batch(batch["forget"])
        if self.attack_augment:
            target = super().neighbors(x, y)
        else:
            target = self.neighbor_labels[index]
        self.targets.append((index.clone(), y.clone(), target.clone()))
        return super().training_step(batch, batch_idx)


def test_boundary_shrink_trains_each_forget_sample_towards_its_neighbour(tmp_path):
    data = toy_data()
    model = tiny_model()
    original = {k: v.clone() for k, v in model.state_dict().items()}
    method = SpyShrink(model, epochs=2, lr=0.05)
    quiet_trainer(tmp_path, max_epochs=2).fit(method, datamodule=data)
    # one unaugmented pass over the forget set at fit start (10 samples, eval batch 256), none afterwards
    assert method.attacks == 1 and bool(method.neighbors_ready)
    x = torch.stack([data.split_dataset("forget")[i][0] for i in range(10)])
    y = torch.stack([torch.as_tensor(data.split_dataset("forget")[i][1]) for i in range(10)])
    teacher = tiny_model()
    expected = fgsm_neighbor_labels(teacher, x, y, bound=0.1, levels=255, exclude_true=True)
    assert torch.equal(method.neighbor_labels, expected)
    assert not (expected == y).any()
    seen = {}
    for index, labels, target in method.targets:
        assert torch.equal(target, expected[index]) and torch.equal(labels, y[index])
        seen.update({int(i): int(t) for i, t in zip(index, target, strict=True)})
    assert len(seen) == 10
    for key, value in method.teacher.state_dict().items():  # the teacher never moves
        assert torch.equal(value, original[key]), key
    assert any(not torch.equal(v, original[k]) for k, v in model.state_dict().items())
    assert not method.teacher.training


def test_boundary_shrink_reference_attacks_every_batch(tmp_path):
    method = SpyShrink(tiny_model(), epochs=1, lr=0.05, preset="reference")
    quiet_trainer(tmp_path, max_epochs=1).fit(method, datamodule=toy_data())
    assert method.attacks == math.ceil(10 / 4) and method.neighbor_labels.numel() == 0


def test_boundary_shrink_resumes_without_recomputing_neighbours(tmp_path):
    seed_everything(0)
    full = BoundaryShrink(tiny_model(), epochs=2, lr=0.05)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1, filename="{epoch}")
    quiet_trainer(tmp_path, max_epochs=2, enable_checkpointing=True, callbacks=[ckpt]).fit(full, datamodule=toy_data())

    seed_everything(0)
    resumed = SpyShrink(tiny_model(), epochs=2, lr=0.05)
    quiet_trainer(tmp_path, max_epochs=2).fit(
        resumed, datamodule=toy_data(), ckpt_path=str(tmp_path / "ckpt" / "epoch=0.ckpt"), weights_only=True
    )
    assert resumed.attacks == 0 and torch.equal(resumed.neighbor_labels, full.neighbor_labels)
    for (name, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name


# ------------------------------------------------------------------------------------------------ Boundary Expanding
def hand_head_model() -> FeatureHeadClassifier:
    head = nn.Linear(2, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, -1.0], [0.5, 2.0]]))
        head.bias.copy_(torch.tensor([0.1, -0.1]))
    return FeatureHeadClassifier(nn.Identity(), head, num_classes=2, embedding_dim=2)


def test_expand_keeps_the_original_logits_and_prune_keeps_the_first_rows():
    model = hand_head_model()
    x = torch.tensor([[1.0, 1.0]])
    before = model(x).detach()
    assert before[0].tolist() == pytest.approx([0.1, 2.4], abs=1e-6)
    method = BoundaryExpanding(model, seed=3)
    method.expand()
    assert model.head.weight.shape == (3, 2) and model.head.bias.shape == (3,) and model.head.out_features == 3
    logits = model(x)
    assert logits.shape == (1, 3) and torch.equal(logits[:, :2], before)  # the original logits, bit for bit
    bound = 1 / math.sqrt(2)
    assert float(model.head.weight[2].abs().max()) <= bound and float(model.head.bias[2].abs()) <= bound
    again = hand_head_model()
    BoundaryExpanding(again, seed=3).expand()
    assert torch.equal(again.head.weight, model.head.weight) and torch.equal(again.head.bias, model.head.bias)
    other = hand_head_model()
    BoundaryExpanding(other, seed=4).expand()
    assert not torch.equal(other.head.weight[2], model.head.weight[2])
    with torch.no_grad():
        model.head.weight.add_(1.0)  # "trained" rows
    trained = model.head.weight[:2].clone(), model.head.bias[:2].clone()
    method.prune()
    assert model.head.weight.shape == (2, 2) and model.head.out_features == 2
    assert torch.equal(model.head.weight, trained[0]) and torch.equal(model.head.bias, trained[1])


def test_head_helpers_find_the_final_linear_and_check_arguments():
    assert classifier_linear(tiny_model())[0] == "fc2"
    assert classifier_linear(tiny_model(), "fc2")[0] == "fc2"
    plain = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 10))
    assert classifier_linear(plain) == ("3", plain[3])
    with pytest.raises(ValueError, match="no submodule"):
        BoundaryExpanding(tiny_model(), head_name="missing")
    with pytest.raises(ValueError, match="nn.Linear"):
        classifier_linear(nn.Sequential(nn.Flatten()))
    layer = nn.Linear(3, 2)
    expand_head(layer, torch.Generator().manual_seed(0))
    prune_head(layer, 2)
    assert layer.weight.shape == (2, 3)
    with pytest.raises(ValueError, match="num_outputs"):
        prune_head(layer, 3)


class SpyExpanding(BoundaryExpanding):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.widths: list[int] = []
        self.eval_widths: list[int] = []
        self.optimised: list[bool] = []
        self.last_rows: tuple[torch.Tensor, torch.Tensor] | None = None

    def training_step(self, batch, batch_idx):
        x = batch["forget"]
        assert isinstance(x, torch.Tensor), "Boundary Expanding receives inputs only"
        self.widths.append(self(x).shape[1])
        optimizer = self.optimizers().optimizer
        params = {id(p) for group in optimizer.param_groups for p in group["params"]}
        self.optimised.append(id(self.linear.weight) in params and id(self.linear.bias) in params)
        return super().training_step(batch, batch_idx)

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.last_rows = (self.linear.weight.detach().clone(), self.linear.bias.detach().clone())

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        out = super().validation_step(batch, batch_idx, dataloader_idx)
        self.eval_widths.append(out["logits"].shape[1])
        return out


def test_boundary_expanding_trains_c_plus_1_outputs_then_exports_c(tmp_path):
    model = tiny_model()
    original = model.fc2.weight.detach().clone()
    method = SpyExpanding(model, epochs=2, lr=0.05, seed=1)
    quiet_trainer(tmp_path, max_epochs=2).fit(method, datamodule=toy_data())
    assert method.widths and set(method.widths) == {11} and all(method.optimised)
    assert method.eval_widths and set(method.eval_widths) == {10}  # scored as the pruned classifier
    assert model.fc2.weight.shape == (10, 32) and model.fc2.bias.shape == (10,) and model.fc2.out_features == 10
    assert method.last_rows is not None
    assert torch.equal(model.fc2.weight, method.last_rows[0][:10])  # the trained first C rows are kept
    assert torch.equal(model.fc2.bias, method.last_rows[1][:10])
    assert not torch.equal(model.fc2.weight, original)
    path = export_classifier(model, tmp_path / "classifier.pt")
    reloaded = load_classifier("tiny_cnn", 10, str(path), in_channels=1).eval()
    x = torch.rand(4, 1, 4, 4)
    with torch.no_grad():
        assert torch.equal(reloaded(x), model.eval()(x))


def test_boundary_expanding_reference_keeps_the_shadow_output(tmp_path):
    method = SpyExpanding(tiny_model(), epochs=1, lr=0.05, preset="reference")
    assert method.prune_shadow is False
    quiet_trainer(tmp_path, max_epochs=1, num_sanity_val_steps=0).fit(method, datamodule=toy_data())
    assert method.model.fc2.weight.shape == (11, 32) and method.expanded
    assert set(method.eval_widths) == {11}  # scored over C + 1 logits once the shadow is trained


def test_boundary_expanding_resumes_with_its_trained_shadow_row(tmp_path):
    seed_everything(0)
    full = BoundaryExpanding(tiny_model(), epochs=2, lr=0.05)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1, filename="{epoch}")
    quiet_trainer(tmp_path, max_epochs=2, enable_checkpointing=True, callbacks=[ckpt]).fit(full, datamodule=toy_data())
    path = tmp_path / "ckpt" / "epoch=0.ckpt"
    stored = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    assert stored["model.fc2.weight"].shape == (11, 32)

    seed_everything(0)
    resumed = BoundaryExpanding(tiny_model(), epochs=2, lr=0.05)
    quiet_trainer(tmp_path, max_epochs=2).fit(resumed, datamodule=toy_data(), ckpt_path=str(path), weights_only=True)
    assert resumed.model.fc2.weight.shape == (10, 32)
    for (name, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name

    loaded = BoundaryExpanding(tiny_model())  # loading an in-training checkpoint expands the head first
    loaded.load_state_dict(stored)
    assert loaded.expanded and torch.equal(loaded.model.fc2.weight, stored["model.fc2.weight"])


# ------------------------------------------------------------------------------------------------ arguments
@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (BoundaryShrink, {"bound": 0.0}, "bound"),
        (BoundaryShrink, {"neighbor": "nearest"}, "neighbor"),
        (BoundaryShrink, {"quantize_levels": 0}, "quantize_levels"),
        (BoundaryShrink, {"preset": "paper"}, "preset"),
        (BoundaryShrink, {"epochs": 0}, "epochs"),
        (BoundaryShrink, {"lr": -1.0}, "lr"),
        (BoundaryExpanding, {"momentum": 1.0}, "momentum"),
        (BoundaryExpanding, {"seed": -1}, "seed"),
        (BoundaryExpanding, {"preset": "paper"}, "preset"),
    ],
)
def test_bad_arguments_raise_value_error(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(tiny_model(), **kwargs)


@pytest.mark.parametrize("cls", [BoundaryShrink, BoundaryExpanding])
def test_epochs_must_match_the_trainer(cls, tmp_path):
    with pytest.raises(ValueError, match="max_epochs=3"):
        quiet_trainer(tmp_path, max_epochs=2).fit(cls(tiny_model(), epochs=3), datamodule=toy_data())
