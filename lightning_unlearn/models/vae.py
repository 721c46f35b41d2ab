"""The representation VAE of LAF (Shen et al., "Label-Agnostic Forgetting", ICLR 2024)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from lightning_unlearn.validation import is_integer

__all__ = ["RepresentationVAE"]

_OUTPUTS = ("sigmoid", "identity")


class RepresentationVAE(nn.Module):
    """Small fully connected VAE fitted on classifier representations (LAF's ``h_D`` and ``h_f``).

    Encoder ``u = ReLU(W2 ReLU(W1 e))`` (``in_dim -> hidden[0] -> hidden[1]``), ``mu = W_mu u``,
    ``sigma = exp(0.5 * W_v u)`` (the layer outputs the log-variance); latent ``z = mu + sigma * eps`` with
    ``eps ~ N(0, I)`` sampled on **every** forward, train or eval mode (as the authors' code; ``z = mu`` when
    ``sample_latent`` is false); decoder ``recon = out(W6 ReLU(W5 ReLU(W4 z)))`` (``latent -> hidden[1] ->
    hidden[0] -> in_dim``), ``out`` = sigmoid (authors' code) or identity (experimental). All layers are
    ``nn.Linear`` with bias and default initialisation.

    Args:
        in_dim: Width of the representation (256 for both LAF networks).
        latent_dim: Latent width ``d_z`` (LAF: 8 for the CNN, 16 for ResNet-18).
        hidden: Widths of the two hidden layers (encoder order).
        output: ``"sigmoid"`` (faithful) or ``"identity"``.
        sample_latent: Sample ``z`` (faithful) or use ``z = mu``.

    Raises:
        ValueError: On non-positive widths or an unknown ``output``.
    """

    def __init__(
        self,
        in_dim: int = 256,
        latent_dim: int = 8,
        hidden: tuple[int, int] = (128, 32),
        output: Literal["sigmoid", "identity"] = "sigmoid",
        sample_latent: bool = True,
    ) -> None:
        super().__init__()
        hidden = tuple(hidden)  # type: ignore[assignment]
        if len(hidden) != 2:
            raise ValueError(f"hidden must be two layer widths, got {hidden!r}")
        for name, value in (
            ("in_dim", in_dim),
            ("latent_dim", latent_dim),
            ("hidden", hidden[0]),
            ("hidden", hidden[1]),
        ):
            if not is_integer(value) or value < 1:
                raise ValueError(f"{name} must hold integers >= 1, got {value!r}")
        if output not in _OUTPUTS:
            raise ValueError(f"output must be one of {_OUTPUTS}, got {output!r}")
        h1, h2 = hidden
        self.in_dim = in_dim
        self.latent_dim = latent_dim
        self.output = output
        self.sample_latent = bool(sample_latent)
        self.encoder = nn.Sequential(nn.Linear(in_dim, h1), nn.ReLU(), nn.Linear(h1, h2), nn.ReLU())
        self.fc_mu = nn.Linear(h2, latent_dim)
        self.fc_logvar = nn.Linear(h2, latent_dim)
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, h2), nn.ReLU(), nn.Linear(h2, h1), nn.ReLU(), nn.Linear(h1, in_dim)
        )

    def encode(self, e: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(mu, sigma)`` of the latent posterior of ``e``."""
        u = self.encoder(e)
        return self.fc_mu(u), torch.exp(0.5 * self.fc_logvar(u))

    def decode(self, z: Tensor) -> Tensor:
        """Return the reconstruction of latent ``z``."""
        out = self.decoder(z)
        return torch.sigmoid(out) if self.output == "sigmoid" else out

    def forward(self, e: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Return ``(recon, z, mu, sigma)`` for representations ``e`` (``B x in_dim``).

        Args:
            e: Representations.
            generator: Optional CPU generator for the latent noise (drawn on the CPU, then moved to ``e``'s
                device), for runs that must be reproducible across resumes; ``None`` uses the global RNG.
        """
        mu, sigma = self.encode(e)
        if self.sample_latent:
            if generator is None:
                eps = torch.randn_like(sigma)
            else:
                eps = torch.randn(sigma.shape, generator=generator, dtype=sigma.dtype).to(sigma.device)
            z = mu + sigma * eps
        else:
            z = mu
        return self.decode(z), z, mu, sigma
