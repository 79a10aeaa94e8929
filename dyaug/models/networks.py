"""Batched ensembles of MLPs: every parameter carries the member index as its first dimension.

One batched matrix product per layer evaluates all members at once (as in MBPO's ensemble, Janner et al. 2019,
arXiv 1906.08253), and a member's weights are the slice ``[e]`` of every parameter, so the best weights of each
member can be kept separately during early stopping.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor, nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"silu": nn.SiLU, "relu": nn.ReLU}


class EnsembleLinear(nn.Module):
    """``y_e = x_e W_e + b_e`` for each member e; ``x`` (E, B, in) -> (E, B, out).

    Initialised like :class:`torch.nn.Linear`, W_e and b_e ~ U(−1/√in, 1/√in), from the global torch RNG.
    """

    def __init__(self, members: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(in_dim)
        self.weight = nn.Parameter(torch.empty(members, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(members, 1, out_dim).uniform_(-bound, bound))

    def forward(self, x: Tensor) -> Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class EnsembleMLP(nn.Module):
    """``members`` independent MLPs ``in_dim -> [width] * depth -> out_dim`` with ``activation`` between layers."""

    def __init__(self, members: int, in_dim: int, out_dim: int, width: int, depth: int, activation: str) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}.")
        self.members, self.in_dim, self.out_dim = members, in_dim, out_dim
        sizes = [in_dim, *[width] * depth, out_dim]
        self.layers = nn.ModuleList(EnsembleLinear(members, a, b) for a, b in itertools.pairwise(sizes))
        self.activation = ACTIVATIONS[activation]()

    def forward(self, x: Tensor) -> Tensor:
        """``x`` (E, B, in_dim) -> (E, B, out_dim)."""
        for layer in self.layers[:-1]:
            x = self.activation(layer(x))
        return self.layers[-1](x)

    def parameter_groups(self, weight_decay: tuple[float, ...]) -> list[dict]:
        """Adam parameter groups: each layer's weight with its L2 coefficient, the biases without."""
        if len(weight_decay) != len(self.layers):
            raise ValueError(f"need one weight decay per layer ({len(self.layers)}), got {len(weight_decay)}.")
        layers = zip(self.layers, weight_decay, strict=True)
        groups = [{"params": [layer.weight], "weight_decay": d} for layer, d in layers]
        return [*groups, {"params": [layer.bias for layer in self.layers], "weight_decay": 0.0}]
