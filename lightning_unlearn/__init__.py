"""lightning-unlearn: PyTorch Lightning modules for machine unlearning of image classifiers."""

__version__ = "0.1.0"

__all__ = ["__version__"]
