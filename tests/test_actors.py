"""The maths of dyaug.actors (no d3rlpy): SRPO's regulariser against a Gaussian behaviour's closed form, the SRPO
actor's fixed point, Diffusion-QL's loss and candidate selection, IQL's expectile, SRPO's phase order."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from dyaug.actors import (
    DeterministicActor,
    DiffusionPolicy,
    SRPOPhases,
    TransitionBatch,
    TwinQ,
    dql_actor_loss,
    dql_critic_loss,
    expectile_loss,
    score_regularizer,
    select_actions,
    srpo_actor_loss,
)
from dyaug.actors.critics import mlp
from dyaug.actors.diffusion_ql import CandidateSampler
from dyaug.actors.srpo import WEIGHTINGS
from dyaug.diffusion.networks import DQLMLP
from dyaug.diffusion.networks.mish import Mish, mish, mish_
from dyaug.diffusion.networks.mlp import CPU_CHUNK_ROWS, MLPInference, layers_forward
from dyaug.diffusion.vp import VPSDE

tiny_tensors = True
SDE = VPSDE()
F64 = torch.float64


class GaussianBehaviorEps(nn.Module):
    """The exact ε of a behaviour N(m, s² I): ε*(x, t) = −σ_t ∇log μ_t(x) = σ_t (x − α_t m) / (α_t² s² + σ_t²)."""

    def __init__(self, mean: Tensor, std: float) -> None:
        super().__init__()
        self.mean, self.std = mean, std

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        alpha, sigma = SDE.alpha(t)[:, None], SDE.sigma(t)[:, None]
        return sigma * (x - alpha * self.mean) / (alpha**2 * self.std**2 + sigma**2)


def expected_regularizer_factor(weighting: str, std: float, t_min: float = 0.02, t_max: float = 0.98) -> float:
    """c with E_{t,z}[g_b] = c (a − m) for N(m, s² I): c = E_{t~U}[ω(t) σ_t α_t / (α_t² s² + σ_t²)]."""
    t = torch.linspace(t_min, t_max, 20_001, dtype=F64)
    alpha, sigma = SDE.alpha(t), SDE.sigma(t)
    integrand = WEIGHTINGS[weighting](alpha, sigma) * sigma * alpha / (alpha**2 * std**2 + sigma**2)
    return float(torch.trapezoid(integrand, t) / (t_max - t_min))


def _batch(n: int = 64, obs_dim: int = 3, act_dim: int = 2, seed: int = 0) -> TransitionBatch:
    g = torch.Generator().manual_seed(seed)
    return TransitionBatch(
        observations=torch.randn(n, obs_dim, generator=g),
        actions=torch.rand(n, act_dim, generator=g) * 2 - 1,
        rewards=torch.randn(n, generator=g),
        next_observations=torch.randn(n, obs_dim, generator=g),
        terminals=(torch.rand(n, generator=g) < 0.1).float(),
        discounts=torch.full((n,), 0.99),
    )


# ---------------------------------------------------------------------------------------------------- SRPO
@pytest.mark.parametrize("weighting", sorted(WEIGHTINGS))
@pytest.mark.parametrize("baseline", [True, False])
def test_score_regularizer_matches_the_gaussian_behaviour_closed_form(weighting: str, baseline: bool) -> None:
    mean, std = torch.tensor([0.2, -0.3], dtype=F64), 0.5
    action = torch.tensor([0.7, 0.1], dtype=F64)
    n = 200_000
    g_b = score_regularizer(
        GaussianBehaviorEps(mean, std),
        SDE,
        torch.zeros(n, 1, dtype=F64),
        action.expand(n, 2),
        weighting=weighting,
        baseline=baseline,
        generator=torch.Generator().manual_seed(0),
    )
    expected = expected_regularizer_factor(weighting, std) * (action - mean)
    standard_error = g_b.std(0) / n**0.5
    assert torch.all((g_b.mean(0) - expected).abs() < 5 * standard_error)
    assert torch.all(standard_error < 0.05 * expected.abs())  # the check has power


def test_srpo_actor_converges_to_the_closed_form_optimum() -> None:
    """For μ = N(m, s² I) and Q(a) = −‖a − a_tar‖², the SRPO gradient c (a − m) + 2β (a − a_tar) vanishes at
    a* = (c m + 2β a_tar) / (c + 2β)."""
    mean, std, target, beta = torch.tensor([0.2, -0.3], dtype=F64), 0.5, torch.tensor([0.6, 0.4], dtype=F64), 0.1
    c = expected_regularizer_factor("sigma2", std)
    optimum = (c * mean + 2 * beta * target) / (c + 2 * beta)
    assert (optimum - mean).norm() > 0.2 and (optimum - target).norm() > 0.2
    point = nn.Parameter(torch.zeros(2, dtype=F64))
    optimizer = torch.optim.Adam([point], lr=0.05)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 300)
    generator = torch.Generator().manual_seed(0)
    behavior = GaussianBehaviorEps(mean, std)
    observations = torch.zeros(512, 1, dtype=F64)
    for _ in range(300):
        loss = srpo_actor_loss(
            point.expand(512, 2),
            observations,
            behavior,
            lambda s, a: -(a - target).square().sum(-1),
            SDE,
            beta,
            generator=generator,
        )
        optimizer.zero_grad()
        loss.actor_loss.backward()
        optimizer.step()
        scheduler.step()
    assert torch.allclose(point.detach(), optimum, atol=5e-3)


def test_srpo_actor_loss_trains_only_the_actor_and_keeps_the_behaviour_mode() -> None:
    torch.manual_seed(0)
    behavior = nn.Sequential(nn.Dropout(0.5))  # a module with dropout: must run in eval mode, then be restored
    behavior.train()
    q = TwinQ(3, 2, hidden=8)
    actor = DeterministicActor(3, 2, hidden=8)
    observations = torch.randn(16, 3)
    eps_calls = []

    def eps(x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        eps_calls.append(behavior.training)
        return behavior(x)

    loss = srpo_actor_loss(actor(observations), observations, eps, q.mean, SDE, beta=0.2)
    loss.actor_loss.backward()
    assert all(p.grad is None for p in q.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in actor.parameters())
    assert eps_calls == [True]  # a plain callable is called as it is
    module_modes = []
    behavior.register_forward_hook(lambda m, i, o: module_modes.append(m.training))
    srpo_actor_loss(actor(observations), observations, _Eps(behavior), q.mean, SDE, beta=0.2)
    assert module_modes == [False] and behavior.training


class _Eps(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        return self.inner(x)


def test_deterministic_actor_outputs_bounded_actions_and_loads_into_sb3_td3_actor() -> None:
    import gymnasium as gym
    from stable_baselines3.common.torch_layers import FlattenExtractor
    from stable_baselines3.td3.policies import Actor

    torch.manual_seed(0)
    actor = DeterministicActor(4, 2, hidden=16, layers=2)
    with torch.no_grad():
        actor.mu[-2].bias.fill_(50.0)  # saturate the tanh
    observations = torch.randn(32, 4) * 100
    actions = actor(observations)
    assert actions.abs().max() <= 1.0
    obs_space = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
    act_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    sb3_actor = Actor(obs_space, act_space, [16, 16], FlattenExtractor(obs_space), 4)
    sb3_actor.load_state_dict(actor.state_dict())
    assert torch.equal(sb3_actor(observations), actions)


def test_srpo_phases_train_behaviour_and_critic_side_by_side_then_the_actor() -> None:
    phases = SRPOPhases(behavior_steps=3, critic_steps=2, actor_steps=2)
    done = dict.fromkeys(("behavior", "critic", "actor"), 0)
    seen = []
    assert phases.remaining(done) == 5
    while parts := phases.parts_to_train(done):
        seen.append(parts)
        for part in parts:
            done[part] += 1
    assert seen == [("behavior", "critic"), ("behavior", "critic"), ("behavior",), ("actor",), ("actor",)]
    assert phases.remaining(done) == 0
    no_pretraining = SRPOPhases(behavior_steps=0, critic_steps=0, actor_steps=5)
    with pytest.raises(ValueError, match="behavior and critic had 0 training steps"):
        no_pretraining.check_actor_can_train(dict.fromkeys(("behavior", "critic", "actor"), 0))
    no_pretraining.check_actor_can_train({"behavior": 10, "critic": 10, "actor": 0})  # pretrained parts copied in
    with pytest.raises(ValueError, match="integer >= 0"):
        SRPOPhases(behavior_steps=-1, critic_steps=0, actor_steps=0)


@pytest.mark.parametrize("expectile", [0.5, 0.7, 0.9])
def test_expectile_loss_is_minimised_at_the_expectile(expectile: float) -> None:
    """The τ-expectile v of x solves τ E[(x − v)+] = (1 − τ) E[(v − x)+]; the loss of u = x − v is least there."""
    x = torch.from_numpy(np.random.default_rng(0).gamma(2.0, size=5000))
    low, high = float(x.min()), float(x.max())
    for _ in range(60):  # bisection on the first-order condition
        v = (low + high) / 2
        balance = expectile * (x - v).clamp_min(0).mean() - (1 - expectile) * (v - x).clamp_min(0).mean()
        low, high = (v, high) if balance > 0 else (low, v)
    losses = [float(expectile_loss(x - (v + d), expectile)) for d in (-1e-2, 0.0, 1e-2)]
    assert losses[1] < losses[0] and losses[1] < losses[2]
    if expectile == 0.5:
        assert v == pytest.approx(float(x.mean()), abs=1e-9)


# ------------------------------------------------------------------------------------------- Diffusion-QL
def test_diffusion_policy_actions_stay_in_bounds() -> None:
    torch.manual_seed(0)
    policy = DiffusionPolicy(3, 2, hidden=16, t_dim=8)
    with torch.no_grad():
        policy.eps_net.net[-1].bias.fill_(-30.0)  # push every x̂_0 far outside [-1, 1]
    actions = policy(torch.randn(256, 3) * 10)
    assert actions.shape == (256, 2) and actions.abs().max() <= 1.0


def test_dql_q_gradient_flows_through_every_reverse_step() -> None:
    torch.manual_seed(0)
    policy = DiffusionPolicy(3, 2, hidden=32, t_dim=8, n_steps=5)
    critic = TwinQ(3, 2, hidden=32, layers=3, activation="mish")
    outputs: list[Tensor] = []

    def keep(module: nn.Module, inputs: tuple, output: Tensor) -> None:
        output.retain_grad()
        outputs.append(output)

    policy.eps_net.register_forward_hook(keep)
    loss = dql_actor_loss(policy, critic, _batch(), eta=1.0)
    loss.q_loss.backward()
    bc_call, *chain = outputs
    assert len(chain) == 5
    assert bc_call.grad is None  # the BC term's network call does not touch the Q term
    assert all(out.grad is not None and out.grad.abs().sum() > 0 for out in chain)


class _LinearHeads(nn.Module):
    """Two heads Q_i(s, a) = w_i · sum(a) + b_i, each with its own parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.heads = nn.ModuleList([nn.Linear(1, 1), nn.Linear(1, 1)])
        with torch.no_grad():
            for head, (w, b) in zip(self.heads, [(2.0, 5.0), (-1.0, -3.0)], strict=True):
                head.weight.fill_(w)
                head.bias.fill_(b)

    def forward(self, observations: Tensor, actions: Tensor) -> Tensor:
        x = actions.sum(-1, keepdim=True)
        return torch.stack([head(x).squeeze(-1) for head in self.heads])


def test_dql_q_loss_is_normalised_by_the_detached_other_head() -> None:
    torch.manual_seed(0)
    policy = DiffusionPolicy(3, 2, hidden=16, t_dim=8)
    batch = _batch(32)
    picked = set()
    for seed in range(8):
        critic = _LinearHeads()
        generator = torch.Generator().manual_seed(seed)
        loss = dql_actor_loss(policy, critic, batch, eta=2.5, generator=generator)
        loss.q_loss.backward()
        generator = torch.Generator().manual_seed(seed)  # replay the same draws for the sampled actions
        policy.bc_loss(batch.observations, batch.actions, generator=generator)
        with torch.no_grad():
            q = critic(batch.observations, policy(batch.observations, generator=generator))
        k = next(i for i, head in enumerate(critic.heads) if head.weight.grad.abs().sum() > 0)
        other = critic.heads[1 - k]
        assert other.weight.grad.abs().sum() == 0 and other.bias.grad.abs().sum() == 0  # detached denominator
        assert loss.q_loss.item() == pytest.approx(float(-q[k].mean() / q[1 - k].abs().mean()), rel=1e-5)
        assert loss.actor_loss.item() == pytest.approx((loss.bc_loss + 2.5 * loss.q_loss).item(), rel=1e-6)
        picked.add(k)
    assert picked == {0, 1}


def test_dql_critic_targets_use_the_min_of_target_heads_and_max_over_backup_samples() -> None:
    batch = _batch(8)
    critic = _LinearHeads()
    target = _LinearHeads()
    policy = DiffusionPolicy(3, 2, hidden=8, t_dim=8)
    torch.manual_seed(0)
    loss = dql_critic_loss(critic, target, policy, batch)
    torch.manual_seed(0)
    with torch.no_grad():
        q_next = target(batch.next_observations, policy(batch.next_observations)).amin(0)
        y = batch.rewards + 0.99 * (1 - batch.terminals) * q_next
        q = critic(batch.observations, batch.actions)
    assert loss.item() == pytest.approx(float(((q - y) ** 2).mean(1).sum()), rel=1e-6)
    torch.manual_seed(0)
    backup = dql_critic_loss(critic, target, policy, batch, max_q_backup=True, n_backup_samples=4)
    torch.manual_seed(0)
    with torch.no_grad():
        s2 = batch.next_observations.repeat_interleave(4, 0)
        q_next = target(s2, policy(s2)).view(2, 8, 4).amax(2).amin(0)
        y = batch.rewards + 0.99 * (1 - batch.terminals) * q_next
    assert backup.item() == pytest.approx(float(((q - y) ** 2).mean(1).sum()), rel=1e-6)


def _counting_policy(observations: Tensor) -> Tensor:
    """Candidate j of each state is the action (j / N, 0): the rows arrive state by state, N per state."""
    return torch.stack([torch.arange(len(observations)) % 3 / 3.0, torch.zeros(len(observations))], dim=1)


def test_select_actions_argmax_picks_the_best_candidate_of_each_state() -> None:
    observations = torch.tensor([[0.0], [1.0]])

    def score(s: Tensor, a: Tensor) -> Tensor:  # state 0 prefers a = 1/3, state 1 prefers a = 2/3
        return -(a[:, 0] - (1 + s[:, 0]) / 3).abs()

    actions = select_actions(_counting_policy, score, observations, n_candidates=3, selection="argmax")
    assert torch.equal(actions, torch.tensor([[1 / 3, 0.0], [2 / 3, 0.0]]))


def test_select_actions_softmax_draws_candidates_with_softmax_q_probabilities() -> None:
    torch.manual_seed(0)
    n = 30_000
    observations = torch.zeros(n, 1)
    logits = torch.log(torch.tensor([1.0, 2.0, 3.0]))

    def score(s: Tensor, a: Tensor) -> Tensor:
        return logits[(a[:, 0] * 3).round().long()] * 0.5  # temperature 0.5 restores the logits

    actions = select_actions(_counting_policy, score, observations, n_candidates=3, temperature=0.5)
    frequencies = torch.bincount((actions[:, 0] * 3).round().long(), minlength=3) / n
    assert torch.allclose(frequencies, torch.tensor([1 / 6, 2 / 6, 3 / 6]), atol=0.01)
    with pytest.raises(ValueError, match="selection must be one of"):
        select_actions(_counting_policy, score, observations, selection="best")


# ---------------------------------------------------------------------------------------------- fast inference
def _with_torch_mish(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with every :class:`Mish` replaced by ``torch.nn.Mish`` (the reference maths)."""
    module = copy.deepcopy(module)
    for parent in module.modules():
        for name, child in parent.named_children():
            if isinstance(child, Mish):
                setattr(parent, name, nn.Mish())
    return module


def test_mish_matches_torch_mish_over_a_wide_range() -> None:
    special = [0.0, -0.0, 1e-30, -1e-30, 5.0, 20.0, 20.5, 44.0, 89.0, 1e30, -1e30, -3e38, 3e38]
    x = torch.cat([torch.linspace(-100, 100, 20_001), torch.tensor(special)])
    expected = torch.nn.functional.mish(x.double())
    for got in (mish(x), mish_(x.clone())):
        assert ((got.double() - expected).abs() / x.double().abs().clamp_min(1)).max() <= 1e-6
    assert ((mish(x.double()) - expected).abs() / x.double().abs().clamp_min(1)).max() <= 1e-14
    half = torch.linspace(-60_000, 60_000, 40_001).half()
    assert (
        (mish(half).double() - torch.nn.functional.mish(half.double())).abs() <= 1e-3 * half.abs().clamp_min(1)
    ).all()
    buffer = x.clone()
    assert mish_(buffer) is buffer and torch.equal(buffer, mish(x))


def test_mish_gradients_match_torch_mish() -> None:
    x = torch.linspace(-30, 30, 61, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(mish, (x,)) and torch.autograd.gradgradcheck(mish, (x,))
    x32 = torch.linspace(-50, 50, 2001, requires_grad=True)
    (grad,) = torch.autograd.grad(mish(x32).sum(), x32)
    (expected,) = torch.autograd.grad(torch.nn.functional.mish(x32).sum(), x32)
    assert torch.allclose(grad, expected, atol=1e-5)


@pytest.mark.parametrize("activation", ["mish", "relu"])
def test_mlp_inference_equals_the_sequential_chunk_by_chunk(activation: str) -> None:
    torch.manual_seed(0)
    layers = mlp(5, 2, hidden=24, layers=3, activation=activation)
    x = torch.randn(2 * CPU_CHUNK_ROWS + 76, 5) * 3  # three chunks, the last one short
    original = x.clone()
    expected = layers(x)  # grad mode on: the modules themselves
    with torch.no_grad():
        got = MLPInference(layers)(x)
        assert torch.allclose(got, expected, atol=1e-5) and torch.equal(x, original)
        activation_first = MLPInference(list(layers)[1:])  # starts with an activation: the input must survive
        h = torch.randn(7, 24)
        h_before = h.clone()
        assert torch.allclose(activation_first(h), layers[1:](h_before), atol=1e-5) and torch.equal(h, h_before)
    other = nn.Sequential(nn.Linear(5, 3), nn.Tanh())
    with pytest.raises(TypeError, match="MLPInference runs"):
        MLPInference(other)
    with torch.no_grad():  # layers it does not run: the modules themselves
        assert torch.equal(layers_forward(other, x), other(x))


def test_repeated_condition_equals_the_network_on_repeated_conditions() -> None:
    torch.manual_seed(0)
    net = DQLMLP(3, 5, hidden=32, t_dim=8)
    cond, repeats = torch.randn(150, 5), 7  # 1050 rows: chunks of 73 conditions
    x, level = torch.randn(150 * repeats, 3), torch.full((150 * repeats,), 2.0)
    expected = net(x, level, cond.repeat_interleave(repeats, 0))  # grad mode on: the modules themselves
    eps = net.repeated_condition(cond, repeats)
    with torch.no_grad():
        assert torch.allclose(eps(x, level), expected, atol=1e-5)
        with pytest.raises(ValueError, match="one step index for all rows"):
            eps(x, torch.arange(150 * repeats).float())
        with pytest.raises(ValueError, match="repeats per condition"):
            eps(x[:-1], level[:-1])
    reference = eps(x, level)  # grad mode on: the network on the repeated conditions, with a graph
    assert reference.requires_grad and torch.allclose(reference, expected, atol=1e-6)
    with pytest.raises(ValueError, match="repeats must be an integer"):
        net.repeated_condition(cond, 0)


def test_select_actions_fast_path_reproduces_the_reference_actions() -> None:
    torch.manual_seed(0)
    policy = DiffusionPolicy(3, 2, hidden=32, t_dim=8)
    critic = TwinQ(3, 2, hidden=32, layers=3, activation="mish")
    reference_policy, reference_critic = _with_torch_mish(policy), _with_torch_mish(critic)
    observations, n = torch.randn(40, 3), 16  # 640 candidate rows: more than one chunk
    assert isinstance(policy, CandidateSampler)
    for seed in range(3):
        torch.manual_seed(seed)
        actions = select_actions(policy, critic.min, observations, n_candidates=n)
        torch.manual_seed(seed)  # the reference: torch's Mish, the modules on the repeated states
        repeated = observations.repeat_interleave(n, 0)
        candidates = reference_policy(repeated).detach()
        scores = reference_critic.min(repeated, candidates).detach().view(40, n)
        index = torch.multinomial(torch.softmax(scores, dim=1), 1).squeeze(1)
        expected = candidates.view(40, n, 2)[torch.arange(40), index]
        assert torch.allclose(actions, expected, atol=1e-5)


def test_training_losses_and_gradients_are_those_of_torch_mish() -> None:
    torch.manual_seed(0)
    policy, critic = DiffusionPolicy(3, 2, hidden=32, t_dim=8), TwinQ(3, 2, hidden=32, layers=3, activation="mish")
    models = {"fast": (policy, critic), "reference": (_with_torch_mish(policy), _with_torch_mish(critic))}
    results = {}
    for name, (actor, q) in models.items():
        generator = torch.Generator().manual_seed(1)
        actor_loss = dql_actor_loss(actor, q, _batch(), eta=1.0, generator=generator).actor_loss
        critic_loss = dql_critic_loss(q, copy.deepcopy(q), actor, _batch(), max_q_backup=True, generator=generator)
        grads = torch.autograd.grad(actor_loss + critic_loss, [*actor.parameters(), *q.parameters()])
        results[name] = (actor_loss.detach(), critic_loss.detach(), grads)
    (fast_actor, fast_critic, fast_grads), (ref_actor, ref_critic, ref_grads) = results["fast"], results["reference"]
    assert torch.allclose(fast_actor, ref_actor, rtol=1e-5) and torch.allclose(fast_critic, ref_critic, rtol=1e-5)
    assert all(torch.allclose(g, r, rtol=1e-4, atol=1e-6) for g, r in zip(fast_grads, ref_grads, strict=True))
