"""SRPO (Chen et al., "Score Regularized Policy Optimization through Diffusion Behavior", ICLR 2024,
arXiv 2310.07297): a deterministic actor regularised towards a diffusion behaviour model through its score,
without ever sampling from the diffusion model.

Three parts, trained in :class:`SRPOPhases` order: a VP-SDE behaviour model ε_ψ(a_t | s, t) (its loss is
:meth:`dyaug.diffusion.vp.VPSDE.loss`), an IQL critic (:mod:`dyaug.actors.critics`), then the actor
:class:`DeterministicActor` with :func:`srpo_actor_loss`, whose gradient is

    ∇_θ L = E_{s,t,z}[ω(t) (ε_ψ(α_t π_θ(s) + σ_t z | s, t) − z)ᵀ ∂π_θ(s)/∂θ]
            − β E_s[∇_a Q(s, a)|_{a=π_θ(s)}ᵀ ∂π_θ(s)/∂θ].
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from dyaug.actors.critics import QFunction, mlp
from dyaug.diffusion.conditioning import Network
from dyaug.diffusion.vp import VPSDE
from dyaug.validation import check_int

Weighting = Literal["sigma2", "uniform", "score"]
WEIGHTINGS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "sigma2": lambda alpha, sigma: sigma.square(),
    "uniform": lambda alpha, sigma: torch.ones_like(sigma),
    "score": lambda alpha, sigma: alpha / sigma,
}
"""ω(t) from (α_t, σ_t): ``sigma2`` σ_t² (the paper's default, the code's ``VDS``), ``uniform`` 1 (``stable``),
``score`` α_t/σ_t (the first release's default)."""


class DeterministicActor(nn.Module):
    """π_θ(s) = tanh(MLP(s)): ``layers`` hidden ReLU layers of width ``hidden`` (SRPO: 2 x 256; AntMaze 4 x 256).

    ``mu`` has the layout of Stable-Baselines3's TD3 actor network (``Linear, ReLU, ..., Linear, Tanh``), so
    ``actor.state_dict()`` loads into ``stable_baselines3.td3.policies.Actor`` of the same sizes.
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 256, layers: int = 2) -> None:
        super().__init__()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.mu = nn.Sequential(*mlp(obs_dim, act_dim, hidden, layers, "relu"), nn.Tanh())

    def forward(self, observations: Tensor) -> Tensor:
        return self.mu(observations)


@contextlib.contextmanager
def evaluating(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` in eval mode (dropout off) inside the block, its previous mode restored after."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


@torch.no_grad()
def score_regularizer(
    behavior: Network,
    sde: VPSDE,
    observations: Tensor,
    actions: Tensor,
    *,
    weighting: Weighting = "sigma2",
    baseline: bool = True,
    t_min: float = 0.02,
    t_max: float = 0.98,
    generator: torch.Generator | None = None,
) -> Tensor:
    """g_b = ω(t) (ε_ψ(α_t a + σ_t z | s, t) − z), shaped like ``actions`` and without gradient.

    One t ~ U(``t_min``, ``t_max``) per sample (drawn first), then z ~ N(0, I). Since ε_ψ ≈ −σ_t ∇ log μ_t, g_b
    is the weighted negative behaviour score at the diffused action: descending along it pulls a towards the
    behaviour's modes. Subtracting z (``baseline``, the paper's variance reduction; the released code's default
    does not) leaves the mean unchanged. An ``nn.Module`` behaviour runs in eval mode (no dropout).
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {sorted(WEIGHTINGS)}, got {weighting!r}.")
    if not 0.0 < t_min < t_max <= 1.0:
        raise ValueError(f"SRPO needs 0 < t_min < t_max <= 1, got t_min={t_min}, t_max={t_max}.")
    actions = actions.detach()
    t = t_min + (t_max - t_min) * torch.rand(
        actions.shape[0], generator=generator, device=actions.device, dtype=actions.dtype
    )
    z = torch.randn(actions.shape, generator=generator, device=actions.device, dtype=actions.dtype)
    alpha, sigma = sde.alpha(t)[:, None], sde.sigma(t)[:, None]
    context = evaluating(behavior) if isinstance(behavior, nn.Module) else contextlib.nullcontext()
    with context:
        eps = behavior(alpha * actions + sigma * z, t, observations)
    return WEIGHTINGS[weighting](alpha, sigma) * (eps - z if baseline else eps)


def q_action_gradient(
    q: QFunction, observations: Tensor, actions: Tensor, *, normalize: bool = False
) -> tuple[Tensor, Tensor]:
    """``(∇_a Q(s, a), Q(s, a))`` at ``a = actions`` (detached), both without gradient to any parameter.

    ``normalize`` divides each row of the gradient by its root mean square over action dimensions
    (SRPO's ``regq`` on AntMaze).
    """
    with torch.enable_grad():
        a = actions.detach().requires_grad_(True)
        value = q(observations, a)
        (grad,) = torch.autograd.grad(value.sum(), a)
    if normalize:
        grad = grad / grad.square().mean(-1, keepdim=True).sqrt().clamp_min(torch.finfo(grad.dtype).tiny)
    return grad, value.detach()


@dataclass(frozen=True)
class SRPOActorLoss:
    """``actor_loss``: the surrogate whose gradient is SRPO's (its value is not an objective); ``q_value``: mean
    Q(s, π(s)); ``score_norm``: mean ‖g_b‖ of the regulariser."""

    actor_loss: Tensor
    q_value: Tensor
    score_norm: Tensor


def srpo_actor_loss(
    actions: Tensor,
    observations: Tensor,
    behavior: Network,
    q: QFunction,
    sde: VPSDE,
    beta: float,
    *,
    weighting: Weighting = "sigma2",
    baseline: bool = True,
    t_min: float = 0.02,
    t_max: float = 0.98,
    normalize_q_grad: bool = False,
    generator: torch.Generator | None = None,
) -> SRPOActorLoss:
    """SRPO's actor loss L = mean_B[(g_b − β g_q) · a], ``a = actions`` = π_θ(s) with its gradient.

    g_b is :func:`score_regularizer`, g_q = ∇_a Q(s, a) at a = π_θ(s) (:func:`q_action_gradient`), both held
    constant, so ∇_θ L is the score-regularised gradient of the module docstring (multiplied through by β, as
    SRPO's code does). SRPO's ``q`` is the mean of the target twin Q. Only the network that produced ``actions``
    receives gradients.
    """
    if not beta >= 0:
        raise ValueError(f"beta must be >= 0 (larger beta: weaker regularisation), got {beta}.")
    g_b = score_regularizer(
        behavior,
        sde,
        observations,
        actions,
        weighting=weighting,
        baseline=baseline,
        t_min=t_min,
        t_max=t_max,
        generator=generator,
    )
    g_q, value = q_action_gradient(q, observations, actions, normalize=normalize_q_grad)
    loss = ((g_b - beta * g_q) * actions).sum(-1).mean()
    return SRPOActorLoss(actor_loss=loss, q_value=value.mean(), score_norm=g_b.norm(dim=-1).mean())


Part = Literal["behavior", "critic", "actor"]


@dataclass(frozen=True)
class SRPOPhases:
    """SRPO's training order: the behaviour model and the critic (independent, trained side by side), then the
    actor once both have had their steps.

    ``parts_to_train(done)`` tells, from the steps each part has had (``done["behavior"]`` ...), which parts the
    next training step updates: those of ``behavior`` and ``critic`` with steps left, else ``actor`` while it has
    steps left, else none (finished).
    """

    behavior_steps: int
    critic_steps: int
    actor_steps: int

    def __post_init__(self) -> None:
        for name in ("behavior_steps", "critic_steps", "actor_steps"):
            check_int(f"SRPO {name}", getattr(self, name), 0, numpy=False)

    def budget(self, part: Part) -> int:
        return getattr(self, f"{part}_steps")

    def parts_to_train(self, done: dict[str, int]) -> tuple[Part, ...]:
        pretrained: tuple[Part, ...] = ("behavior", "critic")
        pretraining = tuple(p for p in pretrained if done[p] < self.budget(p))
        if pretraining:
            return pretraining
        return ("actor",) if done["actor"] < self.actor_steps else ()

    def pretraining_left(self, done: dict[str, int]) -> int:
        """Training steps left until the behaviour model and the critic (side by side) have had theirs."""
        return max(0, self.behavior_steps - done["behavior"], self.critic_steps - done["critic"])

    def remaining(self, done: dict[str, int]) -> int:
        """Training steps left until every part has had its steps."""
        return self.pretraining_left(done) + max(0, self.actor_steps - done["actor"])

    def check_actor_can_train(self, done: dict[str, int]) -> None:
        """Raise ``ValueError`` when the actor phase would start on a behaviour model or critic that neither has
        had training steps nor has any planned."""
        untrained = [p for p in ("behavior", "critic") if max(done[p], self.budget(p)) == 0]
        if untrained and done["actor"] < self.actor_steps:
            raise ValueError(
                f"SRPO's actor phase needs a trained behaviour model and critic, but the {' and '.join(untrained)} "
                "had 0 training steps; give them steps (behavior_steps, critic_steps) or copy pretrained ones "
                "(copy_pretrained_from)."
            )
