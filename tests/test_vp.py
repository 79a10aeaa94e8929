"""VP diffusion (the continuous VP-SDE, Diffusion-QL's discrete chain) with exact noise predictors of a Gaussian.

For x_0 ~ N(mu, cov) and x = a x_0 + s z (a^2 + s^2 = 1), the exact predictor is
E[z | x] = s (a^2 cov + s^2 I)^-1 (x - a mu). With it both samplers are affine maps of Gaussian noise, so
their output moments have a closed form (propagated per eigenvector of cov below); samples must match it.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from dyaug.diffusion.vp import VPSDE, DiscreteVPSchedule

tiny_tensors = True  # see conftest.py

N_SAMPLES = 10_000
MU = torch.tensor([0.3, -0.2])
COV = torch.tensor([[0.2, 0.05], [0.05, 0.1]])


class GaussianNoisePredictor(nn.Module):
    """Exact eps for N(mu, cov) given the signal scale alpha(noise_level) (and s = sqrt(1 - alpha^2))."""

    def __init__(self, alpha_of_level) -> None:
        super().__init__()
        lam, q = torch.linalg.eigh(COV)
        self.register_buffer("lam", lam)
        self.register_buffer("q", q)
        self.alpha_of_level = alpha_of_level
        self.levels: list[Tensor] = []

    def forward(self, x: Tensor, noise_level: Tensor, cond: Tensor | None = None) -> Tensor:
        self.levels.append(noise_level.clone())
        a = self.alpha_of_level(noise_level)[:, None]
        s = (1 - a.square()).sqrt()
        return s * (((x - a * MU) @ self.q) / (a.square() * self.lam + s.square())) @ self.q.T


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _eigen_moments(x: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and variance of the samples along the eigenvectors of COV."""
    y = x @ torch.linalg.eigh(COV)[1]
    return y.mean(0), y.var(0)


def _affine_chain_moments(steps: list[tuple[float, float, float]]) -> tuple[float, float]:
    """Mean and variance after y <- gain y + offset + sqrt(noise_var) z, starting from y ~ N(0, 1)."""
    mean, var = 0.0, 1.0
    for gain, offset, noise_var in steps:
        mean, var = gain * mean + offset, gain**2 * var + noise_var
    return mean, var


# ------------------------------------------------------------------------------------------------- VP-SDE
@pytest.mark.parametrize(
    ("t", "alpha", "sigma", "decimals"), [(0.02, 0.997, 0.077, 3), (0.5, 0.28, 0.96, 2), (0.98, 0.008, 1.0, 3)]
)
def test_vpsde_marginal_scales_match_the_spec_table(t: float, alpha: float, sigma: float, decimals: int) -> None:
    sde, tt = VPSDE(), torch.tensor(t, dtype=torch.float64)
    assert sde.log_alpha(tt).item() == pytest.approx(-0.25 * t**2 * 19.9 - 0.05 * t, rel=1e-12)
    assert round(sde.alpha(tt).item(), decimals) == alpha  # the table is rounded to these decimals
    assert round(sde.sigma(tt).item(), decimals) == sigma
    assert (sde.alpha(tt) ** 2 + sde.sigma(tt) ** 2).item() == pytest.approx(1.0, abs=1e-12)


def test_vpsde_loss_is_the_summed_squared_noise_error() -> None:
    sde, net = VPSDE(), GaussianNoisePredictor(VPSDE().alpha)
    x0 = MU + torch.randn(256, 2, generator=_gen(1)) @ torch.linalg.cholesky(COV).T
    g = _gen(2)
    t = 1e-3 + (1 - 1e-3) * torch.rand(256, generator=g)  # same draw order as VPSDE.loss
    z = torch.randn(x0.shape, generator=g)
    x_t = sde.alpha(t)[:, None] * x0 + sde.sigma(t)[:, None] * z
    expected = (net(x_t, t) - z).square().sum(1).mean()
    assert sde.loss(net, x0, generator=_gen(2)).item() == pytest.approx(expected.item(), rel=1e-5)
    wrong = GaussianNoisePredictor(lambda level: sde.alpha(level) * 0.5)
    assert sde.loss(net, x0, generator=_gen(2)).item() < 0.9 * sde.loss(wrong, x0, generator=_gen(2)).item()


def _vpsde_closed_form(sde: VPSDE, lam: float, m: float, n_steps: int) -> tuple[float, float]:
    steps = []
    for t, a, b in sde.step_coefficients(n_steps):
        alpha = sde.alpha(torch.tensor(t, dtype=torch.float64)).item()
        sigma = math.sqrt(1 - alpha**2)
        denom = alpha**2 * lam + sigma**2
        steps.append((a - b * sigma / denom, b * sigma * alpha * m / denom, 0.0))
    return _affine_chain_moments(steps)


@pytest.mark.parametrize("n_steps", [8, 200])
def test_vpsde_sampler_matches_its_closed_form(n_steps: int) -> None:
    sde = VPSDE()
    x = sde.sample(GaussianNoisePredictor(sde.alpha), (N_SAMPLES, 2), n_steps=n_steps, generator=_gen())
    lam, q = torch.linalg.eigh(COV)
    m = MU @ q
    expected = torch.tensor([_vpsde_closed_form(sde, lam[i].item(), m[i].item(), n_steps) for i in range(2)])
    mean, var = _eigen_moments(x)
    # s.e. at 10k: mean <= 0.0045, variance 1.4% relative
    torch.testing.assert_close(mean, expected[:, 0].float(), rtol=0, atol=0.015)
    torch.testing.assert_close(var, expected[:, 1].float(), rtol=0.05, atol=0)
    if n_steps == 200:  # first-order solver, error ~ 1/n: 200 steps land on the marginal at t_min ~ N(mu, cov)
        torch.testing.assert_close(x.mean(0), MU, rtol=0, atol=0.015)
        torch.testing.assert_close(torch.cov(x.T), COV, rtol=0, atol=0.01)


def test_vpsde_passes_t_as_the_noise_level() -> None:
    sde = VPSDE()
    net = GaussianNoisePredictor(sde.alpha)
    sde.sample(net, (3, 2), n_steps=4, t_min=0.2, generator=_gen())
    expected = torch.tensor([1.0, 0.8, 0.6, 0.4])[:, None].expand(4, 3)
    torch.testing.assert_close(torch.stack(net.levels), expected, rtol=0, atol=1e-7)


# ------------------------------------------------------------------------------------------ discrete chain
def test_discrete_schedule_matches_the_diffusion_ql_table() -> None:
    schedule = DiscreteVPSchedule()
    torch.testing.assert_close(
        schedule.betas,
        torch.tensor([0.196, 0.459, 0.636, 0.755, 0.835], dtype=torch.float64),
        rtol=0,
        atol=5e-4,
    )
    torch.testing.assert_close(
        schedule.alphas_cumprod,
        torch.tensor([0.804, 0.435, 0.159, 0.039, 0.006], dtype=torch.float64),
        rtol=0,
        atol=5e-4,
    )


def test_discrete_posterior_is_consistent() -> None:
    s = DiscreteVPSchedule()
    abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), s.alphas_cumprod[:-1]])
    # a noise-free x_k = sqrt(abar_k) x0 has posterior mean sqrt(abar_{k-1}) x0
    torch.testing.assert_close(
        s.posterior_mean_coef_x0 + s.posterior_mean_coef_xt * s.alphas_cumprod.sqrt(), abar_prev.sqrt()
    )
    assert s.posterior_variance[0].item() == 0.0
    torch.testing.assert_close(s.posterior_variance, s.betas * (1 - abar_prev) / (1 - s.alphas_cumprod))


def _discrete_alpha(schedule: DiscreteVPSchedule):
    return lambda level: schedule.alphas_cumprod.float()[level.long()].sqrt()


def test_discrete_loss_is_the_mean_squared_noise_error() -> None:
    schedule = DiscreteVPSchedule()
    net = GaussianNoisePredictor(_discrete_alpha(schedule))
    x0 = MU + torch.randn(256, 2, generator=_gen(1)) @ torch.linalg.cholesky(COV).T
    g = _gen(2)
    k = torch.randint(5, (256,), generator=g)  # same draw order as DiscreteVPSchedule.loss
    z = torch.randn(x0.shape, generator=g)
    abar = schedule.alphas_cumprod.float()[k][:, None]
    expected = (net(abar.sqrt() * x0 + (1 - abar).sqrt() * z, k.float()) - z).square().mean()
    assert schedule.loss(net, x0, generator=_gen(2)).item() == pytest.approx(expected.item(), rel=1e-5)


def _discrete_closed_form(schedule: DiscreteVPSchedule, lam: float, m: float) -> tuple[float, float]:
    steps = []
    for k in reversed(range(schedule.n_steps)):
        ab = schedule.alphas_cumprod[k].item()
        eps_gain = math.sqrt(1 - ab) / (ab * lam + 1 - ab)  # eps = eps_gain (y - sqrt(ab) m)
        x0_gain = 1 / math.sqrt(ab) - math.sqrt(1 / ab - 1) * eps_gain
        x0_offset = math.sqrt(1 / ab - 1) * eps_gain * math.sqrt(ab) * m
        c_x0, c_xt = schedule.posterior_mean_coef_x0[k].item(), schedule.posterior_mean_coef_xt[k].item()
        steps.append((c_x0 * x0_gain + c_xt, c_x0 * x0_offset, schedule.posterior_variance[k].item()))
    return _affine_chain_moments(steps)


def test_discrete_sampler_matches_its_closed_form() -> None:
    schedule = DiscreteVPSchedule()
    x = schedule.sample(GaussianNoisePredictor(_discrete_alpha(schedule)), (N_SAMPLES, 2), clip=None, generator=_gen())
    lam, q = torch.linalg.eigh(COV)
    m = MU @ q
    expected = torch.tensor([_discrete_closed_form(schedule, lam[i].item(), m[i].item()) for i in range(2)])
    mean, var = _eigen_moments(x)
    torch.testing.assert_close(mean, expected[:, 0].float(), rtol=0, atol=0.015)
    torch.testing.assert_close(var, expected[:, 1].float(), rtol=0.05, atol=0)
    # five steps are only approximate: the mean is right but the variance collapses, since the last step
    # returns E[x_0 | x_1] without noise, of variance lam - lam (1 - abar_1) / (abar_1 lam + 1 - abar_1)
    torch.testing.assert_close(x.mean(0), MU, rtol=0, atol=0.015)
    assert (var < 0.5 * lam).all()


def test_discrete_sampler_passes_step_indices_and_clips() -> None:
    schedule = DiscreteVPSchedule()
    net = GaussianNoisePredictor(_discrete_alpha(schedule))

    def biased(x: Tensor, level: Tensor, cond: Tensor | None = None) -> Tensor:
        return torch.full_like(x, -3.0)  # pushes x0_hat far above 1

    clipped = schedule.sample(biased, (256, 2), generator=_gen(), device="cpu")
    unclipped = schedule.sample(biased, (256, 2), clip=None, generator=_gen(), device="cpu")
    assert clipped.abs().max().item() == 1.0 and unclipped.abs().max().item() > 2.0
    schedule.sample(net, (3, 2), generator=_gen())
    assert [level.tolist() for level in net.levels] == [[float(k)] * 3 for k in (4, 3, 2, 1, 0)]


def test_discrete_chain_is_differentiable() -> None:
    schedule = DiscreteVPSchedule()
    net = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2))
    eps_net = lambda x, level, cond=None: net(x)  # noqa: E731
    x = schedule.sample(eps_net, (64, 2), generator=_gen(), device="cpu")
    x.square().sum().backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum().item() for g in grads) > 0


def test_same_seed_gives_bitwise_identical_samples() -> None:
    sde, schedule = VPSDE(), DiscreteVPSchedule()

    def continuous(seed: int) -> Tensor:
        return sde.sample(GaussianNoisePredictor(sde.alpha), (64, 2), n_steps=10, generator=_gen(seed))

    def discrete(seed: int) -> Tensor:
        return schedule.sample(GaussianNoisePredictor(_discrete_alpha(schedule)), (64, 2), generator=_gen(seed))

    assert torch.equal(continuous(1), continuous(1)) and not torch.equal(continuous(1), continuous(2))
    assert torch.equal(discrete(1), discrete(1)) and not torch.equal(discrete(1), discrete(2))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: VPSDE(beta0=2.0, beta1=1.0), "beta0"),
        (lambda: VPSDE().step_coefficients(0), "n_steps"),
        (lambda: VPSDE().step_coefficients(5, t_min=1.0), "t_min"),
        (lambda: VPSDE().loss(GaussianNoisePredictor(VPSDE().alpha), torch.zeros(4)), "feature"),
        (lambda: VPSDE().sample(lambda x, t, c: x[:, :1], (4, 2), device="cpu"), "shaped like"),
        (lambda: VPSDE().sample(lambda x, t, c: x, (4, 2)), "device"),
        (lambda: DiscreteVPSchedule(n_steps=0), "n_steps"),
        (lambda: DiscreteVPSchedule(beta_min=0.0), "beta_min"),
        (lambda: DiscreteVPSchedule().sample(lambda x, t, c: x, (4, 2), clip=0.0, device="cpu"), "clip"),
        (lambda: DiscreteVPSchedule().sample(lambda x, t, c: x, (4, -2), device="cpu"), "shape"),
    ],
)
def test_bad_inputs_raise_value_errors(make, match) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_vp_samplers_take_the_same_condition_as_edm_and_let_gradients_through() -> None:
    from dyaug.diffusion.conditioning import Condition
    from dyaug.diffusion.vp import VPSDE, DiscreteVPSchedule, vp_ode

    class Zero(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x, t, cond=None):
            return self.w * x

    condition = Condition(torch.tensor([True, False]), torch.tensor([0.75, 0.0]))
    for sample in (
        lambda: VPSDE().sample(
            Zero(), (64, 2), condition=condition, n_steps=8, generator=torch.Generator().manual_seed(0)
        ),
        lambda: DiscreteVPSchedule().sample(
            Zero(), (64, 2), condition=condition, generator=torch.Generator().manual_seed(0)
        ),
    ):
        x = sample()
        assert (x[:, 0] == 0.75).all() and x[:, 1].std() > 0.1
    net = Zero()
    x0 = torch.randn(8, 2, requires_grad=True)
    out = vp_ode(lambda y, t: net(y, t), x0, VPSDE().step_coefficients(4, 1e-3))
    out.sum().backward()
    assert x0.grad is not None and net.w.grad is not None
