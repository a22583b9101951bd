"""Streaming simulation: exact agreement with the parallel forward pass."""

from __future__ import annotations

import pytest
import torch
from _tiny import build, fixed_noise, preset_variants, random_data, tiny_config

from sysid_msstcn.config import NetworkConfig
from sysid_msstcn.streaming import (
    StreamingSimulator,
    _buffers,
    _simulator,
    _top_down,
    simulate,
)

DT = torch.float64
VARIANTS = preset_variants()
IDS = [f"{n}-u{i}-{r}" for n, i, r in VARIANTS]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(params=["fused", "per_block"])
def form(request, monkeypatch):
    """Run a test with every chain compiled in one form (else costs decide)."""
    monkeypatch.setattr(_buffers, "_FUSE", request.param == "fused")
    return request.param


def _warmups(D: int) -> dict[str, int]:
    """n0 = 0, not aligned to the total stride, and aligned."""
    return {"n0=0": 0, "unaligned": D // 2 + 1 if D > 1 else 3, "aligned": D}


def _small(**kw) -> NetworkConfig:
    base = {
        "n_outputs": 1,
        "n_inputs": 1,
        "channels": (4, 4, 4),
        "latent_dims": (2, 1, 2),
        "strides": (1, 2, 3),
        "dilations": ((1, 2), (1, 2), (1,)),
    }
    return NetworkConfig(**{**base, **kw})


@pytest.mark.parametrize(("name", "n_inputs", "resampling"), VARIANTS, ids=IDS)
def test_streaming_equals_full_forward_for_every_preset(
    name, n_inputs, resampling, form
):
    # free-run sampling, then the parallel pass on the simulated record agrees
    cfg = tiny_config(name, n_inputs=n_inputs, resampling=resampling)
    model = build(cfg)
    D = cfg.total_stride
    T = max(D + D // 2 + 5, 24)  # crosses a top-level block boundary after n0
    y, u = random_data(model, 1, T)
    noise = fixed_noise(model, 1, T)
    for label, n0 in _warmups(D).items():
        y_init = y[..., :n0] if n0 else None
        g = torch.Generator().manual_seed(1)
        ys, ps = simulate(
            model, T, u, y_init, "prior", "sample", noise=noise, generator=g
        )
        assert torch.equal(ys[..., :n0], y[..., :n0]), label
        assert torch.all(ps[..., :n0] == 0), label
        full = model(ys, u, latent="prior", noise=noise).params
        torch.testing.assert_close(
            ps[..., n0:], full[..., n0:], atol=1e-10, rtol=0, msg=label
        )
    # deterministic mode, with a warm-up that is not aligned
    n0 = _warmups(D)["unaligned"]
    ys, ps = simulate(model, T, u, y[..., :n0], "prior_mean", "mean")
    full = model(ys, u, latent="prior_mean").params
    torch.testing.assert_close(ps[..., n0:], full[..., n0:], atol=1e-10, rtol=0)
    torch.testing.assert_close(
        ys[..., n0:], model.likelihood.mean(full)[..., n0:], atol=1e-10, rtol=0
    )


def _check_free_run(model, T, n0, batch=1):
    """Sampled free run with a warm-up of n0 steps equals the forward pass."""
    y, u = random_data(model, batch, T)
    noise = fixed_noise(model, batch, T)
    g = torch.Generator().manual_seed(3)
    y_init = y[..., :n0] if n0 else None
    ys, ps = simulate(model, T, u, y_init, "prior", "sample", noise=noise, generator=g)
    full = model(ys, u, latent="prior", noise=noise).params
    torch.testing.assert_close(ps[..., n0:], full[..., n0:], atol=1e-10, rtol=0)
    ys, ps = simulate(model, T, u, y_init, "prior_mean", "mean")
    full = model(ys, u, latent="prior_mean").params
    torch.testing.assert_close(ps[..., n0:], full[..., n0:], atol=1e-10, rtol=0)


@pytest.mark.parametrize("resampling", ["learned", "fixed"])
def test_rolling_the_step_buffers_keeps_exactness(monkeypatch, resampling, form):
    # buffers far shorter than the record: level-0 rows roll every 16 steps
    # (the minimum) and the coarser levels' rows at every step of theirs
    monkeypatch.setattr(_simulator, "_CHUNK_BITS", 0)
    monkeypatch.setattr(_simulator, "_COARSE_ROWS", 1)
    model = build(_small(resampling=resampling, dilations=((1, 2), (2, 1), (1,))))
    for n0 in (0, 7, 12):
        _check_free_run(model, 75, n0, batch=2)


@pytest.mark.parametrize("kernel_size", [1, 3])
@pytest.mark.parametrize("resampling", ["learned", "fixed"])
def test_other_kernel_sizes(kernel_size, resampling, form):
    # k = 3 adds its middle tap to queued entries; k = 1 needs no queue
    model = build(
        _small(
            kernel_size=kernel_size,
            resampling=resampling,
            dilations=((2, 1, 3), (1, 2), (2,)),
        )
    )
    for n0 in (0, 5, 12):
        _check_free_run(model, 40, n0)


def test_step_api_predict_and_push(monkeypatch, form):
    # predict_params / push by hand: teacher forcing; the parameters are
    # fresh tensors, not views of the rows that roll every 16 steps
    monkeypatch.setattr(_simulator, "_CHUNK_BITS", 0)
    model = build(_small())
    T = 45
    y, u = random_data(model, 2, T)
    noise = fixed_noise(model, 2, T)
    sim = StreamingSimulator(model, u, "prior", noise=noise)
    sim.prime(y[..., :5])
    ps = []
    for t in range(5, T):
        ps.append(sim.predict_params())
        sim.push(y[..., t : t + 1])
    full = model(y, u, latent="prior", noise=noise).params
    torch.testing.assert_close(torch.cat(ps, -1), full[..., 5:], atol=1e-10, rtol=0)


@pytest.mark.parametrize("resampling", ["learned", "fixed"])
def test_teacher_forcing_equals_full_forward(resampling, form):
    # teacher forcing: params equal the forward pass on the same (given) record
    model = build(_small(resampling=resampling))
    T = 29
    y, u = random_data(model, 2, T)
    noise = fixed_noise(model, 2, T)
    for n0 in (0, 4, 6, 13):
        y_init = y[..., :n0] if n0 else None
        _, ps = simulate(model, T, u, y_init, "prior", noise=noise, teacher=y)
        full = model(y, u, latent="prior", noise=noise).params
        torch.testing.assert_close(ps[..., n0:], full[..., n0:], atol=1e-10, rtol=0)


def test_same_generator_seed_gives_same_trajectory():
    model = build(_small())
    T = 40
    _, u = random_data(model, 2, T)

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        return simulate(model, T, u, latent="prior", output="sample", generator=g)

    (y1, p1), (y2, p2), (y3, _) = run(5), run(5), run(6)
    assert torch.equal(y1, y2) and torch.equal(p1, p2)
    assert not torch.equal(y1, y3)


@pytest.mark.parametrize("with_inputs", [True, False])
def test_batch_of_monte_carlo_samples_equals_individual_runs(with_inputs, form):
    # B latent-noise samples in one batch give the B individual trajectories
    model = build(_small(n_inputs=1 if with_inputs else 0))
    T, B = 30, 3
    y, u = random_data(model, 1, T)
    u_b = None if u is None else u.expand(B, -1, -1)
    noise = fixed_noise(model, B, T)
    y_init = y[..., :5].expand(B, -1, -1)
    ys, ps = simulate(
        model,
        T,
        u_b,
        y_init,
        "prior",
        "mean",
        noise=noise,
        batch=None if with_inputs else B,
    )
    assert ys.shape == (B, 1, T)
    for i in range(B):
        ni = [n[i : i + 1] for n in noise]
        yi, pi = simulate(model, T, u, y[..., :5], "prior", "mean", noise=ni)
        torch.testing.assert_close(ys[i : i + 1], yi, atol=1e-12, rtol=0)
        torch.testing.assert_close(ps[i : i + 1], pi, atol=1e-12, rtol=0)
    assert not torch.allclose(ys[0], ys[1])  # the samples do differ


def test_batch_argument_without_inputs():
    model = build(_small(n_inputs=0))
    g = torch.Generator().manual_seed(0)
    ys, ps = simulate(model, 12, latent="prior", output="sample", generator=g, batch=4)
    assert ys.shape == (4, 1, 12) and ps.shape == (4, 2, 12)
    assert not torch.allclose(ys[0], ys[1])


def test_float32_streaming_is_close():
    # float32: streaming vs float32 forward and vs the float64 simulation
    model64 = build(_small(resampling="fixed"))
    model32 = build(_small(resampling="fixed"), dtype=torch.float32)
    T = 60
    y, u = random_data(model64, 1, T)
    noise = fixed_noise(model64, 1, T)
    ys32, ps32 = simulate(
        model32,
        T,
        u.float(),
        y[..., :7].float(),
        "prior",
        noise=[n.float() for n in noise],
    )
    assert ys32.dtype == torch.float32
    full32 = model32(ys32, u.float(), latent="prior", noise=[n.float() for n in noise])
    torch.testing.assert_close(ps32[..., 7:], full32.params[..., 7:], atol=1e-4, rtol=0)
    ys64, _ = simulate(model64, T, u, y[..., :7], "prior", noise=noise)
    torch.testing.assert_close(ys32.double(), ys64, atol=1e-4, rtol=0)


@pytest.mark.parametrize("resampling", ["learned", "fixed"])
def test_level_update_counts(monkeypatch, resampling):
    # bottom-up level l produces T / (cumulative stride) outputs; the top-down
    # level l refreshes ceil(T / cumulative stride) times
    cfg = _small(
        strides=(1, 2, 3, 2),
        channels=(4,) * 4,
        latent_dims=(1,) * 4,
        dilations=((1,),) * 4,
        resampling=resampling,
    )
    model = build(cfg)
    T = 12 * 5 + 7
    _, u = random_data(model, 1, T)
    calls = [0] * cfg.n_levels
    outputs = [0] * cfg.n_levels
    original = StreamingSimulator._push_level

    def counting(self, lv, x):
        calls[lv] += 1
        before = self.last_d[lv]
        original(self, lv, x)
        outputs[lv] += self.last_d[lv] is not before

    monkeypatch.setattr(StreamingSimulator, "_push_level", counting)
    mixes = [0] * cfg.n_levels
    orig_decode = StreamingSimulator._decode

    def decode(self, lv, h, z):
        mixes[lv] += 1
        return orig_decode(self, lv, h, z)

    monkeypatch.setattr(StreamingSimulator, "_decode", decode)
    simulate(model, T, u)
    rates = cfg.cumulative_strides
    assert outputs == [T // r for r in rates]
    assert calls == [T] + [T // r for r in rates[:-1]]
    assert mixes == [-(-T // r) for r in rates]


@pytest.mark.parametrize("resampling", ["learned", "fixed"])
def test_per_block_top_down_with_folded_head_and_prior(monkeypatch, resampling):
    # per-block top-down chains whose head and prior are still folded into
    # the last blocks' products (the choice of small batches)
    monkeypatch.setattr(_top_down._TopDown, "_extra_macs", lambda self, m: (1e12, 1))
    model = build(_small(resampling=resampling))
    sim = StreamingSimulator(model, torch.zeros(1, 1, 8))
    assert not any(c.fused for c in sim._td) and sim._head_y
    for n0 in (0, 7):
        _check_free_run(model, 40, n0)


def test_cost_model_picks_the_form():
    # fused chains (fewer calls, more multiply-adds) for narrow models and
    # small batches, per-block chains when the arithmetic dominates
    model = build(_small(channels=(16, 16, 16)), dtype=torch.float32)

    def forms(batch):
        u = torch.zeros(batch, 1, 8)
        sim = StreamingSimulator(model, u)
        chains = [c for c in sim._bu if c.queued] + sim._td  # a choice to make
        return {c.fused for c in chains}

    assert forms(1) == {True}
    assert forms(4096) == {False}


def test_bad_arguments():
    model = build(_small())
    _, u = random_data(model, 1, 10)
    with pytest.raises(ValueError, match="latent"):
        simulate(model, 10, u, latent="posterior")
    with pytest.raises(ValueError, match="output"):
        simulate(model, 10, u, output="median")
    with pytest.raises(ValueError, match="u is required"):
        simulate(model, 10)
    with pytest.raises(ValueError, match="y_init"):
        simulate(model, 10, u, y_init=torch.zeros(1, 1, 11, dtype=DT))


def test_step_loop_runs_on_one_thread_and_restores_the_setting(monkeypatch):
    """The CPU step loop uses one intra-op thread; the caller's count returns."""
    model = build(_small())
    _, u = random_data(model, 1, 20)
    seen = []
    original = StreamingSimulator._params

    def spy(self):
        seen.append(torch.get_num_threads())
        return original(self)

    monkeypatch.setattr(StreamingSimulator, "_params", spy)
    torch.set_num_threads(2)
    try:
        ys, _ = simulate(model, 20, u)
        assert set(seen) == {1}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
    ref, _ = simulate(model, 20, u)
    assert torch.equal(ys, ref)
