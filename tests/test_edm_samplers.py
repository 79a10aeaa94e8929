"""EDM schedule, denoiser, loss and Heun sampler, checked against exact denoisers of known distributions.

The oracles are exact posterior means D(x; sigma) = E[x_0 | x_0 + sigma n = x]. They enter the sampler through
:class:`EDMDenoiser` by inverting the preconditioning (``ExactNetwork``), so every sampling test also runs the
preconditioning code. Sample sizes are 10k; tolerances are stated next to each assertion.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from dyaug.diffusion.conditioning import Condition
from dyaug.diffusion.edm import EDMDenoiser, EDMSchedule, edm_loss
from dyaug.diffusion.samplers import HeunSampler

tiny_tensors = True  # see conftest.py

N_SAMPLES = 10_000  # 10k x 3 elements stays under torch's 32k-element parallel grain
MU = torch.tensor([0.5, -1.0, 0.25])
COV = torch.tensor([[1.0, 0.6, -0.3], [0.6, 1.0, -0.02], [-0.3, -0.02, 0.38]])  # non-diagonal, SPD


def _variance(sigma: Tensor | float, x: Tensor) -> Tensor:
    """sigma^2 shaped to broadcast against a (B, d) tensor."""
    s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    return s.reshape(-1, 1).square() if s.ndim else s.square()


class GaussianDenoiser(nn.Module):
    """Exact D for N(mu, cov): mu + cov (cov + sigma^2 I)^-1 (x - mu), via cov = Q diag(lam) Q^T."""

    def __init__(self, mu: Tensor, cov: Tensor) -> None:
        super().__init__()
        lam, q = torch.linalg.eigh(cov)
        self.register_buffer("mu", mu)
        self.register_buffer("lam", lam)
        self.register_buffer("q", q)

    def forward(self, x: Tensor, sigma: Tensor | float, cond: Tensor | None = None) -> Tensor:
        shrink = self.lam / (self.lam + _variance(sigma, x))
        return self.mu + ((x - self.mu) @ self.q * shrink) @ self.q.T


class MixtureDenoiser(nn.Module):
    """Exact D for sum_k w_k N(m_k, s^2 I): sum_k r_k(x) (m_k + s^2/(s^2 + sigma^2) (x - m_k)),
    with responsibilities r_k proportional to w_k N(x; m_k, (s^2 + sigma^2) I)."""

    def __init__(self, weights: Tensor, means: Tensor, std: float) -> None:
        super().__init__()
        self.register_buffer("log_w", weights.log())
        self.register_buffer("means", means)
        self.std = std

    def forward(self, x: Tensor, sigma: Tensor | float, cond: Tensor | None = None) -> Tensor:
        total = self.std**2 + _variance(sigma, x)  # scalar or (B, 1)
        r = torch.softmax(self.log_w - torch.cdist(x, self.means).square() / (2 * total), dim=-1)
        shrink = self.std**2 / total
        return shrink * x + (1 - shrink) * r @ self.means  # = sum_k r_k (m_k + shrink (x - m_k))


class GivenAwareDenoiser(nn.Module):
    """Exact D of a denoiser trained with entry 0 clean in its input (``edm_loss(given=...)``):
    D_0 = x_0 and D_rest = exact Gaussian denoiser of N(mu_rest|x_0, cov_rest|x_0) at x_rest."""

    def __init__(self, mu: Tensor, cov: Tensor) -> None:
        super().__init__()
        self.gain = cov[1:, 0] / cov[0, 0]
        self.mu = mu
        self.rest = GaussianDenoiser(mu[1:], cov[1:, 1:] - torch.outer(cov[1:, 0], cov[0, 1:]) / cov[0, 0])

    def forward(self, x: Tensor, sigma: Tensor | float, cond: Tensor | None = None) -> Tensor:
        shift = (x[:, :1] - self.mu[0]) * self.gain  # conditional mean offset
        return torch.cat([x[:, :1], self.rest(x[:, 1:] - shift, sigma) + shift], dim=1)


class ExactNetwork(nn.Module):
    """The network F of the seam that makes EDMDenoiser equal ``exact``:
    F(c_in x, c_noise) = (D(x; sigma) - c_skip x) / c_out with sigma = exp(4 c_noise)."""

    def __init__(self, exact: nn.Module, schedule: EDMSchedule) -> None:
        super().__init__()
        self.exact, self.schedule = exact, schedule

    def forward(self, x_in: Tensor, c_noise: Tensor, cond: Tensor | None = None) -> Tensor:
        sigma = (4 * c_noise).exp()
        c_skip, c_out, c_in, _ = (c[:, None] for c in self.schedule.preconditioning(sigma))
        x = x_in / c_in
        return (self.exact(x, sigma) - c_skip * x) / c_out


def _edm(exact: nn.Module, schedule: EDMSchedule | None = None) -> EDMDenoiser:
    schedule = schedule or EDMSchedule()
    return EDMDenoiser(ExactNetwork(exact, schedule), schedule)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------------------- schedule
def test_sigmas_follow_the_karras_formula() -> None:
    schedule = EDMSchedule()
    sigmas = schedule.sigmas(5)
    i = np.arange(5)
    expected = (80 ** (1 / 7) + i / 4 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    assert all(type(s) is float for s in sigmas)
    np.testing.assert_allclose(sigmas[:-1], expected, rtol=1e-12)
    assert sigmas[0] == pytest.approx(80.0, rel=1e-12) and sigmas[-2] == pytest.approx(0.002, rel=1e-9)
    assert sigmas[-1] == 0.0 and len(EDMSchedule().sigmas(34)) == 35
    assert schedule.sigmas(1) == [80.0, 0.0]


@pytest.mark.parametrize("sigma", [0.002, 0.5, 1.0, 80.0])
def test_preconditioning_constants_match_table_1(sigma: float) -> None:
    sd = 0.5
    c_skip, c_out, c_in, c_noise = EDMSchedule.dydiff().preconditioning(torch.tensor([sigma], dtype=torch.float64))
    assert c_skip.item() == pytest.approx(sd**2 / (sigma**2 + sd**2), rel=1e-12)
    assert c_out.item() == pytest.approx(sigma * sd / math.sqrt(sigma**2 + sd**2), rel=1e-12)
    assert c_in.item() == pytest.approx(1 / math.sqrt(sigma**2 + sd**2), rel=1e-12)
    assert c_noise.item() == pytest.approx(math.log(sigma) / 4, rel=1e-12)
    weight = EDMSchedule.dydiff().loss_weight(torch.tensor(sigma, dtype=torch.float64)).item()
    assert weight == pytest.approx((sigma**2 + sd**2) / (sigma * sd) ** 2, rel=1e-12)


def test_training_sigmas_are_lognormal() -> None:
    log_sigma = EDMSchedule().training_sigmas(N_SAMPLES, device="cpu", generator=_gen()).log()
    # standard errors: 1.2/sqrt(10k) = 0.012 for the mean, 0.0085 for the std
    assert log_sigma.mean().item() == pytest.approx(-1.2, abs=0.03)
    assert log_sigma.std().item() == pytest.approx(1.2, abs=0.03)


def test_presets_and_churn_band() -> None:
    dydiff, synther = HeunSampler.dydiff(), HeunSampler.synther()
    assert (dydiff.network_evaluations, synther.network_evaluations) == (67, 255)
    assert (EDMSchedule.dydiff().sigma_data, EDMSchedule.synther().sigma_data) == (0.5, 1.0)
    gammas = dydiff.churn_factors(EDMSchedule.dydiff().sigmas(34))
    assert [i for i, g in enumerate(gammas) if g > 0] == list(range(3, 23))  # sigma_i in [0.37, 52.24]
    assert max(gammas) == pytest.approx(math.sqrt(2) - 1)
    assert HeunSampler(n_steps=10, churn=2.0).churn_factors(EDMSchedule().sigmas(10)) == [0.2] * 10


# ----------------------------------------------------------------------------------------------- denoiser
def test_denoiser_inverts_to_the_exact_posterior_mean_for_every_sigma_form() -> None:
    exact = GaussianDenoiser(MU, COV)
    x = torch.randn(6, 3, generator=_gen())
    sigma = torch.tensor([0.002, 0.1, 1.0, 3.0, 20.0, 80.0])
    denoiser = _edm(exact)
    torch.testing.assert_close(denoiser(x, sigma), exact(x, sigma), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(denoiser(x, 0.7), exact(x, 0.7), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(denoiser(x, torch.tensor(0.7)), exact(x, 0.7), rtol=1e-4, atol=1e-5)


def test_bf16_network_keeps_an_fp32_state() -> None:
    net = nn.Linear(3, 3)
    x = torch.randn(8, 3, generator=_gen())
    wrapped = lambda precision: EDMDenoiser(ProbeNetwork(net), EDMSchedule(), precision)(x, 2.0)  # noqa: E731
    out_fp32, out_bf16 = wrapped("fp32"), wrapped("bf16")
    assert out_bf16.dtype == torch.float32
    assert 0 < (out_bf16 - out_fp32).abs().max().item() < 0.05  # bf16 has 8 mantissa bits


class ProbeNetwork(nn.Module):
    """Records every input it sees; returns ``inner(x)`` (or zeros)."""

    def __init__(self, inner: nn.Module | None = None) -> None:
        super().__init__()
        self.inner = inner
        self.register_buffer("anchor", torch.zeros(()))
        self.inputs: list[Tensor] = []
        self.levels: list[Tensor] = []
        self.conds: list[Tensor | None] = []

    def forward(self, x: Tensor, noise_level: Tensor, cond: Tensor | None = None) -> Tensor:
        self.inputs.append(x.clone())
        self.levels.append(noise_level.clone())
        self.conds.append(cond)
        return self.inner(x) if self.inner is not None else torch.zeros_like(x)


# --------------------------------------------------------------------------------------------------- loss
def test_edm_loss_is_the_weighted_mean_squared_error() -> None:
    schedule = EDMSchedule.dydiff()
    exact = GaussianDenoiser(MU, COV)
    denoiser = _edm(exact, schedule)
    y = MU + torch.randn(64, 3, generator=_gen(1)) @ torch.linalg.cholesky(COV).T
    g = _gen(2)
    sigma = schedule.training_sigmas(64, device="cpu", generator=g)  # same draw order as edm_loss
    x = y + sigma[:, None] * torch.randn(y.shape, generator=g)
    expected = (schedule.loss_weight(sigma) * (exact(x, sigma) - y).square().mean(1)).mean()
    loss = edm_loss(denoiser, y, generator=_gen(2))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)

    mask = torch.tensor([True, False, True])
    expected_masked = (schedule.loss_weight(sigma) * (exact(x, sigma) - y)[:, mask].square().mean(1)).mean()
    loss_masked = edm_loss(denoiser, y, loss_mask=mask, generator=_gen(2))
    assert loss_masked.item() == pytest.approx(expected_masked.item(), rel=1e-4)


def test_edm_loss_prefers_the_exact_denoiser() -> None:
    y = MU + torch.randn(4096, 3, generator=_gen(1)) @ torch.linalg.cholesky(COV).T
    exact = edm_loss(_edm(GaussianDenoiser(MU, COV)), y, generator=_gen(2))
    wrong_mean = edm_loss(_edm(GaussianDenoiser(MU + 0.5, COV)), y, generator=_gen(2))
    wrong_cov = edm_loss(_edm(GaussianDenoiser(MU, torch.eye(3) * 0.2)), y, generator=_gen(2))
    assert exact.item() < 0.9 * min(wrong_mean.item(), wrong_cov.item())


@pytest.mark.parametrize("clean_input", [False, True])
def test_given_entries_are_clean_in_the_network_input(clean_input: bool) -> None:
    probe = ProbeNetwork()
    schedule = EDMSchedule.dydiff()
    y = torch.randn(256, 4, 3, generator=_gen(1))
    given = torch.zeros(1, 4, 3, dtype=torch.bool)
    given[:, 0, :2] = True  # first state
    given[:, :, 2] = True  # every action
    denoiser = EDMDenoiser(probe, schedule, clean_input=given if clean_input else None)
    edm_loss(denoiser, y, given=given, generator=_gen(2))
    (x_in,), (c_noise,) = probe.inputs, probe.levels
    sigma = (4 * c_noise).exp()
    assert sigma.max() > 2.0  # high noise levels, where c_in(σ) y and y / σ_data differ at least 4-fold
    c_in = schedule.preconditioning(sigma)[2][:, None, None]
    given_full = given.expand_as(y)
    # clean_input: y / σ_data at every σ (the scale of clean data); otherwise c_in(σ) y like every entry
    expected = y / schedule.sigma_data if clean_input else c_in * y
    torch.testing.assert_close(x_in[given_full], expected[given_full], rtol=1e-5, atol=1e-6)
    assert ((x_in - c_in * y)[~given_full].abs() > 1e-4).float().mean() > 0.99  # the rest is noisy, c_in-scaled
    noisy = x_in / c_in  # the noisy entries are still c_in(σ) (y + σ n): dividing recovers y + σ n, far from y
    assert ((noisy - y)[~given_full].abs() > 1e-3).float().mean() > 0.99


def test_clean_input_must_be_a_bool_mask() -> None:
    with pytest.raises(TypeError, match="clean_input must be a bool tensor"):
        EDMDenoiser(ProbeNetwork(), EDMSchedule(), clean_input=torch.ones(3))


# ------------------------------------------------------------------------------------------------ sampler
@pytest.mark.parametrize("sampler", [HeunSampler(n_steps=64), HeunSampler(n_steps=128, churn=128.0)])
def test_sampler_reproduces_a_correlated_gaussian(sampler: HeunSampler) -> None:
    x = sampler.sample(_edm(GaussianDenoiser(MU, COV)), EDMSchedule(), (N_SAMPLES, 3), generator=_gen())
    # standard errors at 10k: <= 0.01 for the mean, <= 0.014 for a covariance entry; the discretisation
    # bias at these step counts is < 0.02 (see the closed-form test below)
    torch.testing.assert_close(x.mean(0), MU, rtol=0, atol=0.03)
    torch.testing.assert_close(torch.cov(x.T), COV, rtol=0, atol=0.05)


def _closed_form_variance(sampler: HeunSampler, schedule: EDMSchedule, lam: float) -> float:
    """Output variance of the sampler along an eigenvector of variance lam.

    With D(y) = k(sigma) y for y = x - mu, k = lam/(lam + sigma^2), every step is linear:
    churn adds variance (sigma_hat^2 - sigma^2) s_noise^2 and the Euler/Heun update multiplies y by a factor.
    """
    sigmas = schedule.sigmas(sampler.n_steps)
    var = sigmas[0] ** 2
    for sigma, sigma_next, gamma in zip(sigmas[:-1], sigmas[1:], sampler.churn_factors(sigmas), strict=True):
        sigma_hat = sigma * (1 + gamma)
        var += (sigma_hat**2 - sigma**2) * sampler.s_noise**2
        slope_hat = (1 - lam / (lam + sigma_hat**2)) / sigma_hat
        factor = euler = 1 + (sigma_next - sigma_hat) * slope_hat
        if sigma_next > 0:
            slope_next = (1 - lam / (lam + sigma_next**2)) / sigma_next * euler
            factor = 1 + (sigma_next - sigma_hat) * (slope_hat + slope_next) / 2
        var *= factor**2
    return var


@pytest.mark.parametrize("preset", ["dydiff", "synther"])
def test_preset_variance_matches_its_discretisation_in_closed_form(preset: str) -> None:
    sampler, schedule = getattr(HeunSampler, preset)(), getattr(EDMSchedule, preset)()
    exact = GaussianDenoiser(MU, COV)
    x = sampler.sample(_edm(exact, schedule), schedule, (N_SAMPLES, 3), generator=_gen())
    variances = ((x - MU) @ exact.q).var(0)
    expected = torch.tensor([_closed_form_variance(sampler, schedule, lam) for lam in exact.lam.tolist()])
    # relative standard error of a variance at 10k samples: sqrt(2/10k) = 1.4%; allow 5%
    torch.testing.assert_close(variances, expected, rtol=0.05, atol=0)


@pytest.mark.parametrize("sampler", [HeunSampler(n_steps=64), HeunSampler.dydiff()])
def test_sampler_reproduces_a_gaussian_mixture(sampler: HeunSampler) -> None:
    weights, std = torch.tensor([0.5, 0.3, 0.2]), 0.3
    means = torch.tensor([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]])
    x = sampler.sample(MixtureDenoiser(weights, means, std), EDMSchedule(), (N_SAMPLES, 2), generator=_gen())
    mode = torch.cdist(x, means).argmin(1)
    for k in range(3):
        members = x[mode == k]
        # standard errors at 10k: weight <= 0.005, mode mean <= 0.007, mode std <= 0.005
        assert len(members) / N_SAMPLES == pytest.approx(weights[k].item(), abs=0.015)
        torch.testing.assert_close(members.mean(0), means[k], rtol=0, atol=0.03)
        torch.testing.assert_close(members.std(0), torch.full((2,), std), rtol=0, atol=0.03)


def test_condition_is_exact_and_the_rest_follows_the_conditional_gaussian() -> None:
    value = 1.5
    condition = Condition(mask=torch.tensor([True, False, False]), values=torch.tensor([value, 0.0, 0.0]))
    x = HeunSampler.dydiff().sample(
        _edm(GivenAwareDenoiser(MU, COV)),
        EDMSchedule(),
        (N_SAMPLES, 3),
        condition=condition,
        generator=_gen(),
    )
    assert torch.equal(x[:, 0], torch.full((N_SAMPLES,), value))
    cond_mean = MU[1:] + COV[1:, 0] / COV[0, 0] * (value - MU[0])
    cond_cov = COV[1:, 1:] - torch.outer(COV[1:, 0], COV[0, 1:]) / COV[0, 0]
    torch.testing.assert_close(x[:, 1:].mean(0), cond_mean, rtol=0, atol=0.03)
    # the preset's churn inflates variances by up to ~10%: compare with the closed form of its discretisation
    lam, q = torch.linalg.eigh(cond_cov)
    sampled = torch.tensor([_closed_form_variance(HeunSampler.dydiff(), EDMSchedule(), v) for v in lam.tolist()])
    torch.testing.assert_close(torch.cov(x[:, 1:].T), q @ torch.diag(sampled) @ q.T, rtol=0, atol=0.03)


def test_condition_is_applied_after_every_change_of_x() -> None:
    probe = ProbeNetwork()
    mask = torch.zeros(4, 5, 2, dtype=torch.bool)
    mask[:, 0, :] = True
    values = torch.randn(4, 5, 2, generator=_gen(1))
    sampler = HeunSampler(n_steps=6, churn=10.0)  # churn on every step
    schedule = EDMSchedule()
    out = sampler.sample(
        EDMDenoiser(probe, schedule),
        schedule,
        (4, 5, 2),
        cond=values,
        condition=Condition(mask, values),
        generator=_gen(),
    )
    assert len(probe.inputs) == sampler.network_evaluations
    assert all(cond is values for cond in probe.conds)  # the network input `cond` is passed through
    for x_in, c_noise in zip(probe.inputs, probe.levels, strict=True):
        c_in = schedule.preconditioning((4 * c_noise).exp())[2][:, None, None]
        torch.testing.assert_close(x_in[mask], (c_in * values)[mask], rtol=1e-5, atol=1e-7)
    assert torch.equal(out[mask], values[mask])


def test_same_seed_gives_bitwise_identical_samples() -> None:
    denoiser, schedule = _edm(GaussianDenoiser(MU, COV)), EDMSchedule()
    draw = lambda seed: HeunSampler.synther().sample(denoiser, schedule, (256, 3), generator=_gen(seed))  # noqa: E731
    assert torch.equal(draw(3), draw(3))
    assert not torch.equal(draw(3), draw(4))


def test_x_init_replaces_the_start_noise() -> None:
    denoiser, schedule, sampler = _edm(GaussianDenoiser(MU, COV)), EDMSchedule(), HeunSampler(n_steps=8)
    x_init = schedule.sigmas(8)[0] * torch.randn(32, 3, generator=_gen(5))
    from_init = sampler.sample(denoiser, schedule, (32, 3), x_init=x_init)
    from_seed = sampler.sample(denoiser, schedule, (32, 3), generator=_gen(5))
    assert torch.equal(from_init, from_seed)


# ------------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: HeunSampler(n_steps=0), ValueError, "n_steps"),
        (lambda: HeunSampler(churn=-1.0), ValueError, "churn"),
        (lambda: HeunSampler(s_tmin=2.0, s_tmax=1.0), ValueError, "s_tmin"),
        (lambda: HeunSampler(s_noise=0.0), ValueError, "s_noise"),
        (lambda: EDMSchedule().sigmas(0), ValueError, "n_steps"),
        (lambda: EDMSchedule(sigma_min=1.0, sigma_max=0.5), ValueError, "sigma_max"),
        (lambda: EDMSchedule(sigma_data=0.0), ValueError, "sigma_data"),
        (lambda: EDMDenoiser(ProbeNetwork(), EDMSchedule(), "fp16"), ValueError, "precision"),
        (
            lambda: EDMDenoiser(ProbeNetwork(), EDMSchedule())(torch.zeros(2, 3), torch.ones(3)),
            ValueError,
            "sigma",
        ),
        (lambda: EDMDenoiser(ProbeNetwork(), EDMSchedule())(torch.zeros(2, 3), -1.0), ValueError, "sigma"),
        (
            lambda: EDMDenoiser(ProbeNetwork(), EDMSchedule())(torch.zeros(2, 3, dtype=torch.bfloat16), 1.0),
            TypeError,
            "fp32",
        ),
        (lambda: EDMDenoiser(_Wrong(), EDMSchedule())(torch.zeros(2, 3), 1.0), ValueError, "shaped like"),
        (lambda: Condition(torch.ones(3), torch.ones(3)), TypeError, "bool"),
        (lambda: Condition(torch.ones(3, dtype=torch.bool), torch.ones(4)), ValueError, "broadcast"),
        (
            lambda: _sample(condition=Condition(torch.ones(4, dtype=torch.bool), torch.ones(4))),
            ValueError,
            "sample shape",
        ),
        (lambda: _sample(x_init=torch.zeros(2, 2)), ValueError, "x_init"),
        (lambda: _sample(shape=(0, 3)), ValueError, "shape"),
        (lambda: HeunSampler().sample(lambda x, s, c: x, EDMSchedule(), (2, 3)), ValueError, "device"),
        (lambda: edm_loss(EDMDenoiser(ProbeNetwork(), EDMSchedule()), torch.zeros(4)), ValueError, "feature"),
        (
            lambda: edm_loss(_probe_denoiser(), torch.zeros(4, 3), loss_mask=torch.ones(4, 3)),
            TypeError,
            "bool",
        ),
        (
            lambda: edm_loss(_probe_denoiser(), torch.zeros(4, 3), loss_mask=torch.ones(5, 3, dtype=torch.bool)),
            ValueError,
            "loss_mask",
        ),
        (
            lambda: edm_loss(_probe_denoiser(), torch.zeros(4, 3), given=torch.ones(4, 2, dtype=torch.bool)),
            ValueError,
            "broadcast",
        ),
    ],
)
def test_bad_inputs_raise_named_errors(make, error, match) -> None:
    with pytest.raises(error, match=match):
        make()


class _Wrong(nn.Module):
    def forward(self, x: Tensor, noise_level: Tensor, cond: Tensor | None = None) -> Tensor:
        return x[:, :1]


def _probe_denoiser() -> EDMDenoiser:
    return EDMDenoiser(ProbeNetwork(), EDMSchedule())


def _sample(shape=(2, 3), **kwargs) -> Tensor:
    return HeunSampler(n_steps=2).sample(_probe_denoiser(), EDMSchedule(), shape, **kwargs)


# ------------------------------------------------------------------------- DPM-Solver++(2M) and the functions
def test_dpmpp_2m_follows_the_probability_flow_of_a_gaussian_in_closed_form() -> None:
    """For N(mu, cov) the probability-flow ODE is linear: x_0 = mu + Q diag(sqrt(lam/(lam + sigma_max^2))) Q^T
    (x_T - mu). DPM-Solver++(2M) converges to it per sample at second order, ahead of Heun at equal evaluations."""
    from dyaug.diffusion.samplers import DPMSolverSampler, dpmpp_2m, heun

    exact = GaussianDenoiser(MU, COV)
    schedule = EDMSchedule()
    x_t = schedule.sigma_max * torch.randn(2_000, 3, generator=_gen())
    scale = (exact.lam / (exact.lam + schedule.sigma_max**2)).sqrt()
    truth = MU + ((x_t - MU) @ exact.q * scale) @ exact.q.T

    def d(x: Tensor, sigma: float) -> Tensor:
        return exact(x, sigma)

    errors = {n: (dpmpp_2m(d, x_t, schedule.sigmas(n)) - truth).abs().max().item() for n in (24, 48)}
    assert errors[24] < 0.15 and errors[48] < 0.3 * errors[24]  # second order: 4x smaller per doubling
    # Heun at the same number of evaluations (12 steps, 23 evaluations) is several times further off
    assert (heun(d, x_t, schedule.sigmas(12)) - truth).abs().max().item() > 3 * errors[24]
    sampler = DPMSolverSampler(n_steps=48)
    assert sampler.network_evaluations == 48
    x = sampler.sample(_edm(exact), schedule, (N_SAMPLES, 3), generator=_gen())
    torch.testing.assert_close(torch.cov(x.T), COV, rtol=0, atol=0.05)


def test_dpmpp_2m_reproduces_a_gaussian_mixture_and_keeps_the_condition() -> None:
    from dyaug.diffusion.samplers import DPMSolverSampler

    weights, std = torch.tensor([0.5, 0.3, 0.2]), 0.3
    means = torch.tensor([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]])
    x = DPMSolverSampler(n_steps=32).sample(
        MixtureDenoiser(weights, means, std), EDMSchedule(), (N_SAMPLES, 2), generator=_gen()
    )
    mode = torch.cdist(x, means).argmin(1)
    for k in range(3):
        assert (mode == k).float().mean().item() == pytest.approx(weights[k].item(), abs=0.015)
    value = 1.5
    condition = Condition(mask=torch.tensor([True, False, False]), values=torch.tensor([value, 0.0, 0.0]))
    y = DPMSolverSampler(n_steps=32).sample(
        _edm(GivenAwareDenoiser(MU, COV)), EDMSchedule(), (N_SAMPLES, 3), condition=condition, generator=_gen()
    )
    assert (y[:, 0] == value).all()
    mean = MU[1:] + COV[1:, 0] / COV[0, 0] * (value - MU[0])
    torch.testing.assert_close(y[:, 1:].mean(0), mean, rtol=0, atol=0.03)


def test_dpmpp_2m_sde_step_maps_a_point_mass_marginal_onto_the_next_one_exactly() -> None:
    """For data at a point mu, D = mu and the marginal at sigma is N(mu, sigma^2). One SDE step (eta = 1) gives
    x' - mu = (s'/s)^2 (x - mu) + s' sqrt(1 - (s'/s)^2) z: std s' exactly and correlation s'/s with x; the ODE step
    (eta = 0) keeps the correlation at 1. Over a whole schedule the std is s' at every level."""
    from dyaug.diffusion.samplers import dpmpp_2m

    mu = torch.tensor([0.5, -1.0])

    def point(x: Tensor, sigma: float) -> Tensor:
        return mu.expand_as(x)

    x = mu + 1.0 * torch.randn(N_SAMPLES, 2, generator=_gen())
    for eta, correlation in ((1.0, 0.5), (0.0, 1.0)):
        y = dpmpp_2m(point, x, [1.0, 0.5], eta=eta, generator=_gen(1))
        torch.testing.assert_close(y.std(0), torch.full((2,), 0.5), rtol=0.02, atol=0)
        corr = ((x - mu) * (y - mu)).mean(0) / (x.std(0) * y.std(0))
        torch.testing.assert_close(corr, torch.full((2,), correlation), rtol=0, atol=0.02)
    sigmas = EDMSchedule().sigmas(16)[:-1]  # stop at sigma_min: the second-order steps are exact here too
    y = dpmpp_2m(
        point, mu + sigmas[0] * torch.randn(N_SAMPLES, 2, generator=_gen()), sigmas, eta=1.0, generator=_gen(1)
    )
    torch.testing.assert_close(y.std(0), torch.full((2,), sigmas[-1]), rtol=0.03, atol=0)


def test_dpmpp_2m_sde_reproduces_a_gaussian_and_a_mixture_and_keeps_the_condition() -> None:
    from dyaug.diffusion.samplers import SAMPLERS, DPMSolverSampler, DPMSolverSDESampler
    from dyaug.synther.config import resolve_config

    sampler = DPMSolverSDESampler(n_steps=48)
    assert SAMPLERS["dpmpp_2m_sde"] is DPMSolverSDESampler and sampler.eta == 1.0 and sampler.network_evaluations == 48
    assert resolve_config("cpu", {"solver": "dpmpp_2m_sde", "sampler_steps": 48}).sampler() == sampler
    x = sampler.sample(_edm(GaussianDenoiser(MU, COV)), EDMSchedule(), (N_SAMPLES, 3), generator=_gen())
    torch.testing.assert_close(x.mean(0), MU, rtol=0, atol=0.03)
    torch.testing.assert_close(torch.cov(x.T), COV, rtol=0, atol=0.05)
    again = sampler.sample(_edm(GaussianDenoiser(MU, COV)), EDMSchedule(), (N_SAMPLES, 3), generator=_gen())
    assert torch.equal(x, again)  # all noise comes from the generator
    weights, std = torch.tensor([0.5, 0.3, 0.2]), 0.3
    means = torch.tensor([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]])
    y = sampler.sample(MixtureDenoiser(weights, means, std), EDMSchedule(), (N_SAMPLES, 2), generator=_gen())
    mode = torch.cdist(y, means).argmin(1)
    for k in range(3):
        assert (mode == k).float().mean().item() == pytest.approx(weights[k].item(), abs=0.015)
    condition = Condition(mask=torch.tensor([True, False, False]), values=torch.tensor([1.5, 0.0, 0.0]))
    z = sampler.sample(
        _edm(GivenAwareDenoiser(MU, COV)), EDMSchedule(), (N_SAMPLES, 3), condition=condition, generator=_gen()
    )
    assert (z[:, 0] == 1.5).all()
    with pytest.raises(ValueError, match="eta must be finite and >= 0"):
        DPMSolverSampler(n_steps=8, eta=-0.5)


def test_sampler_functions_let_gradients_through_when_asked() -> None:
    """Guidance differentiates through the sampler: the functions make no no-grad decision of their own."""
    from dyaug.diffusion.samplers import dpmpp_2m, heun

    exact = GaussianDenoiser(MU, COV)
    sigmas = EDMSchedule().sigmas(8)
    for solve in (heun, dpmpp_2m):
        x_t = (sigmas[0] * torch.randn(4, 3, generator=_gen())).requires_grad_(True)
        solve(lambda x, sigma: exact(x, sigma), x_t, sigmas).sum().backward()
        assert x_t.grad is not None and torch.isfinite(x_t.grad).all() and x_t.grad.abs().sum() > 0
