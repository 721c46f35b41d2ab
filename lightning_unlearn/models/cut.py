"""The extractor / head cut of a classifier, for built-in and user models alike.

The head is one submodule, named by the model's ``head_name`` attribute (or given explicitly), that the model
calls exactly once per forward with the representation as its only input. The representation is the input of the
head; the extractor is every parameter outside the head; the final linear layer is the last ``nn.Linear`` inside
the head.
"""

from __future__ import annotations

from torch import Tensor, nn

from lightning_unlearn.models.normalize import Normalize
from lightning_unlearn.validation import is_integer

#: Submodule names searched, in order, for the head of a model without ``head_name``: torchvision ResNet /
#: Inception / GoogLeNet (``fc``), VGG / AlexNet / DenseNet / MobileNet / EfficientNet / ConvNeXt (``classifier``),
#: ViT / Swin-style and user models (``heads``, ``head``). A container among them resolves to its last child.
HEAD_CANDIDATES: tuple[str, ...] = ("fc", "classifier", "heads", "head")


def _last_linear_path(module: nn.Module, prefix: str) -> str | None:
    """Follow the last children of ``module`` through containers; the path of the ``nn.Linear`` reached, if any."""
    if isinstance(module, nn.Linear):
        return prefix
    if isinstance(module, nn.Sequential | nn.ModuleList) and len(module) > 0:
        name, child = list(module.named_children())[-1]
        return _last_linear_path(child, f"{prefix}.{name}" if prefix else name)
    return None


def _qualified_name(model: nn.Module, target: nn.Module) -> str | None:
    for name, module in model.named_modules():
        if module is target and name:
            return name
    return None


def detect_head_name(model: nn.Module) -> str:
    """Find the head (the final classification layer) of a classifier that does not declare ``head_name``.

    Looked for, in order: a ``head_name`` attribute; a timm-style ``get_classifier()`` method (the submodule it
    returns); a submodule named ``fc``, ``classifier``, ``heads`` or ``head`` that is an ``nn.Linear`` or a
    container (``nn.Sequential``) ending in one, e.g. ``fc`` (torchvision ResNet), ``classifier.6`` (VGG),
    ``classifier`` (DenseNet), ``classifier.3`` (MobileNetV3), ``classifier.1`` (EfficientNet), ``classifier.2``
    (ConvNeXt), ``heads.head`` (ViT); the model itself or its last child when it is (or ends in) an
    ``nn.Linear``; finally the last direct child that is an ``nn.Linear``.

    Args:
        model: The classifier.

    Returns:
        The qualified name of the head submodule (usable with ``model.get_submodule``).

    Raises:
        ValueError: If nothing matches, saying what was looked for.
    """
    declared = getattr(model, "head_name", None)
    if isinstance(declared, str) and declared:
        return declared
    get_classifier = getattr(model, "get_classifier", None)
    if callable(get_classifier):
        try:
            found = get_classifier()
        except Exception:  # noqa: BLE001 - a user method named get_classifier that needs arguments: ignore it
            found = None
        if isinstance(found, nn.Module):
            name = _qualified_name(model, found)
            if name is not None and any(isinstance(m, nn.Linear) for m in found.modules()):
                return name
    children = dict(model.named_children())
    for candidate in HEAD_CANDIDATES:
        try:
            module = model.get_submodule(candidate)
        except AttributeError:
            continue
        path = _last_linear_path(module, candidate)
        if path is not None:
            return path
    if children:
        name, child = list(children.items())[-1]
        path = _last_linear_path(child, name)
        if path is not None:
            return path
        linears = [n for n, c in children.items() if isinstance(c, nn.Linear)]
        if linears:
            return linears[-1]
    raise ValueError(
        f"cannot find the classifier head of {type(model).__name__}: looked for a `head_name` attribute, a "
        f"get_classifier() method, a submodule {' / '.join(HEAD_CANDIDATES)} that is (or ends in) an nn.Linear, "
        f"and a last nn.Linear child (its direct children are {list(children)}); pass head_name= (the qualified "
        "name of the final layer, e.g. 'fc' or 'classifier.6'), set model.head_name, or wrap the network in "
        "FeatureHeadClassifier(extractor, head)"
    )


def resolve_head_name(model: nn.Module, head_name: str | None = None) -> str:
    """Return the head name to use for ``model``: ``head_name`` if given, else the detected one.

    Detection (:func:`detect_head_name`) reads ``model.head_name`` first, so the built-in classifiers keep
    their declared head; other networks (torchvision, timm, user models) get their final linear layer.

    Raises:
        ValueError: If no head is given or found, or no submodule has that name.
    """
    name = head_name if head_name is not None else detect_head_name(model)
    if not isinstance(name, str) or not name:
        raise ValueError(f"head_name must be a non-empty submodule name, got {name!r}")
    try:
        model.get_submodule(name)
    except AttributeError:
        children = [n for n, _ in model.named_children()]
        raise ValueError(
            f"{type(model).__name__} has no submodule {name!r}; its direct children are {children}"
        ) from None
    return name


def detect_num_classes(model: nn.Module, head_name: str | None = None) -> int:
    """Return the number of classes of a classifier.

    ``model.num_classes`` when it is an integer ``>= 2``, else the ``out_features`` of the final linear layer
    (the last ``nn.Linear`` of the head, see :func:`resolve_head_name`).

    Args:
        model: The classifier.
        head_name: Name of the head submodule; ``None`` detects it.

    Raises:
        ValueError: If neither gives an integer ``>= 2``, saying what was looked for.
    """
    classes = getattr(model, "num_classes", None)
    if is_integer(classes) and classes >= 2:
        return classes
    try:
        classes = final_linear(model, head_name).out_features
    except ValueError as err:
        raise ValueError(
            f"cannot tell the number of classes of {type(model).__name__}: it has no `num_classes` attribute "
            f"(>= 2) and {err}; pass num_classes= explicitly"
        ) from None
    if classes < 2:
        raise ValueError(f"the final linear layer of {type(model).__name__} has {classes} output(s); need >= 2")
    return int(classes)


def head_module(model: nn.Module, head_name: str | None = None) -> nn.Module:
    """Return the head submodule of ``model`` (see :func:`resolve_head_name`)."""
    return model.get_submodule(resolve_head_name(model, head_name))


def head_parameters(model: nn.Module, head_name: str | None = None) -> list[nn.Parameter]:
    """Return the parameters of the head, in ``model.parameters()`` order.

    Args:
        model: The classifier.
        head_name: Name of the head submodule; ``None`` detects it (``model.head_name`` first).

    Raises:
        ValueError: If the head cannot be resolved.
    """
    head_ids = {id(p) for p in head_module(model, head_name).parameters()}
    return [p for p in model.parameters() if id(p) in head_ids]


def extractor_parameters(model: nn.Module, head_name: str | None = None) -> list[nn.Parameter]:
    """Return every parameter of ``model`` outside the head, in ``model.parameters()`` order.

    Args:
        model: The classifier.
        head_name: Name of the head submodule; ``None`` detects it (``model.head_name`` first).

    Raises:
        ValueError: If the head cannot be resolved.
    """
    head_ids = {id(p) for p in head_module(model, head_name).parameters()}
    return [p for p in model.parameters() if id(p) not in head_ids]


def final_linear(model: nn.Module, head_name: str | None = None) -> nn.Linear:
    """Return the final linear layer: the last ``nn.Linear`` inside the head (the head itself if it is one).

    Args:
        model: The classifier.
        head_name: Name of the head submodule; ``None`` detects it (``model.head_name`` first).

    Raises:
        ValueError: If the head cannot be resolved or contains no ``nn.Linear``.
    """
    name = resolve_head_name(model, head_name)
    linears = [m for m in model.get_submodule(name).modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"the head {name!r} of {type(model).__name__} contains no nn.Linear layer")
    return linears[-1]


def representation_and_logits(model: nn.Module, x: Tensor, head_name: str | None = None) -> tuple[Tensor, Tensor]:
    """Run ``model(x)`` once and return ``(representation, logits)``.

    The representation is the input of the head, captured by a forward pre-hook, so this works for any model
    that calls its head exactly once per forward. Gradients flow as in ``model(x)``; wrap the call in
    ``torch.no_grad()`` when none are needed.

    Args:
        model: The classifier.
        x: Input batch.
        head_name: Name of the head submodule; ``None`` detects it (``model.head_name`` first).

    Raises:
        ValueError: If the head cannot be resolved or is not called exactly once with one tensor argument.
    """
    name = resolve_head_name(model, head_name)
    captured: list[Tensor] = []

    def hook(_module: nn.Module, args: tuple[object, ...]) -> None:
        if len(args) != 1 or not isinstance(args[0], Tensor):
            raise ValueError(f"the head {name!r} must be called with the representation as its only input")
        captured.append(args[0])

    handle = model.get_submodule(name).register_forward_pre_hook(hook)
    try:
        logits = model(x)
    finally:
        handle.remove()
    if len(captured) != 1:
        raise ValueError(
            f"the head {name!r} of {type(model).__name__} was called {len(captured)} times in one forward; "
            "it must be called exactly once"
        )
    return captured[0], logits


def representation(model: nn.Module, x: Tensor, head_name: str | None = None) -> Tensor:
    """Return the representation of ``x``: the input of the head during ``model(x)`` (a forward pre-hook).

    Args:
        model: The classifier.
        x: Input batch.
        head_name: Name of the head submodule; ``None`` detects it (``model.head_name`` first).

    Raises:
        ValueError: If the head cannot be resolved or is not called exactly once.
    """
    return representation_and_logits(model, x, head_name)[0]


class FeatureHeadClassifier(nn.Module):
    """Wrap a user's extractor and head into a classifier with the library's interface.

    ``forward(x) = head(extractor(normalize(x)))``. The extractor must return a flat ``B x D`` representation.

    Args:
        extractor: Maps inputs to the representation (``B x D``).
        head: Maps the representation to logits.
        num_classes: Number of classes; inferred from the head's last ``nn.Linear`` when ``None``.
        embedding_dim: Width ``D`` of the representation; inferred from the head's first ``nn.Linear`` when
            ``None``.
        normalize: Normalisation applied first (e.g. a :class:`~lightning_unlearn.models.Normalize`); ``None``
            means inputs are passed on unchanged.

    Raises:
        ValueError: If ``num_classes`` or ``embedding_dim`` is not given and cannot be inferred.
    """

    head_name = "head"

    def __init__(
        self,
        extractor: nn.Module,
        head: nn.Module,
        num_classes: int | None = None,
        *,
        embedding_dim: int | None = None,
        normalize: nn.Module | None = None,
    ) -> None:
        super().__init__()
        linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
        if num_classes is None:
            if not linears:
                raise ValueError("num_classes cannot be inferred: the head has no nn.Linear; pass num_classes=")
            num_classes = linears[-1].out_features
        if embedding_dim is None:
            if not linears:
                raise ValueError("embedding_dim cannot be inferred: the head has no nn.Linear; pass embedding_dim=")
            embedding_dim = linears[0].in_features
        self.normalize: nn.Module = normalize if normalize is not None else nn.Identity()
        self.extractor = extractor
        self.head = head
        self.num_classes = int(num_classes)
        self.embedding_dim = int(embedding_dim)
        if isinstance(self.normalize, Normalize):
            self.in_channels = self.normalize.in_channels

    def forward(self, x: Tensor) -> Tensor:
        """Return the logits of ``x``."""
        return self.forward_head(self.forward_features(x))

    def forward_features(self, x: Tensor) -> Tensor:
        """Return the representation ``extractor(normalize(x))``."""
        return self.extractor(self.normalize(x))

    def forward_head(self, z: Tensor) -> Tensor:
        """Return the logits ``head(z)``."""
        return self.head(z)
