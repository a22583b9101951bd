"""Latent Gaussian math and the predictive distributions (Appendix A.2).

Every distribution is described by a raw parameter tensor of shape
(B, P, T) produced by a 1x1 convolution; the classes here interpret it.
Shape legend: ``B`` batch, ``C`` data channels, ``K`` mixture components,
``T`` time.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "BernoulliLikelihood",
    "GaussianLikelihood",
    "GaussianMixtureLikelihood",
    "Likelihood",
    "MixtureBernoulliLikelihood",
    "gaussian_kl",
    "gaussian_log_prob",
    "make_likelihood",
    "split_gaussian",
]

_LOG_2PI = math.log(2 * math.pi)


def split_gaussian(
    raw: torch.Tensor, std_min: float = 1e-3, std_max: float = 5.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split raw features into a mean and a clamped softplus std (eq. 11).

    Parameters
    ----------
    raw : torch.Tensor of shape (B, 2C, T)
    std_min, std_max : float
        Clamp of the standard deviation (Appendix A.2: 1e-3 and 5).

    Returns
    -------
    mean, std : torch.Tensor of shape (B, C, T)
    """
    mean, pre = raw.chunk(2, dim=1)
    return mean, F.softplus(pre).clamp(std_min, std_max)


def gaussian_log_prob(
    x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor
) -> torch.Tensor:
    """Elementwise log N(x; mean, std**2)."""
    z = (x - mean) / std
    return -0.5 * z * z - torch.log(std) - 0.5 * _LOG_2PI


def gaussian_kl(
    mean_q: torch.Tensor,
    std_q: torch.Tensor,
    mean_p: torch.Tensor,
    std_p: torch.Tensor,
) -> torch.Tensor:
    """Elementwise KL(N(mean_q, std_q**2) || N(mean_p, std_p**2)) in nats."""
    var_ratio = (std_q / std_p) ** 2
    diff = (mean_q - mean_p) / std_p
    return 0.5 * (var_ratio + diff * diff - 1.0 - torch.log(var_ratio))


class Likelihood:
    """Interface of a predictive distribution over C channels.

    Parameters
    ----------
    n_channels : int
        Number of data channels C.
    std_min, std_max : float
        Clamp of predicted standard deviations.
    """

    def __init__(self, n_channels: int, std_min: float = 1e-3, std_max: float = 5.0):
        self.n_channels = n_channels
        self.std_min = std_min
        self.std_max = std_max

    @property
    def n_params(self) -> int:
        """Number of raw parameter channels P."""
        raise NotImplementedError

    def log_prob(self, raw: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Log-density of y (B, C, T) summed over channels: (B, T)."""
        raise NotImplementedError

    def mean(self, raw: torch.Tensor) -> torch.Tensor:
        """Predictive mean (B, C, T)."""
        raise NotImplementedError

    def std(self, raw: torch.Tensor) -> torch.Tensor:
        """Predictive standard deviation per channel (B, C, T)."""
        raise NotImplementedError

    def sample(
        self, raw: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Draw y (B, C, T) from the distribution."""
        raise NotImplementedError


class GaussianLikelihood(Likelihood):
    """Diagonal Gaussian: 2C parameters (means, then pre-softplus stds)."""

    @property
    def n_params(self) -> int:  # noqa: D102
        return 2 * self.n_channels

    def _split(self, raw):
        return split_gaussian(raw, self.std_min, self.std_max)

    def log_prob(self, raw, y):  # noqa: D102
        mean, std = self._split(raw)
        return gaussian_log_prob(y, mean, std).sum(1)

    def mean(self, raw):  # noqa: D102
        return self._split(raw)[0]

    def std(self, raw):  # noqa: D102
        return self._split(raw)[1]

    def sample(self, raw, generator=None):  # noqa: D102
        mean, std = self._split(raw)
        eps = torch.randn(
            mean.shape, generator=generator, device=mean.device, dtype=mean.dtype
        )
        return mean + std * eps


class BernoulliLikelihood(Likelihood):
    """Independent Bernoulli channels parameterised by C logits."""

    @property
    def n_params(self) -> int:  # noqa: D102
        return self.n_channels

    def log_prob(self, raw, y):  # noqa: D102
        return -F.binary_cross_entropy_with_logits(raw, y, reduction="none").sum(1)

    def mean(self, raw):  # noqa: D102
        return torch.sigmoid(raw)

    def std(self, raw):  # noqa: D102
        p = torch.sigmoid(raw)
        return torch.sqrt(p * (1 - p))

    def sample(self, raw, generator=None):  # noqa: D102
        u = torch.rand(
            raw.shape, generator=generator, device=raw.device, dtype=raw.dtype
        )
        return (u < torch.sigmoid(raw)).to(raw.dtype)


class GaussianMixtureLikelihood(Likelihood):
    """Mixture of K diagonal Gaussians over all C channels jointly.

    Raw layout (Appendix A.2, 2CK + K channels): C*K means (index c*K + k),
    C*K pre-softplus stds, then K mixture logits. One component is chosen
    per time step for all channels, in the density and in the sampler alike
    (the authors' code mixes per channel in the density but jointly in the
    sampler; we do not copy that inconsistency).

    Parameters
    ----------
    n_channels : int
    n_components : int
    std_min, std_max : float
    """

    def __init__(self, n_channels, n_components, std_min=1e-3, std_max=5.0):
        super().__init__(n_channels, std_min, std_max)
        self.n_components = n_components

    @property
    def n_params(self) -> int:  # noqa: D102
        return (2 * self.n_channels + 1) * self.n_components

    def _split(self, raw):
        B, _, T = raw.shape
        C, K = self.n_channels, self.n_components
        means = raw[:, : C * K].reshape(B, C, K, T)
        pre = raw[:, C * K : 2 * C * K].reshape(B, C, K, T)
        stds = F.softplus(pre).clamp(self.std_min, self.std_max)
        log_w = torch.log_softmax(raw[:, 2 * C * K :], dim=1)  # (B, K, T)
        return means, stds, log_w

    def log_prob(self, raw, y):  # noqa: D102
        means, stds, log_w = self._split(raw)
        comp = gaussian_log_prob(y.unsqueeze(2), means, stds).sum(1)  # (B, K, T)
        return torch.logsumexp(log_w + comp, dim=1)  # (B, T)

    def mean(self, raw):  # noqa: D102
        means, _, log_w = self._split(raw)
        return (means * log_w.exp().unsqueeze(1)).sum(2)

    def std(self, raw):  # noqa: D102
        means, stds, log_w = self._split(raw)
        w = log_w.exp().unsqueeze(1)  # (B, 1, K, T)
        m = (means * w).sum(2)
        second = ((stds**2 + means**2) * w).sum(2)
        return torch.sqrt((second - m**2).clamp_min(0.0))

    def sample(self, raw, generator=None):  # noqa: D102
        means, stds, log_w = self._split(raw)
        B, C, K, T = means.shape
        probs = log_w.exp().permute(0, 2, 1).reshape(B * T, K)
        k = torch.multinomial(probs, 1, generator=generator).reshape(B, T)
        idx = k[:, None, None, :].expand(B, C, 1, T)
        mu = means.gather(2, idx).squeeze(2)  # (B, C, T)
        sd = stds.gather(2, idx).squeeze(2)
        eps = torch.randn(
            mu.shape, generator=generator, device=mu.device, dtype=mu.dtype
        )
        return mu + sd * eps


class MixtureBernoulliLikelihood(Likelihood):
    """Bernoulli first channel (pen-up flag) and a Gaussian mixture for the rest.

    Raw layout: 1 Bernoulli logit, then the mixture's 2(C-1)K + K channels.

    Parameters
    ----------
    n_channels : int
        Total channels C (>= 2): channel 0 is binary.
    n_components : int
    std_min, std_max : float
    """

    def __init__(self, n_channels, n_components, std_min=1e-3, std_max=5.0):
        super().__init__(n_channels, std_min, std_max)
        self.binary = BernoulliLikelihood(1)
        self.real = GaussianMixtureLikelihood(
            n_channels - 1, n_components, std_min, std_max
        )

    @property
    def n_params(self) -> int:  # noqa: D102
        return 1 + self.real.n_params

    def log_prob(self, raw, y):  # noqa: D102
        return self.binary.log_prob(raw[:, :1], y[:, :1]) + self.real.log_prob(
            raw[:, 1:], y[:, 1:]
        )

    def mean(self, raw):  # noqa: D102
        return torch.cat([self.binary.mean(raw[:, :1]), self.real.mean(raw[:, 1:])], 1)

    def std(self, raw):  # noqa: D102
        return torch.cat([self.binary.std(raw[:, :1]), self.real.std(raw[:, 1:])], 1)

    def sample(self, raw, generator=None):  # noqa: D102
        return torch.cat(
            [
                self.binary.sample(raw[:, :1], generator),
                self.real.sample(raw[:, 1:], generator),
            ],
            1,
        )


def make_likelihood(
    name: str,
    n_channels: int,
    n_components: int = 1,
    std_min: float = 1e-3,
    std_max: float = 5.0,
) -> Likelihood:
    """Build a predictive distribution by name.

    Parameters
    ----------
    name : {"gaussian", "gmm", "bernoulli", "gmm_bernoulli"}
    n_channels : int
    n_components : int, default=1
    std_min, std_max : float

    Returns
    -------
    likelihood : Likelihood
    """
    if name == "gaussian":
        return GaussianLikelihood(n_channels, std_min, std_max)
    if name == "bernoulli":
        return BernoulliLikelihood(n_channels, std_min, std_max)
    if name == "gmm":
        return GaussianMixtureLikelihood(n_channels, n_components, std_min, std_max)
    if name == "gmm_bernoulli":
        return MixtureBernoulliLikelihood(n_channels, n_components, std_min, std_max)
    raise ValueError(f"unknown likelihood {name!r}")
