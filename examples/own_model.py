"""Unlearn a digit from your own classifier trained on your own dataset (scikit-learn's 8x8 digits, offline)."""

import lightning as L
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import TensorDataset

from lightning_unlearn.callbacks import MembershipInference, UnlearningReport
from lightning_unlearn.datamodules import ClassRemoval, DatasetDataModule
from lightning_unlearn.methods import SCRUB, Classifier
from lightning_unlearn.models import describe

# your data: any map-style Dataset of (image, label); here 1,797 real 8x8 digits scaled to [0, 1]
digits = load_digits()
images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16
labels = torch.tensor(digits.target)
train, test = TensorDataset(images[:1500], labels[:1500]), TensorDataset(images[1500:], labels[1500:])

# your network: no library base class, no head_name, no num_classes attribute
torch.manual_seed(0)
net = nn.Sequential(
    nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(32 * 64, 64), nn.ReLU(), nn.Linear(64, 10)
)
print(describe(net))

# train the original classifier on all training digits (mode="pretrain")
L.seed_everything(0)
quiet = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
original = DatasetDataModule(train, test, scenario=ClassRemoval(classes=[3]), mode="pretrain", batch_size=64)
L.Trainer(max_epochs=15, **quiet).fit(Classifier(net), datamodule=original)

# forget the digit 3 with SCRUB; the report prints the before/after table and saves classifier.pt
data = DatasetDataModule(train, test, scenario=ClassRemoval(classes=[3]), batch_size=64)
method = SCRUB(net, epochs=5, max_epochs_forget=3, lr=0.01)
trainer = L.Trainer(  # no max_epochs: SCRUB declares its own passes (3 max-steps + 5 min-steps epochs)
    default_root_dir="runs/own_model",
    callbacks=[MembershipInference(attacks=["svc_confidence"]), UnlearningReport()],
    enable_progress_bar=False,
)
trainer.fit(method, datamodule=data)
