"""Diffusion-QL (Wang, Hunt & Zhou, "Diffusion Policies as an Expressive Policy Class for Offline RL", ICLR 2023,
arXiv 2208.06193): a short DDPM over actions, conditioned on the state, trained by behaviour cloning plus a Q term
back-propagated through the whole reverse chain.

- :class:`DiffusionPolicy`: π_θ(a|s), an ``nn.Module`` mapping states to actions in [-1, 1];
- :func:`dql_actor_loss`: L(θ) = L_BC(θ) − η Q_k(s, â) / mean|Q_k'(s, â)| (k random, k' the other head, the
  denominator detached), â ~ π_θ(·|s) by the differentiable chain;
- :func:`dql_critic_loss`: twin-Q TD regression on targets from the EMA actor;
- :func:`select_actions`: N candidates per state, all rows through the chain at once, one picked by Q
  (a :class:`CandidateSampler` such as :class:`DiffusionPolicy` draws them sharing each state's part of the work).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from dyaug.actors.batch import TransitionBatch
from dyaug.actors.critics import QFunction, TwinQFunction, soft_update_
from dyaug.diffusion.ema import EMA
from dyaug.diffusion.networks import DQLMLP
from dyaug.diffusion.vp import DiscreteVPSchedule
from dyaug.validation import check_int

Selection = Literal["softmax", "argmax"]


class DiffusionPolicy(nn.Module):
    """π_θ(a|s): Diffusion-QL's ``n_steps``-step "vp" DDPM over actions, conditioned on the state.

    The noise network is :class:`~dyaug.diffusion.networks.DQLMLP` (``hidden`` x 3 Mish layers, a ``t_dim``
    sinusoidal step embedding) and the schedule :class:`~dyaug.diffusion.vp.DiscreteVPSchedule`
    (β_min = ``beta_min``, β_max = ``beta_max``). ``forward(observations)`` draws one action per state by the reverse
    chain, x̂_0 clipped to [-1, 1] at every step, and is differentiable end to end; actions are in [-1, 1].
    Noise comes from ``generator`` when given, else from the global torch RNG.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: int = 256,
        t_dim: int = 16,
        n_steps: int = 5,
        beta_min: float = 0.1,
        beta_max: float = 10.0,
    ) -> None:
        super().__init__()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.eps_net = DQLMLP(act_dim, obs_dim, hidden=hidden, t_dim=t_dim)
        self.schedule = DiscreteVPSchedule(n_steps=n_steps, beta_min=beta_min, beta_max=beta_max)

    def forward(self, observations: Tensor, generator: torch.Generator | None = None) -> Tensor:
        shape = (observations.shape[0], self.act_dim)
        return self.schedule.sample(
            self.eps_net, shape, cond=observations, clip=1.0, generator=generator, device=observations.device
        )

    def sample_candidates(
        self, observations: Tensor, n_candidates: int, generator: torch.Generator | None = None
    ) -> Tensor:
        """``self(observations.repeat_interleave(n_candidates, 0), generator)``, shaped ``(B * n_candidates,
        act_dim)``, state by state, without repeating the states: the reverse chain runs on
        :meth:`DQLMLP.repeated_condition <dyaug.diffusion.networks.DQLMLP.repeated_condition>` (each state's part of
        the first layer once per state, the step's once per step). The same noise draws and, up to float
        rounding, the same actions.
        """
        shape = (observations.shape[0] * n_candidates, self.act_dim)
        eps = self.eps_net.repeated_condition(observations, n_candidates)
        return self.schedule.sample(eps, shape, cond=None, clip=1.0, generator=generator, device=observations.device)

    def bc_loss(self, observations: Tensor, actions: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """L_BC = MSE(ε_θ(√ᾱ_k a + √(1 − ᾱ_k) ε, k, s), ε), k ~ U{0..N−1}, ε ~ N(0, I)."""
        return self.schedule.loss(self.eps_net, actions, cond=observations, generator=generator)


@dataclass(frozen=True)
class DQLActorLoss:
    """``actor_loss = bc_loss + eta * q_loss`` (scalars; ``actor_loss`` carries the gradient)."""

    actor_loss: Tensor
    bc_loss: Tensor
    q_loss: Tensor


def dql_actor_loss(
    policy: DiffusionPolicy,
    critic: TwinQFunction,
    batch: TransitionBatch,
    eta: float,
    generator: torch.Generator | None = None,
) -> DQLActorLoss:
    """Diffusion-QL's actor loss L = L_BC + η L_Q with L_Q = −mean Q_k(s, â) / mean |Q_k'(s, â)|.

    â = ``policy(s)`` is a fresh sample of the whole reverse chain with gradients through every step; k is drawn
    uniformly from the critic's two heads and k' is the other one, whose mean |Q| is detached (the official
    code's form of the paper's α = η / E|Q|). The current (not the target) critic scores â.
    """
    bc = policy.bc_loss(batch.observations, batch.actions, generator=generator)
    q = critic(batch.observations, policy(batch.observations, generator=generator))
    if q.shape != (2, len(batch)):
        raise ValueError(f"Diffusion-QL needs a twin critic returning (2, {len(batch)}) values, got {tuple(q.shape)}.")
    k = torch.randint(2, (1,), generator=generator, device=q.device)
    q_loss = -q.index_select(0, k).mean() / q.index_select(0, 1 - k).abs().mean().detach()
    return DQLActorLoss(actor_loss=bc + eta * q_loss, bc_loss=bc, q_loss=q_loss)


def dql_critic_loss(
    critic: TwinQFunction,
    target_critic: TwinQFunction,
    target_policy: DiffusionPolicy,
    batch: TransitionBatch,
    *,
    max_q_backup: bool = False,
    n_backup_samples: int = 10,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Σ_i MSE(Q_i(s, a), y), y = r + γ (1 − d) min_i Q_i^target(s', a'), a' ~ ``target_policy`` (the EMA actor).

    ``max_q_backup``: a' is ``n_backup_samples`` draws per s'; each head takes the max over the draws, then
    the min over heads (Diffusion-QL on AntMaze).
    """
    with torch.no_grad():
        n = n_backup_samples if max_q_backup else 1
        next_observations = batch.next_observations.repeat_interleave(n, 0)
        next_actions = target_policy(next_observations, generator=generator)
        q_next = target_critic(next_observations, next_actions)  # (heads, B * n)
        q_next = q_next.view(q_next.shape[0], -1, n).amax(2).amin(0)
        target = batch.bootstrap_target(q_next)
    q = critic(batch.observations, batch.actions)
    return (q - target).square().mean(1).sum()


def diffusion_ql_update(
    *,
    critic: TwinQFunction,
    target_critic: TwinQFunction,
    policy: DiffusionPolicy,
    backup_policy: DiffusionPolicy,
    ema: EMA,
    ema_source: nn.Module,
    ema_step: int,
    batch: TransitionBatch,
    eta: float,
    tau: float,
    critic_step: Callable[[Tensor], None],
    actor_step: Callable[[Tensor], None] | None,
    max_q_backup: bool = False,
    n_backup_samples: int = 10,
    averaged: tuple[nn.Module, nn.Module] | None = None,
) -> dict[str, Tensor]:
    """One Diffusion-QL update in the official order (Wang et al. 2023, ``agents/ql_diffusion.py``).

    1. the critic on :func:`dql_critic_loss`, backups drawn from ``backup_policy`` (the EMA actor);
    2. with ``actor_step``: the actor on :func:`dql_actor_loss`, then the EMA of ``ema_source`` at step ``ema_step``;
    3. the target critic by Polyak averaging with ``tau`` (of ``averaged = (target, source)``, by default the
       critics themselves, for adapters whose critics are views of other modules).

    ``critic_step(loss)`` / ``actor_step(loss)`` back-propagate and step the library's optimizers (clipping as the
    library does). Returns the detached losses as 0-d tensors on the device, so an adapter reads them in one
    transfer (``torch.stack(list(losses.values())).tolist()``)."""
    critic_loss = dql_critic_loss(
        critic, target_critic, backup_policy, batch, max_q_backup=max_q_backup, n_backup_samples=n_backup_samples
    )
    critic_step(critic_loss)
    losses = {"critic_loss": critic_loss.detach()}
    if actor_step is not None:
        actor = dql_actor_loss(policy, critic, batch, eta)
        actor_step(actor.actor_loss)
        ema.step = ema_step  # the EMA schedule resumes after a load
        ema.update(ema_source)
        losses |= {name: getattr(actor, name).detach() for name in ("actor_loss", "bc_loss", "q_loss")}
    target, source = averaged or (target_critic, critic)
    assert isinstance(target, nn.Module) and isinstance(source, nn.Module)  # without averaged: critics are modules
    soft_update_(target, source, tau)
    return losses


SELECTIONS: dict[str, Callable[[Tensor, float], Tensor]] = {
    "softmax": lambda scores, temperature: torch.multinomial(torch.softmax(scores / temperature, dim=1), 1).squeeze(1),
    "argmax": lambda scores, temperature: scores.argmax(1),
}
"""How a candidate is chosen from its ``(B, N)`` scores: an index per row. ``softmax``: drawn from
softmax(Q / temperature) (Diffusion-QL's evaluation and EDP's "energy-based action selection"); ``argmax``: the
highest Q (IDQL)."""


@runtime_checkable
class CandidateSampler(Protocol):
    """A policy that draws ``n_candidates`` actions per state itself: ``(B * n_candidates, act_dim)``, state by state,
    distributed as ``policy(observations.repeat_interleave(n_candidates, 0))`` (e.g. :class:`DiffusionPolicy`)."""

    def sample_candidates(self, observations: Tensor, n_candidates: int) -> Tensor: ...


@torch.no_grad()
def select_actions(
    policy: Callable[[Tensor], Tensor] | CandidateSampler,
    score: QFunction,
    observations: Tensor,
    n_candidates: int = 50,
    selection: Selection = "softmax",
    temperature: float = 1.0,
) -> Tensor:
    """One action per state: ``n_candidates`` draws of ``policy`` per state, one of them picked by ``score``.

    The B·N candidate rows go through the policy (Diffusion-QL: the whole reverse chain) and the scorer in one
    batch each, with no per-state loop; a :class:`CandidateSampler` draws them with ``sample_candidates``, any
    other policy is called on the repeated states. Diffusion-QL's evaluation: the online actor's candidates,
    scored by min(Q1, Q2) of the target critic, picked from softmax(Q) at temperature 1 (``selection="softmax"``).
    Randomness (the candidates and the softmax pick) comes from the global torch RNG. No gradients are recorded.
    """
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {sorted(SELECTIONS)}, got {selection!r}.")
    check_int("n_candidates", n_candidates, numpy=False)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    batch = observations.shape[0]
    repeated = observations.repeat_interleave(n_candidates, 0)
    if isinstance(policy, CandidateSampler):
        candidates = policy.sample_candidates(observations, n_candidates)
    else:
        candidates = policy(repeated)
    scores = score(repeated, candidates).view(batch, n_candidates)
    index = SELECTIONS[selection](scores, temperature)
    return candidates.view(batch, n_candidates, -1)[torch.arange(batch, device=index.device), index]
