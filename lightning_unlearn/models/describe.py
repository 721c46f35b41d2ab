"""What the library sees in a classifier: its head, number of classes, normalisation and batch-norm layers."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from lightning_unlearn.models.cut import detect_num_classes, final_linear, resolve_head_name

__all__ = ["ModelDescription", "describe", "describe_model"]

_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


@dataclass(frozen=True)
class ModelDescription:
    """The extractor / head cut and the facts the unlearning methods read from a classifier.

    Attributes:
        model_type: Class name of the classifier.
        head_name: Qualified name of the head submodule (declared ``head_name`` or detected).
        head_type: Class name of the head submodule.
        final_linear: Qualified name of the final linear layer (the last ``nn.Linear`` of the head).
        num_classes: Number of classes (``model.num_classes`` or the final layer's ``out_features``).
        embedding_dim: Width of the representation the final linear layer reads (its ``in_features``).
        normalize_mean: Per-channel mean of the model's ``normalize`` submodule, ``None`` without one.
        normalize_std: Per-channel std of the model's ``normalize`` submodule, ``None`` without one.
        batch_norm_layers: Number of batch-norm layers (their running statistics change in train mode).
        head_parameters: Number of parameter values in the head.
        extractor_parameters: Number of parameter values outside the head.
    """

    model_type: str
    head_name: str
    head_type: str
    final_linear: str
    num_classes: int
    embedding_dim: int
    normalize_mean: tuple[float, ...] | None
    normalize_std: tuple[float, ...] | None
    batch_norm_layers: int
    head_parameters: int
    extractor_parameters: int

    def __str__(self) -> str:
        """Human-readable summary, one fact per line."""
        if self.normalize_mean is None or self.normalize_std is None:
            norm = "none found (no `normalize` submodule with mean/std buffers): inputs are used as given"
        else:
            norm = f"mean={_fmt(self.normalize_mean)} std={_fmt(self.normalize_std)}"
        return "\n".join(
            [
                f"model:          {self.model_type}",
                f"head:           {self.head_name!r} ({self.head_type})",
                f"final linear:   {self.final_linear!r} ({self.embedding_dim} -> {self.num_classes})",
                f"num_classes:    {self.num_classes}",
                f"normalisation:  {norm}",
                f"batch norms:    {self.batch_norm_layers}",
                f"parameters:     {self.extractor_parameters:,} extractor + {self.head_parameters:,} head",
            ]
        )


def _fmt(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def _buffer_values(module: nn.Module, name: str) -> tuple[float, ...] | None:
    value = getattr(module, name, None)
    if not isinstance(value, Tensor) or value.is_meta:
        return None
    return tuple(float(v) for v in value.detach().flatten().tolist())


def describe_model(model: nn.Module, head_name: str | None = None) -> ModelDescription:
    """Return the :class:`ModelDescription` of ``model``.

    Needs no forward pass (works on a model built on the ``meta`` device, except for the normalisation values).

    Args:
        model: The classifier.
        head_name: Name of the head submodule; ``None`` detects it (``model.head_name`` first).

    Raises:
        ValueError: If the head or the number of classes cannot be found.
    """
    name = resolve_head_name(model, head_name)
    head = model.get_submodule(name)
    linear = final_linear(model, name)
    linear_name = next(n for n, m in model.named_modules() if m is linear)
    head_ids = {id(p) for p in head.parameters()}
    in_head = sum(p.numel() for p in model.parameters() if id(p) in head_ids)
    outside = sum(p.numel() for p in model.parameters() if id(p) not in head_ids)
    normalize = getattr(model, "normalize", None)
    mean = std = None
    if isinstance(normalize, nn.Module):
        mean, std = _buffer_values(normalize, "mean"), _buffer_values(normalize, "std")
    return ModelDescription(
        model_type=type(model).__name__,
        head_name=name,
        head_type=type(head).__name__,
        final_linear=linear_name,
        num_classes=detect_num_classes(model, name),
        embedding_dim=int(linear.in_features),
        normalize_mean=mean,
        normalize_std=std,
        batch_norm_layers=sum(isinstance(m, _BATCH_NORMS) for m in model.modules()),
        head_parameters=in_head,
        extractor_parameters=outside,
    )


def describe(model: nn.Module, head_name: str | None = None) -> str:
    """Say what the library sees in ``model``: head name, number of classes, normalisation, batch-norm layers.

    Use it to check a network of your own before unlearning: the head found here is the one every method cuts
    at (pass ``head_name=`` to a method to choose another), and ``num_classes`` is what methods that need it
    read when not given.

    Example::

        >>> import torchvision
        >>> print(describe(torchvision.models.resnet18(num_classes=10)))  # doctest: +ELLIPSIS
        model:          ResNet
        head:           'fc' (Linear)
        ...

    Args:
        model: The classifier.
        head_name: Name of the head submodule; ``None`` detects it.

    Raises:
        ValueError: If the head or the number of classes cannot be found.
    """
    return str(describe_model(model, head_name))
