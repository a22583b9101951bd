"""The MS-STCN model: causality, receptive field, lengths, ELBO, parameter counts."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from _tiny import build, fixed_noise, preset_variants, random_data, tiny_config
from torch import distributions as td
from torch.nn import functional as F

from sysid_msstcn.config import NetworkConfig
from sysid_msstcn.model import MSSTCN
from sysid_msstcn.objectives import elbo_terms
from sysid_msstcn.presets import preset_network_kwargs
from sysid_msstcn.summary import count_parameters

DT = torch.float64
VARIANTS = preset_variants()
IDS = [f"{n}-u{i}-{r}" for n, i, r in VARIANTS]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _steps_to_check(D: int, T: int) -> list[int]:
    """Perturbation steps, block boundaries of the top level included."""
    cand = {0, 1, D - 1, D, D + 1, 2 * D - 1, 2 * D, T // 2, T - 2, T - 1}
    return sorted(t for t in cand if 0 <= t < T)


def _small(**kw) -> NetworkConfig:
    n = len(kw["strides"])
    base = {
        "n_outputs": 1,
        "channels": (4,) * n,
        "latent_dims": (1,) * n,
        "dilations": ((1,),) * n,
    }
    return NetworkConfig(**{**base, **kw})


# ----------------------------------------------------------------- causality
@pytest.mark.parametrize(("name", "n_inputs", "resampling"), VARIANTS, ids=IDS)
def test_causality_for_every_preset(name, n_inputs, resampling):
    # y_t changes no params at steps <= t; u_t none at steps < t but step t
    cfg = tiny_config(name, n_inputs=n_inputs, resampling=resampling)
    model = build(cfg)
    D = cfg.total_stride
    T = 2 * D + 7
    y, u = random_data(model, 1, T)
    noise = fixed_noise(model, 1, T)
    with torch.no_grad():
        for latent in ("prior", "prior_mean"):
            base = model(y, u, latent=latent, noise=noise).params
            for t in _steps_to_check(D, T):
                y2 = y.clone()
                y2[..., t] += 1.0
                diff = (model(y2, u, latent=latent, noise=noise).params - base).abs()
                assert torch.all(diff[..., : t + 1] == 0), (latent, "y", t)
                if t + 1 < T:  # the lowest level's delayed AR path sees y_t
                    assert diff[..., t + 1].max() > 0, (latent, "y", t)
                if u is None:
                    continue
                u2 = u.clone()
                u2[..., t] += 1.0
                diff = (model(y, u2, latent=latent, noise=noise).params - base).abs()
                assert torch.all(diff[..., :t] == 0), (latent, "u", t)
                assert diff[..., t].max() > 0, (latent, "u feedthrough", t)


@pytest.mark.parametrize(
    ("name", "n_inputs", "resampling"),
    [v for v in VARIANTS if v[0] in ("blizzard_fw2", "iam_ondb", "sysid_small")],
    ids=lambda v: str(v),
)
def test_causality_by_nan_injection(name, n_inputs, resampling):
    # NaN in y from t0 on leaves params <= t0 finite; NaN in u from t0, < t0
    cfg = tiny_config(name, n_inputs=n_inputs, resampling=resampling)
    model = build(cfg)
    D = cfg.total_stride
    T = 2 * D + 7
    y, u = random_data(model, 1, T)
    noise = fixed_noise(model, 1, T)
    with torch.no_grad():
        for t0 in _steps_to_check(D, T):
            y2 = y.clone()
            y2[..., t0:] = float("nan")
            p = model(y2, u, latent="prior", noise=noise).params
            assert torch.isfinite(p[..., : t0 + 1]).all(), t0
            if u is not None:
                u2 = u.clone()
                u2[..., t0:] = float("nan")
                p = model(y, u2, latent="prior_mean").params
                assert torch.isfinite(p[..., :t0]).all(), t0


# ------------------------------------------------------------ receptive field
def _measured_receptive_field(cfg: NetworkConfig) -> int:
    """max over one period of t of (t - earliest y index with a nonzero gradient).

    Gradients see dependencies far below float64 resolution of a finite
    perturbation (the influence through many gates decays to ~1e-20).
    """
    model = build(cfg)
    D, R = cfg.total_stride, cfg.receptive_field
    T = R + 2 * D + 1
    y, u = random_data(model, D, T)  # one batch row per target step
    y.requires_grad_(True)
    p = model(y, u, latent="prior_mean").params  # (D, P, T)
    targets = torch.arange(T - D, T)
    p[torch.arange(D), :, targets].sum().backward()
    dep = y.grad.abs().amax(1) > 0  # (D, T)
    span = 0
    for b, t in enumerate(targets.tolist()):
        idx = torch.nonzero(dep[b]).flatten()
        assert idx.max() < t  # causal: nothing at or after t
        span = max(span, t - int(idx.min()))
    return span


RF_CONFIGS = {
    "one-level": _small(strides=(1,), dilations=((1, 2),)),
    "k3": _small(strides=(1, 2), dilations=((1, 2), (1, 3)), kernel_size=3),
    "s1-2-3": _small(strides=(1, 2, 3), dilations=((1, 2), (1,), (1, 2))),
    "s1-5-5-4-1": _small(
        strides=(1, 5, 5, 4, 1), dilations=((1, 1), (1, 1), (1,), (1, 1), (1, 2))
    ),
    "iam_ondb": tiny_config("iam_ondb", latent=1),
    "sysid_default": tiny_config("sysid_default", n_inputs=0, latent=1),
    "blizzard_fw2": tiny_config("blizzard_fw2", latent=1),
}


@pytest.mark.parametrize(
    ("key", "resampling"),
    [(k, r) for k in RF_CONFIGS for r in ("learned", "fixed") if k != "blizzard_fw2"]
    + [("blizzard_fw2", "fixed")],  # the slowest (T ~ 4000); learned: s1-5-5-4-1
)
def test_receptive_field_matches_measurement(key, resampling):
    # NetworkConfig.receptive_field equals the measured dependence span
    cfg = replace(RF_CONFIGS[key], resampling=resampling)
    assert _measured_receptive_field(cfg) == cfg.receptive_field


def test_receptive_field_known_values():
    # a single level: (k - 1) * sum(dilations) + 1 for the Delay
    assert _small(strides=(1,), dilations=((1, 2, 4),)).receptive_field == 8
    cfg = _small(strides=(1,), dilations=((1, 2),), kernel_size=3)
    assert cfg.receptive_field == 7


# ------------------------------------------------------------------- lengths
@pytest.mark.parametrize("resampling", ["learned", "fixed"])
@pytest.mark.parametrize(
    "strides", [(1, 5, 5, 4, 1), (1, 2, 3)], ids=lambda s: "-".join(map(str, s))
)
@pytest.mark.parametrize("n_steps", [1, 7, 33, 101, 203])
def test_output_length_is_input_length(strides, resampling, n_steps):
    cfg = _small(strides=strides, resampling=resampling, n_outputs=2, n_inputs=1)
    model = build(cfg)
    y, u = random_data(model, 2, n_steps)
    out = model(y, u)
    assert out.params.shape == (2, model.likelihood.n_params, n_steps)
    assert out.log_lik.shape == (2, n_steps) and out.mask.shape == (2, n_steps)
    shapes = model.latent_shapes(2, n_steps)
    assert [tuple(lt.z.shape) for lt in out.latents] == shapes
    Tp = -(-n_steps // cfg.total_stride) * cfg.total_stride
    assert shapes == [
        (2, 1, Tp // r) for r in cfg.cumulative_strides
    ]  # one latent per block
    assert torch.isfinite(out.log_lik).all()


# --------------------------------------------------------------------- ELBO
def _reference_elbo(out, y, lengths, rates):
    """ELBO per sequence from torch.distributions and hand-made masks."""
    mean, pre = out.params.chunk(2, dim=1)
    std = F.softplus(pre).clamp(1e-3, 5.0)
    T = y.shape[-1]
    mask = (torch.arange(T)[None, :] < lengths[:, None]).to(DT)  # (B, T)
    ll = (td.Normal(mean, std).log_prob(y).sum(1) * mask).sum(-1)
    kl = torch.zeros_like(ll)
    for lt, rate in zip(out.latents, rates, strict=True):
        q = td.Normal(lt.post_mean, lt.post_std)
        p = td.Normal(lt.prior_mean, lt.prior_std)
        n_l = lt.z.shape[-1]
        m = (torch.arange(n_l)[None, :] * rate < lengths[:, None]).to(DT)
        kl = kl + (td.kl_divergence(q, p).sum(1) * m).sum(-1)
    return ll, kl


def _elbo_model(n_inputs=0):
    cfg = _small(
        strides=(1, 2, 3),
        dilations=((1, 2), (1,), (1,)),
        latent_dims=(2, 1, 2),
        n_outputs=2,
        n_inputs=n_inputs,
    )
    return build(cfg)


@pytest.mark.parametrize("n_inputs", [0, 1])
def test_elbo_decomposition_matches_torch_distributions(n_inputs):
    # elbo = sum_t,c log N(y | mean, std) - sum KL(q || p) over levels, masked
    model = _elbo_model(n_inputs)
    B, T = 3, 25
    y, u = random_data(model, B, T)
    noise = fixed_noise(model, B, T)
    lengths = torch.tensor([25, 13, 6])
    out = model(y, u, lengths=lengths, noise=noise)
    ll, kl = _reference_elbo(out, y, lengths, model.config.cumulative_strides)
    terms = elbo_terms(out)
    torch.testing.assert_close(terms["log_lik"], ll)
    torch.testing.assert_close(terms["kl"], kl)
    torch.testing.assert_close(terms["elbo"], ll - kl)
    torch.testing.assert_close(terms["kl_per_level"].sum(1), kl)
    assert terms["n_steps"].tolist() == [25, 13, 6]
    # posterior draw with the given noise: z = mean_q + std_q * eps
    for lt, eps in zip(out.latents, noise, strict=True):
        torch.testing.assert_close(lt.z, lt.post_mean + lt.post_std * eps)
    # prior modes: z from the prior
    out_p = model(y, u, noise=noise, latent="prior")
    for lt, eps in zip(out_p.latents, noise, strict=True):
        torch.testing.assert_close(lt.z, lt.prior_mean + lt.prior_std * eps)
    out_m = model(y, u, latent="prior_mean")
    for lt in out_m.latents:
        torch.testing.assert_close(lt.z, lt.prior_mean)


def _pad_with(x: torch.Tensor | None, lengths: torch.Tensor, value: float):
    if x is None:
        return None
    x = x.clone()
    for i, n in enumerate(lengths.tolist()):
        x[i, :, n:] = value
    return x


def _alone_elbo(model, y, u, noise, i, n):
    shapes = model.latent_shapes(1, n)
    ni = [e[i : i + 1, :, : s[2]] for e, s in zip(noise, shapes, strict=True)]
    ui = None if u is None else u[i : i + 1, :, :n]
    return elbo_terms(model(y[i : i + 1, :, :n], ui, noise=ni))


@pytest.mark.parametrize("n_inputs", [0, 1])
def test_padded_batch_elbo_equals_each_sequence_alone(n_inputs):
    # padded steps do not contribute: with garbage y beyond the length (and
    # zero-padded u), sequence i's ELBO equals the ELBO of sequence i alone
    model = _elbo_model(n_inputs)
    B, T = 4, 24
    y, u = random_data(model, B, T)
    noise = fixed_noise(model, B, T)
    lengths = torch.tensor([24, 13, 6, 7])  # aligned and unaligned with stride 6
    yp = _pad_with(y, lengths, 1e3)
    up = _pad_with(u, lengths, 0.0)
    out = model(yp, up, lengths=lengths, noise=noise)
    terms = elbo_terms(out)
    assert torch.all(out.log_lik[1, 13:] == 0) and torch.all(out.log_lik[2, 6:] == 0)
    for i, n in enumerate(lengths.tolist()):
        alone = _alone_elbo(model, y, u, noise, i, n)
        for key in ("elbo", "log_lik", "kl"):
            torch.testing.assert_close(terms[key][i], alone[key][0], msg=key)


def test_padded_batch_elbo_ignores_padded_inputs():
    # same as above but u is garbage beyond the length too
    model = _elbo_model(1)
    B, T = 2, 24
    y, u = random_data(model, B, T)
    noise = fixed_noise(model, B, T)
    lengths = torch.tensor([24, 13])
    out = model(
        _pad_with(y, lengths, 1e3), _pad_with(u, lengths, 5.0), lengths, noise=noise
    )
    alone = _alone_elbo(model, y, u, noise, 1, 13)
    torch.testing.assert_close(elbo_terms(out)["elbo"][1], alone["elbo"][0])


# ---------------------------------------------------------- parameter counts
def test_parameter_count_of_the_authors_blizzard_model():
    # reference section 4: 5,845,802 in total, per level and head
    model = MSSTCN(NetworkConfig(**preset_network_kwargs("blizzard_fw2_code")))
    assert count_parameters(model) == 5_845_802
    per_level = [
        count_parameters(model.bottom_up.levels[lv]) + count_parameters(td_lv)
        for lv, td_lv in enumerate(model.top_down)
    ]
    assert per_level == [26_056, 122_390, 608_190, 2_495_360, 2_593_536]
    assert count_parameters(model.head) == 270


# ----------------------------------------------------------- use_latents=False
def test_without_latents_elbo_is_log_lik():
    cfg = _small(strides=(1, 2), n_inputs=1, use_latents=False)
    model = build(cfg)
    assert not any("prior" in n or "posterior" in n for n, _ in model.named_modules())
    y, u = random_data(model, 2, 11)
    out = model(y, u)
    assert out.latents == [] and out.kl == []
    terms = elbo_terms(out)
    torch.testing.assert_close(terms["elbo"], terms["log_lik"])
    torch.testing.assert_close(terms["log_lik"], out.log_lik.sum(-1))
    assert terms["kl"].tolist() == [0.0, 0.0]
    # deterministic: every latent mode gives the same prediction
    torch.testing.assert_close(model(y, u, latent="prior").params, out.params)


# -------------------------------------------------------------- bad arguments
@pytest.fixture
def io_model():
    return build(_small(strides=(1, 2), n_outputs=2, n_inputs=1))


@pytest.mark.parametrize(
    ("y_shape", "u_shape", "latent", "match"),
    [
        ((2, 2), (2, 1, 8), "posterior", "y must have shape"),
        ((2, 3, 8), (2, 1, 8), "posterior", "y must have shape"),
        ((2, 2, 8), None, "posterior", "u must have shape"),
        ((2, 2, 8), (2, 1, 7), "posterior", "u must have shape"),
        ((2, 2, 8), (1, 1, 8), "posterior", "u must have shape"),
        ((2, 2, 8), (2, 1, 8), "sample", "unknown latent mode"),
    ],
    ids=["y-2d", "y-channels", "u-missing", "u-length", "u-batch", "latent"],
)
def test_bad_arguments_raise_value_error(io_model, y_shape, u_shape, latent, match):
    y = torch.zeros(y_shape, dtype=DT)
    u = None if u_shape is None else torch.zeros(u_shape, dtype=DT)
    with pytest.raises(ValueError, match=match):
        io_model(y, u, latent=latent)


def test_inputs_given_to_a_model_without_inputs_raise():
    model = build(_small(strides=(1, 2)))
    with pytest.raises(ValueError, match="no inputs"):
        model(torch.zeros(1, 1, 8, dtype=DT), torch.zeros(1, 1, 8, dtype=DT))
