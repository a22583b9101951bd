"""Distribution math against torch.distributions and Monte Carlo."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import distributions as td

from sysid_msstcn.distributions import (
    BernoulliLikelihood,
    GaussianLikelihood,
    GaussianMixtureLikelihood,
    MixtureBernoulliLikelihood,
    gaussian_kl,
    gaussian_log_prob,
    make_likelihood,
    split_gaussian,
)

DT = torch.float64
INV_SOFTPLUS_1 = math.log(math.e - 1.0)  # softplus(x) = 1


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _std(pre: torch.Tensor) -> torch.Tensor:
    return F.softplus(pre).clamp(1e-3, 5.0)


def _reference_gmm(raw: torch.Tensor, C: int, K: int) -> td.Distribution:
    """Joint diagonal GMM over C channels at every (batch, time), built by hand."""
    B, _, T = raw.shape
    means = raw[:, : C * K].reshape(B, C, K, T).permute(0, 3, 2, 1)  # (B, T, K, C)
    stds = _std(raw[:, C * K : 2 * C * K].reshape(B, C, K, T).permute(0, 3, 2, 1))
    logits = raw[:, 2 * C * K :].permute(0, 2, 1)  # (B, T, K)
    return td.MixtureSameFamily(
        td.Categorical(logits=logits), td.Independent(td.Normal(means, stds), 1)
    )


def test_gaussian_log_prob_matches_torch():
    x, mean = torch.randn(3, 4, 5, dtype=DT), torch.randn(3, 4, 5, dtype=DT)
    std = torch.rand(3, 4, 5, dtype=DT) * 3 + 0.01
    expected = td.Normal(mean, std).log_prob(x)
    torch.testing.assert_close(gaussian_log_prob(x, mean, std), expected)


def test_gaussian_kl_matches_torch():
    mq, mp = torch.randn(2, 3, 7, dtype=DT), torch.randn(2, 3, 7, dtype=DT)
    sq = torch.rand(2, 3, 7, dtype=DT) * 2 + 0.05
    sp = torch.rand(2, 3, 7, dtype=DT) * 2 + 0.05
    expected = td.kl_divergence(td.Normal(mq, sq), td.Normal(mp, sp))
    torch.testing.assert_close(gaussian_kl(mq, sq, mp, sp), expected)
    assert torch.all(gaussian_kl(mq, sq, mq, sq).abs() < 1e-12)  # KL(p || p) = 0


def test_split_gaussian_clamps_std():
    # std = clamp(softplus(pre), 1e-3, 5) (Appendix A.2)
    pre = torch.tensor([[[-50.0, -3.0, 0.0, 3.0, 50.0]]], dtype=DT)
    raw = torch.cat([torch.zeros_like(pre), pre], 1)
    mean, std = split_gaussian(raw)
    assert torch.equal(mean, torch.zeros_like(pre))
    expected = F.softplus(pre).clamp(1e-3, 5.0)
    torch.testing.assert_close(std, expected)
    assert std[0, 0, 0] == 1e-3 and std[0, 0, -1] == 5.0
    assert 1e-3 < std[0, 0, 1] < std[0, 0, 3] < 5.0
    _, std2 = split_gaussian(raw, 0.1, 2.0)
    assert std2.min() == 0.1 and std2.max() == 2.0


@pytest.mark.parametrize(
    ("name", "C", "K", "P"),
    [
        ("gaussian", 3, 1, 6),
        ("bernoulli", 3, 1, 3),
        ("gmm", 2, 3, 2 * 2 * 3 + 3),
        ("gmm_bernoulli", 3, 4, 1 + 2 * 2 * 4 + 4),
    ],
)
def test_n_params(name, C, K, P):
    # Appendix A.2: 2p for a Gaussian, p logits, 2p n_c + n_c for a GMM
    assert make_likelihood(name, C, K).n_params == P


def test_make_likelihood_rejects_unknown_name():
    with pytest.raises(ValueError, match="unknown likelihood"):
        make_likelihood("laplace", 1)


def test_gaussian_log_prob_vs_independent_normal():
    lik = GaussianLikelihood(3)
    raw = torch.randn(2, 6, 9, dtype=DT) * 2
    y = torch.randn(2, 3, 9, dtype=DT)
    # Independent over channels: event dimension last, (B, T, C)
    mean, std = raw[:, :3].transpose(1, 2), _std(raw[:, 3:]).transpose(1, 2)
    expected = td.Independent(td.Normal(mean, std), 1).log_prob(y.transpose(1, 2))
    torch.testing.assert_close(lik.log_prob(raw, y), expected)


def test_bernoulli_log_prob_vs_torch():
    lik = BernoulliLikelihood(2)
    raw = torch.randn(3, 2, 8, dtype=DT) * 3
    y = (torch.rand(3, 2, 8, dtype=DT) > 0.5).to(DT)
    expected = td.Bernoulli(logits=raw).log_prob(y).sum(1)
    torch.testing.assert_close(lik.log_prob(raw, y), expected)


@pytest.mark.parametrize(("C", "K"), [(1, 1), (1, 3), (2, 3), (4, 2)])
def test_gmm_log_prob_is_a_joint_diagonal_mixture(C, K):
    # log sum_k pi_k prod_c N(y_c; mu_ck, sigma_ck): MixtureSameFamily + Independent
    lik = GaussianMixtureLikelihood(C, K)
    raw = torch.randn(2, lik.n_params, 6, dtype=DT) * 1.5
    y = torch.randn(2, C, 6, dtype=DT) * 2
    expected = _reference_gmm(raw, C, K).log_prob(y.permute(0, 2, 1))
    torch.testing.assert_close(lik.log_prob(raw, y), expected)


def test_gmm_bernoulli_log_prob_is_bernoulli_plus_gmm():
    # channel 0 Bernoulli from the first raw channel, the rest a joint GMM
    C, K = 3, 2
    lik = MixtureBernoulliLikelihood(C, K)
    raw = torch.randn(2, lik.n_params, 5, dtype=DT)
    y = torch.randn(2, C, 5, dtype=DT)
    y[:, 0] = (y[:, 0] > 0).to(DT)
    expected = td.Bernoulli(logits=raw[:, 0]).log_prob(y[:, 0])
    expected = expected + _reference_gmm(raw[:, 1:], C - 1, K).log_prob(
        y[:, 1:].permute(0, 2, 1)
    )
    torch.testing.assert_close(lik.log_prob(raw, y), expected)


def _gmm_raw(means, stds, weights, n: int) -> torch.Tensor:
    """Raw parameters (1, 2CK + K, n) of a fixed mixture; means[c][k]."""
    means = torch.tensor(means, dtype=DT)  # (C, K)
    pre = torch.log(torch.expm1(torch.tensor(stds, dtype=DT)))  # softplus^-1
    logits = torch.log(torch.tensor(weights, dtype=DT))
    raw = torch.cat([means.reshape(-1), pre.reshape(-1), logits])
    return raw[None, :, None].expand(1, raw.numel(), n).contiguous()


def _grid_quadrant_mass(lik, raw1, lim=10.0, n=401):
    """Quadrant probabilities integrated from log_prob on a 2-D grid."""
    g = torch.linspace(-lim, lim, n, dtype=DT)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    pts = torch.stack([xx.reshape(-1), yy.reshape(-1)])[None]  # (1, 2, n*n)
    raw = raw1[..., :1].expand(1, raw1.shape[1], pts.shape[-1])
    dens = lik.log_prob(raw, pts).exp()[0].reshape(n, n)
    dA = (g[1] - g[0]) ** 2
    total = dens.sum() * dA
    q = {
        "--": dens[(xx < 0) & (yy < 0)].sum() * dA,
        "-+": dens[(xx < 0) & (yy > 0)].sum() * dA,
        "+-": dens[(xx > 0) & (yy < 0)].sum() * dA,
        "++": dens[(xx > 0) & (yy > 0)].sum() * dA,
    }
    return total, q


def test_gmm_sampler_agrees_with_density_in_quadrants():
    # mixture at (-3,-3) and (+3,+3): a per-channel mixing density would put
    # ~1/4 of its mass near (-3,+3); a joint density and its sampler put ~0
    lik = GaussianMixtureLikelihood(2, 2)
    n = 40_000
    raw = _gmm_raw([[-3.0, 3.0], [-3.0, 3.0]], [[1.0, 1.0], [1.0, 1.0]], [0.5, 0.5], n)
    total, mass = _grid_quadrant_mass(lik, raw)
    assert abs(total - 1.0) < 1e-3  # the density is normalised
    assert mass["-+"] < 0.01 and mass["+-"] < 0.01
    g = torch.Generator().manual_seed(1)
    s = lik.sample(raw, generator=g)[0]  # (2, n)
    freq = {
        "--": ((s[0] < 0) & (s[1] < 0)).double().mean(),
        "-+": ((s[0] < 0) & (s[1] > 0)).double().mean(),
        "+-": ((s[0] > 0) & (s[1] < 0)).double().mean(),
        "++": ((s[0] > 0) & (s[1] > 0)).double().mean(),
    }
    for key in mass:
        assert abs(freq[key] - mass[key]) < 0.01, (key, freq[key], mass[key])
    # density at the "impossible" point (-3, +3) is negligible
    point = torch.tensor([[[-3.0], [3.0]]], dtype=DT)
    assert lik.log_prob(raw[..., :1], point) < -15


def test_gmm_sampler_moments_match_density():
    # 2 channels, 3 components, unequal weights: sample mean/cov vs analytic
    means = [[-2.0, 0.5, 3.0], [1.0, -1.5, 2.0]]
    stds = [[0.5, 1.0, 0.3], [0.8, 0.4, 1.2]]
    weights = [0.2, 0.5, 0.3]
    lik = GaussianMixtureLikelihood(2, 3)
    n = 100_000
    raw = _gmm_raw(means, stds, weights, n)
    s = lik.sample(raw, generator=torch.Generator().manual_seed(2))[0]  # (2, n)
    m, sd, w = (torch.tensor(v, dtype=DT) for v in (means, stds, weights))
    mu = (m * w).sum(1)  # (2,)
    second = torch.einsum("k,ik,jk->ij", w, m, m) + torch.diag((w * sd**2).sum(1))
    cov = second - torch.outer(mu, mu)
    torch.testing.assert_close(s.mean(1), mu, atol=0.03, rtol=0)
    torch.testing.assert_close(torch.cov(s), cov, atol=0.06, rtol=0.03)
    # the analytic mean/std of the class agree too
    torch.testing.assert_close(lik.mean(raw[..., :1])[0, :, 0], mu)
    torch.testing.assert_close(lik.std(raw[..., :1])[0, :, 0], cov.diag().sqrt())
    # and the density integrates to the same moments on a grid
    g = torch.linspace(-8, 9, 341, dtype=DT)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    pts = torch.stack([xx.reshape(-1), yy.reshape(-1)])[None]
    dens = lik.log_prob(raw[..., :1].expand(1, raw.shape[1], pts.shape[-1]), pts)
    p = dens.exp()[0] * (g[1] - g[0]) ** 2
    assert abs(p.sum() - 1) < 1e-3
    grid_cov = torch.cov(pts[0], aweights=p / p.sum())
    torch.testing.assert_close(grid_cov, cov, atol=5e-3, rtol=0)


@pytest.mark.parametrize("name", ["gaussian", "gmm", "bernoulli", "gmm_bernoulli"])
def test_mean_and_std_match_monte_carlo(name):
    C, K, n = 3, 3, 60_000
    lik = make_likelihood(name, C, K if "gmm" in name else 1)
    torch.manual_seed(3)
    raw1 = torch.randn(1, lik.n_params, 1, dtype=DT)
    raw = raw1.expand(1, lik.n_params, n)
    s = lik.sample(raw, generator=torch.Generator().manual_seed(4))[0]  # (C, n)
    mean, std = lik.mean(raw1)[0, :, 0], lik.std(raw1)[0, :, 0]
    tol = 4 * std / math.sqrt(n) + 1e-3
    assert torch.all((s.mean(1) - mean).abs() < tol), (s.mean(1), mean)
    torch.testing.assert_close(s.std(1), std, rtol=0.03, atol=1e-3)
    if "bernoulli" in name:
        binary = s[:1] if name == "gmm_bernoulli" else s
        assert set(binary.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("name", ["gaussian", "gmm", "bernoulli", "gmm_bernoulli"])
def test_sampler_is_deterministic_given_a_generator(name):
    lik = make_likelihood(name, 2, 2 if "gmm" in name else 1)
    raw = torch.randn(3, lik.n_params, 10, dtype=DT)
    a = lik.sample(raw, generator=torch.Generator().manual_seed(7))
    b = lik.sample(raw, generator=torch.Generator().manual_seed(7))
    assert a.shape == (3, 2, 10)
    assert torch.equal(a, b)


def test_likelihood_std_is_clamped():
    # predicted standard deviations stay in [1e-3, 5] however extreme the raw input
    lik = GaussianLikelihood(2)
    raw = torch.tensor([[[0.0], [0.0], [-100.0], [100.0]]], dtype=DT)
    std = lik.std(raw)[0, :, 0]
    assert std.tolist() == [1e-3, 5.0]
    gmm = GaussianMixtureLikelihood(1, 2)
    raw = torch.tensor([[[0.0], [0.0], [-100.0], [100.0], [0.0], [0.0]]], dtype=DT)
    std = gmm.std(raw)[0, 0, 0]  # both components at 0: sqrt(mean of variances)
    torch.testing.assert_close(std, torch.tensor(math.sqrt((1e-6 + 25) / 2), dtype=DT))
    lik = GaussianLikelihood(1, std_min=0.1, std_max=2.0)
    raw = torch.tensor([[[0.0, 0.0], [-100.0, 100.0]]], dtype=DT)
    assert lik.std(raw)[0, 0].tolist() == [0.1, 2.0]
