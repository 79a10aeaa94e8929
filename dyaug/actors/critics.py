"""Critics of the diffusion actors: twin Q-networks, a state-value network, and the IQL losses.

- Diffusion-QL (Wang, Hunt & Zhou, arXiv 2208.06193): twin Q on ``[s, a]``, 3 x 256 Mish layers, TD targets from
  the EMA actor (the loss is in :mod:`dyaug.actors.diffusion_ql`);
- SRPO (Chen et al., arXiv 2310.07297) trains an IQL critic (Kostrikov et al., arXiv 2110.06169): twin Q and V,
  2 x 256 ReLU layers, V by expectile regression on the target Q, Q by regression on r + γ V(s').
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import Literal, cast

import torch
from torch import Tensor, nn

from dyaug.actors.batch import TransitionBatch
from dyaug.diffusion.networks.mish import Mish
from dyaug.diffusion.networks.mlp import layers_forward

Activation = Literal["relu", "mish"]
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "mish": Mish}

QFunction = Callable[[Tensor, Tensor], Tensor]
"""The critic seam: ``q(observations (B, obs_dim), actions (B, act_dim)) -> values (B,)``."""
TwinQFunction = Callable[[Tensor, Tensor], Tensor]
"""A critic with several heads: ``q(observations, actions) -> values (n_heads, B)`` (e.g. :class:`TwinQ`)."""


def mlp(in_dim: int, out_dim: int, hidden: int, layers: int, activation: Activation) -> nn.Sequential:
    """``Linear_{in -> h}, act, (Linear_{h -> h}, act) x (layers - 1), Linear_{h -> out}``.

    The layout of Stable-Baselines3's ``create_mlp``, so the weights of such a network load into an SB3 MLP with
    the same sizes.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}.")
    if layers < 1 or hidden < 1:
        raise ValueError(f"an MLP needs layers >= 1 and hidden >= 1, got layers={layers}, hidden={hidden}.")
    sizes = [in_dim] + [hidden] * layers
    modules: list[nn.Module] = []
    for size_in, size_out in itertools.pairwise(sizes):
        modules += [nn.Linear(size_in, size_out), ACTIVATIONS[activation]()]
    return nn.Sequential(*modules, nn.Linear(hidden, out_dim))


class TwinQ(nn.Module):
    """``n_heads`` independent Q-networks ``Q_i(s, a) = MLP_i([s, a])``; ``forward`` returns ``(n_heads, B)``.

    Inference (grad mode off) runs each head by :class:`~dyaug.diffusion.networks.mlp.MLPInference`: the same
    values up to float rounding, faster on a CPU.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: int = 256,
        layers: int = 2,
        activation: Activation = "relu",
        n_heads: int = 2,
    ) -> None:
        super().__init__()
        if n_heads < 1:
            raise ValueError(f"TwinQ needs n_heads >= 1, got {n_heads}.")
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.heads = nn.ModuleList(mlp(obs_dim + act_dim, 1, hidden, layers, activation) for _ in range(n_heads))

    def forward(self, observations: Tensor, actions: Tensor) -> Tensor:
        x = torch.cat([observations, actions], dim=-1)
        heads = cast("Iterable[nn.Sequential]", self.heads)  # mlp() heads (torch's ModuleList is not generic)
        return torch.stack([layers_forward(head, x).squeeze(-1) for head in heads])

    def min(self, observations: Tensor, actions: Tensor) -> Tensor:
        """``min_i Q_i(s, a)``, shaped ``(B,)``."""
        return self(observations, actions).amin(0)

    def mean(self, observations: Tensor, actions: Tensor) -> Tensor:
        """``mean_i Q_i(s, a)``, shaped ``(B,)``."""
        return self(observations, actions).mean(0)


class ValueMLP(nn.Module):
    """``V(s) = MLP(s)``, shaped ``(B,)``."""

    def __init__(self, obs_dim: int, hidden: int = 256, layers: int = 2, activation: Activation = "relu") -> None:
        super().__init__()
        self.net = mlp(obs_dim, 1, hidden, layers, activation)

    def forward(self, observations: Tensor) -> Tensor:
        return layers_forward(self.net, observations).squeeze(-1)


@torch.no_grad()
def soft_update_(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging ``θ_target <- (1 - τ) θ_target + τ θ_source``, in place."""
    if not 0.0 < tau <= 1.0:
        raise ValueError(f"tau must lie in (0, 1], got {tau}.")
    torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)


def expectile_loss(diff: Tensor, expectile: float) -> Tensor:
    """``mean |τ - 1(u < 0)| u²`` for ``u = diff`` (IQL's asymmetric L2; τ = 0.5 is half the MSE)."""
    weight = torch.where(diff < 0, 1.0 - expectile, expectile)
    return (weight * diff.square()).mean()


def iql_value_loss(value: ValueMLP, target_q: TwinQ, batch: TransitionBatch, expectile: float) -> Tensor:
    """IQL's V loss: expectile regression of ``V(s)`` on ``u = min_i Q_i^target(s, a) - V(s)``."""
    with torch.no_grad():
        q = target_q.min(batch.observations, batch.actions)
    return expectile_loss(q - value(batch.observations), expectile)


def iql_q_loss(q: TwinQ, value: ValueMLP, batch: TransitionBatch) -> Tensor:
    """IQL's Q loss as SRPO trains it: ``mean_i MSE(Q_i(s, a), r + γ (1 - d) V(s'))``, V detached."""
    with torch.no_grad():
        target = batch.bootstrap_target(value(batch.next_observations))
    return (q(batch.observations, batch.actions) - target).square().mean()
