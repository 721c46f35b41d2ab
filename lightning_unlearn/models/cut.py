"""The extractor / head cut of a classifier, for built-in and user models alike.

The head is one submodule, named by the model's ``head_name`` attribute (or given explicitly), that the model
calls exactly once per forward with the representation as its only input. The representation is the input of the
head; the extractor is every parameter outside the head; the final linear layer is the last ``nn.Linear`` inside
the head.
"""

from __future__ import annotations

from torch import Tensor, nn

from lightning_unlearn.models.normalize import Normalize


def resolve_head_name(model: nn.Module, head_name: str | None = None) -> str:
    """Return the head name to use for ``model``: ``head_name`` if given, else ``model.head_name``.

    Raises:
        ValueError: If neither is available or no submodule has that name.
    """
    name = head_name if head_name is not None else getattr(model, "head_name", None)
    if name is None:
        raise ValueError(
            f"{type(model).__name__} has no `head_name` attribute; pass head_name= explicitly (the name of the head "
            "submodule, e.g. 'fc') or wrap the network in FeatureHeadClassifier(extractor, head)"
        )
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


def head_module(model: nn.Module, head_name: str | None = None) -> nn.Module:
    """Return the head submodule of ``model`` (see :func:`resolve_head_name`)."""
    return model.get_submodule(resolve_head_name(model, head_name))


def head_parameters(model: nn.Module, head_name: str | None = None) -> list[nn.Parameter]:
    """Return the parameters of the head, in ``model.parameters()`` order.

    Args:
        model: The classifier.
        head_name: Name of the head submodule; defaults to ``model.head_name``.

    Raises:
        ValueError: If the head cannot be resolved.
    """
    head_ids = {id(p) for p in head_module(model, head_name).parameters()}
    return [p for p in model.parameters() if id(p) in head_ids]


def extractor_parameters(model: nn.Module, head_name: str | None = None) -> list[nn.Parameter]:
    """Return every parameter of ``model`` outside the head, in ``model.parameters()`` order.

    Args:
        model: The classifier.
        head_name: Name of the head submodule; defaults to ``model.head_name``.

    Raises:
        ValueError: If the head cannot be resolved.
    """
    head_ids = {id(p) for p in head_module(model, head_name).parameters()}
    return [p for p in model.parameters() if id(p) not in head_ids]


def final_linear(model: nn.Module, head_name: str | None = None) -> nn.Linear:
    """Return the final linear layer: the last ``nn.Linear`` inside the head (the head itself if it is one).

    Args:
        model: The classifier.
        head_name: Name of the head submodule; defaults to ``model.head_name``.

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
        head_name: Name of the head submodule; defaults to ``model.head_name``.

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
        head_name: Name of the head submodule; defaults to ``model.head_name``.

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
