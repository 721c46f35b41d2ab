"""Classifiers, their extractor / head cut, and the typed checkpoint factory.

Every built-in classifier takes pixels in [0, 1], normalises them in its first layer (``normalize``), and is cut
into a representation extractor and a single head submodule (``head_name``): ``forward(x) ==
forward_head(forward_features(x))``. Build or load one with :func:`load_classifier`, usable directly as a
``class_path`` in LightningCLI YAML.
"""

from lightning_unlearn.models.base import ClassifierBase
from lightning_unlearn.models.cut import (
    FeatureHeadClassifier,
    detect_head_name,
    detect_num_classes,
    extractor_parameters,
    final_linear,
    head_module,
    head_parameters,
    representation,
    representation_and_logits,
    resolve_head_name,
)
from lightning_unlearn.models.describe import ModelDescription, describe, describe_model
from lightning_unlearn.models.factory import (
    ARCHITECTURES,
    build_classifier,
    export_classifier,
    load_classifier,
    load_weights,
)
from lightning_unlearn.models.laf import LAFCNN, LAFResNet18
from lightning_unlearn.models.normalize import Normalize, normalization_stats
from lightning_unlearn.models.resnet import CifarResNet18, CifarResNet50, ResNet18MaxPool
from lightning_unlearn.models.tiny import TinyCNN
from lightning_unlearn.models.vae import RepresentationVAE
from lightning_unlearn.models.vgg import VGG16BN, JiTVGG11

__all__ = [
    "ARCHITECTURES",
    "LAFCNN",
    "VGG16BN",
    "CifarResNet18",
    "CifarResNet50",
    "ClassifierBase",
    "FeatureHeadClassifier",
    "JiTVGG11",
    "LAFResNet18",
    "ModelDescription",
    "Normalize",
    "RepresentationVAE",
    "ResNet18MaxPool",
    "TinyCNN",
    "build_classifier",
    "describe",
    "describe_model",
    "detect_head_name",
    "detect_num_classes",
    "export_classifier",
    "extractor_parameters",
    "final_linear",
    "head_module",
    "head_parameters",
    "load_classifier",
    "load_weights",
    "normalization_stats",
    "representation",
    "representation_and_logits",
    "resolve_head_name",
]
