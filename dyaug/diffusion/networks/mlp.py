"""Diffusion-QL's noise-prediction MLP ``eps(a_i, i, s)`` (Wang, Hunt & Zhou, arXiv 2208.06193), and a fast
inference path for stacks of ``Linear`` and activation layers."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dyaug.diffusion.networks.embeddings import NoiseLevelEmbedding, SinusoidalFeatures, checked_inputs
from dyaug.diffusion.networks.mish import Mish, mish_
from dyaug.validation import check_int

CPU_CHUNK_ROWS = 512
"""Rows per chunk of CPU inference: a 512 x 256 float32 activation (512 KiB) and its temporaries stay in the L2
cache through a whole MLP, where one pass over a large batch streams every layer through memory."""

IN_PLACE_ACTIVATIONS: dict[type[nn.Module], Callable[[Tensor, tuple[Tensor, Tensor]], Tensor]] = {
    Mish: mish_,
    nn.Mish: mish_,
    nn.ReLU: lambda h, scratch: h.relu_(),
}
"""The activation layers :class:`MLPInference` runs, each as ``f(h, scratch)`` overwriting ``h``."""


def runs_fast_inference(x: Tensor) -> bool:
    """Whether a network call on ``x`` may take the inference path: no autograd graph recorded (grad mode off) and
    autocast off on ``x``'s device."""
    return not torch.is_grad_enabled() and not torch.is_autocast_enabled(x.device.type)


def chunk_rows(x: Tensor) -> int:
    """Rows of ``x`` to push through a network at once: :data:`CPU_CHUNK_ROWS` on a CPU, all of them elsewhere."""
    return CPU_CHUNK_ROWS if x.device.type == "cpu" else max(1, x.shape[0])


class Workspace:
    """The memory an :class:`MLPInference` call reuses for every chunk and layer: four ``rows x width`` buffers,
    0 and 1 taking the ``Linear`` outputs in turn, 2 and 3 an activation's temporaries."""

    def __init__(self, rows: int, width: int, like: Tensor) -> None:
        self.flat = [like.new_empty(rows * width) for _ in range(4)]
        self.views: dict[tuple[int, int, int], Tensor] = {}

    def view(self, index: int, rows: int, columns: int) -> Tensor:
        """Buffer ``index`` as a ``(rows, columns)`` tensor."""
        key = (index, rows, columns)
        if key not in self.views:
            self.views[key] = self.flat[index][: rows * columns].view(rows, columns)
        return self.views[key]

    def index_of(self, h: Tensor) -> int:
        """0 or 1 when ``h`` is a view of that output buffer, else -1."""
        return next((i for i in (0, 1) if h.data_ptr() == self.flat[i].data_ptr()), -1)


class MLPInference:
    """Inference through ``layers`` (``nn.Linear`` and :data:`IN_PLACE_ACTIVATIONS`): the same function as
    ``nn.Sequential(*layers)`` up to float rounding, faster on a CPU. Call it with grad mode off; build it for the
    call at hand (it holds views of the weights).

    - rows go through all the layers a chunk of :func:`chunk_rows` at a time, so a chunk's activations stay in the
      L2 cache instead of each layer streaming the whole batch through memory;
    - each ``Linear`` writes ``h Wᵀ + b`` into a :class:`Workspace` buffer and each activation runs in place with
      the workspace's temporaries: no allocation per layer and chunk.
    """

    LAYERS = (nn.Linear, *IN_PLACE_ACTIVATIONS)

    @classmethod
    def supports(cls, layers: Iterable[nn.Module]) -> bool:
        """Whether every layer is an ``nn.Linear`` or one of :data:`IN_PLACE_ACTIVATIONS` (exact types)."""
        return all(type(layer) in cls.LAYERS for layer in layers)

    def __init__(self, layers: Iterable[nn.Module]) -> None:
        if not self.supports(layers):
            unknown = sorted({type(layer).__name__ for layer in layers if type(layer) not in self.LAYERS})
            raise TypeError(
                f"MLPInference runs nn.Linear and {[t.__name__ for t in IN_PLACE_ACTIVATIONS]} layers, got "
                f"{unknown}; call the network itself instead."
            )
        # (Wᵀ, b, None) per Linear, (None, None, f) per activation
        self.plan = [
            (layer.weight.t(), layer.bias, None)
            if isinstance(layer, nn.Linear)
            else (None, None, IN_PLACE_ACTIVATIONS[type(layer)])
            for layer in layers
        ]
        self.width = max((layer.out_features for layer in layers if isinstance(layer, nn.Linear)), default=0)

    def workspace(self, x: Tensor, rows: int) -> Workspace:
        """A workspace for chunks of up to ``rows`` rows of ``x``."""
        return Workspace(rows, max(self.width, x.shape[-1]), x)

    def __call__(self, x: Tensor) -> Tensor:
        """The layers on ``x`` (not modified), a chunk of rows at a time."""
        rows = max(1, min(chunk_rows(x), x.shape[0]))
        workspace = self.workspace(x, rows)
        return torch.cat([self.run_(chunk, workspace).clone() for chunk in x.split(rows)])

    def run_(self, h: Tensor, workspace: Workspace) -> Tensor:
        """The layers on one chunk ``h``, overwritten when it is a workspace buffer. The result is a workspace view,
        valid until the workspace's next use."""
        rows, current = h.shape[0], workspace.index_of(h)
        for weight_t, bias, activation in self.plan:
            if activation is None:
                assert weight_t is not None  # a Linear's entry
                current = 1 if current == 0 else 0
                out = workspace.view(current, rows, weight_t.shape[1])
                h = torch.mm(h, weight_t, out=out) if bias is None else torch.addmm(bias, h, weight_t, out=out)
                continue
            if current < 0:  # the caller's tensor: copy before overwriting
                current = 0
                h = workspace.view(0, rows, h.shape[1]).copy_(h)
            h = activation(h, (workspace.view(2, rows, h.shape[1]), workspace.view(3, rows, h.shape[1])))
        return h


def layers_forward(layers: nn.Sequential, x: Tensor) -> Tensor:
    """``layers(x)``, by :class:`MLPInference` where :func:`runs_fast_inference` and it supports the layers."""
    return MLPInference(layers)(x) if runs_fast_inference(x) and MLPInference.supports(layers) else layers(x)


class DQLMLP(nn.Module):
    """``eps(x, i, cond) = Linear(MLP_3x(Mish ∘ Linear_hidden)([x, e_i, cond]))``.

    The step ``i`` (the discrete VP step index) is embedded as
    ``e_i = Linear_{2t -> t}(Mish(Linear_{t -> 2t}(sinusoidal_t(i))))`` with ``t = t_dim`` (16).

    Inference (:func:`runs_fast_inference`) runs the MLP by :class:`MLPInference`; :meth:`repeated_condition` also
    shares the condition's and the step's part of the first layer between rows. Same function up to float rounding.
    """

    def __init__(self, x_dim: int, cond_dim: int, hidden: int = 256, t_dim: int = 16) -> None:
        super().__init__()
        self.x_dim, self.cond_dim, self.t_dim = x_dim, cond_dim, t_dim
        self.noise_embedding = NoiseLevelEmbedding(SinusoidalFeatures(t_dim), 2 * t_dim, t_dim, Mish)
        self.net = nn.Sequential(
            nn.Linear(x_dim + t_dim + cond_dim, hidden),
            Mish(),
            nn.Linear(hidden, hidden),
            Mish(),
            nn.Linear(hidden, hidden),
            Mish(),
            nn.Linear(hidden, x_dim),
        )

    def forward(self, x: Tensor, noise_level: Tensor, cond: Tensor | None = None) -> Tensor:
        t = checked_inputs("DQLMLP", x, noise_level, cond, x_dim=self.x_dim, cond_dim=self.cond_dim)
        inputs = [x, self.noise_embedding(t)] if cond is None else [x, self.noise_embedding(t), cond]
        return layers_forward(self.net, torch.cat(inputs, dim=-1))

    def repeated_condition(self, cond: Tensor, repeats: int) -> RepeatedConditionDQLMLP:
        """``eps(x, i)`` for rows whose conditions are ``cond.repeat_interleave(repeats, 0)``, one step per call;
        see :class:`RepeatedConditionDQLMLP`."""
        return RepeatedConditionDQLMLP(self, cond, repeats)


class RepeatedConditionDQLMLP:
    """``eps(x, i) = net(x, i, cond.repeat_interleave(repeats, 0))`` of a :class:`DQLMLP`, at one step per call.

    Inference (:func:`runs_fast_inference`) does not build the repeated rows. The first layer splits by input,
    W [x, e_i, c] + b = W_x x + (W_e e_i + W_c c + b): ``W_c c + b`` is computed once per condition at construction,
    ``W_e e_i`` once per call (``noise_level`` must then hold one step index for all rows, as in a reverse chain),
    and each row adds them to its own ``W_x x``; the hidden layers run by :class:`MLPInference`, a chunk of
    conditions (with all their repeats) at a time. The same function up to float rounding. Otherwise (autograd,
    autocast, layers :class:`MLPInference` does not run) it is the network called on the repeated conditions.
    """

    def __init__(self, net: DQLMLP, cond: Tensor, repeats: int) -> None:
        check_int("repeats", repeats, numpy=False)
        if cond.ndim != 2 or cond.shape[1] != net.cond_dim:
            raise ValueError(f"DQLMLP needs cond of shape (B, {net.cond_dim}), got {tuple(cond.shape)}.")
        self.net, self.cond, self.repeats = net, cond, repeats
        self.hidden = MLPInference(cast(nn.Sequential, net.net[1:])) if MLPInference.supports(net.net) else None
        if self.hidden is not None:
            first = cast(nn.Linear, net.net[0])  # DQLMLP's net starts with its first Linear
            with torch.no_grad():
                self.cond_part = F.linear(cond, first.weight[:, net.x_dim + net.t_dim :], first.bias)

    def __call__(self, x: Tensor, noise_level: Tensor, cond: Tensor | None = None) -> Tensor:
        net, repeats, n_cond = self.net, self.repeats, self.cond.shape[0]
        if cond is not None:
            raise ValueError("the condition is given at construction; call with cond=None.")
        if x.shape[0] != n_cond * repeats:
            raise ValueError(f"x must have {n_cond} x {repeats} rows (repeats per condition), got {x.shape[0]}.")
        if self.hidden is None or not runs_fast_inference(x):
            return net(x, noise_level, self.cond.repeat_interleave(repeats, 0))
        t = checked_inputs("DQLMLP", x, noise_level, None, x_dim=net.x_dim, cond_dim=0)
        if t.device.type == "cpu" and not torch.equal(t, t[:1].expand_as(t)):  # a host sync elsewhere: CPU only
            raise ValueError("noise_level must hold one step index for all rows (one reverse step per call).")
        first = cast(nn.Linear, net.net[0])
        w_x, w_step = first.weight[:, : net.x_dim], first.weight[:, net.x_dim : net.x_dim + net.t_dim]
        shared = self.cond_part + F.linear(net.noise_embedding(t[:1]), w_step)  # (B, hidden)
        per_chunk = max(1, chunk_rows(x) // repeats)
        workspace = self.hidden.workspace(x, min(per_chunk, n_cond) * repeats)
        out = torch.empty_like(x)
        for start in range(0, n_cond, per_chunk):
            shared_chunk = shared[start : start + per_chunk]
            rows = slice(start * repeats, (start + shared_chunk.shape[0]) * repeats)
            h = torch.mm(x[rows], w_x.t(), out=workspace.view(0, rows.stop - rows.start, first.out_features))
            h.view(shared_chunk.shape[0], repeats, -1).add_(shared_chunk[:, None])
            out[rows] = self.hidden.run_(h, workspace)
        return out
