"""Teacher policies as plain arrays: an MLP actor the forge rolls out with numpy, whatever library trained it.

The forge's teachers come from SB3 (PyTorch) and SBX (JAX). Their actors are all small MLPs with one of three
heads, so one array format holds them and one numpy forward pass runs them (about 20 µs per observation on one
core, with no framework imported):

- ``"tanh_gaussian"`` (SAC, TQC, CrossQ): a = tanh(μ(s) + σ(s)·ε), log σ(s) clipped to [-20, 2];
- ``"tanh"`` (TD3): a = clip(tanh(μ(s)) + σ·ε, -1, 1) with a fixed exploration σ (``noise_std``);
- ``"gaussian"`` (PPO): a = clip(μ(s) + σ·ε, low, high) with a state-independent σ, on observations normalised
  as SB3's ``VecNormalize`` does, clip((s - mean) / sqrt(var + 1e-8), -c, c).

Without noise (``noise=None``) each head gives its deterministic action. Actions of the squashed heads are
mapped from [-1, 1] to the action bounds, as SB3 does. Batch normalisation in eval mode (CrossQ's actor) is an
affine map per feature and is folded into the following linear layer when the policy is extracted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

Head = Literal["tanh_gaussian", "tanh", "gaussian"]
Activation = Literal["relu", "tanh"]
_LOG_STD_MIN, _LOG_STD_MAX = -20.0, 2.0
_VECNORM_EPS = 1e-8


@dataclasses.dataclass(frozen=True, eq=False)
class MLPPolicy:
    """An MLP actor: hidden layers ``x <- act(x @ W + b)``, then the head (see the module docstring).

    ``log_std`` is a linear layer ``(W, b)`` for ``"tanh_gaussian"``, a vector for ``"gaussian"`` and ``None``
    for ``"tanh"``. ``obs_mean``/``obs_var`` (with ``obs_clip``) normalise observations first when given.
    """

    hidden: tuple[tuple[np.ndarray, np.ndarray], ...]
    mean: tuple[np.ndarray, np.ndarray]
    head: Head
    low: np.ndarray
    high: np.ndarray
    activation: Activation = "relu"
    log_std: tuple[np.ndarray, np.ndarray] | np.ndarray | None = None
    noise_std: float = 0.0
    obs_mean: np.ndarray | None = None
    obs_var: np.ndarray | None = None
    obs_clip: float = 10.0

    def __post_init__(self) -> None:
        if self.head not in ("tanh_gaussian", "tanh", "gaussian"):
            raise ValueError(f"unknown policy head {self.head!r}; choose tanh_gaussian, tanh or gaussian.")
        if self.activation not in ("relu", "tanh"):
            raise ValueError(f"unknown activation {self.activation!r}; choose relu or tanh.")
        if (self.head == "tanh") != (self.log_std is None):
            raise ValueError(f"a {self.head!r} head {'takes no' if self.head == 'tanh' else 'needs a'} log_std.")

    @property
    def act_dim(self) -> int:
        return int(self.mean[1].shape[0])

    def __call__(self, obs: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
        """Actions in environment units for ``obs`` of shape ``(obs_dim,)`` or ``(B, obs_dim)``; ``noise`` is
        standard normal of the actions' shape, ``None`` for the deterministic action."""
        x = np.asarray(obs, dtype=np.float32)
        if self.obs_mean is not None:
            assert self.obs_var is not None  # obs_mean and obs_var come together (VecNormalize statistics)
            x = np.clip((x - self.obs_mean) / np.sqrt(self.obs_var + _VECNORM_EPS), -self.obs_clip, self.obs_clip)
        for w, b in self.hidden:
            x = x @ w + b
            x = np.maximum(x, 0.0) if self.activation == "relu" else np.tanh(x)
        mu = x @ self.mean[0] + self.mean[1]
        if self.head == "tanh_gaussian":
            if noise is not None:
                w, b = self.log_std  # type: ignore[misc]
                mu = mu + np.exp(np.clip(x @ w + b, _LOG_STD_MIN, _LOG_STD_MAX)) * noise
            return self._unsquash(np.tanh(mu))
        if self.head == "tanh":
            u = np.tanh(mu)
            return self._unsquash(u if noise is None else np.clip(u + self.noise_std * noise, -1.0, 1.0))
        if noise is not None:
            log_std = self.log_std
            assert log_std is not None and not isinstance(log_std, tuple)  # a "gaussian" head: a vector
            mu = mu + np.exp(log_std) * noise
        return np.clip(mu, self.low, self.high).astype(np.float32)

    def _unsquash(self, u: np.ndarray) -> np.ndarray:
        return (self.low + 0.5 * (u + 1.0) * (self.high - self.low)).astype(np.float32)

    # ------------------------------------------------------------------------------------------ arrays
    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """``(arrays, meta)``: everything needed to rebuild the policy, for a safetensors checkpoint."""
        arrays: dict[str, np.ndarray] = {"mean/W": self.mean[0], "mean/b": self.mean[1]}
        arrays.update({"low": self.low, "high": self.high})
        for i, (w, b) in enumerate(self.hidden):
            arrays[f"hidden{i}/W"], arrays[f"hidden{i}/b"] = w, b
        if isinstance(self.log_std, tuple):
            arrays["log_std/W"], arrays["log_std/b"] = self.log_std
        elif self.log_std is not None:
            arrays["log_std"] = self.log_std
        if self.obs_mean is not None:
            arrays["obs_mean"], arrays["obs_var"] = self.obs_mean, self.obs_var  # type: ignore[assignment]
        meta = {
            "head": self.head,
            "activation": self.activation,
            "n_hidden": len(self.hidden),
            "noise_std": self.noise_std,
            "obs_clip": self.obs_clip,
        }
        return arrays, meta

    @classmethod
    def from_state(cls, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> MLPPolicy:
        a = {k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()}
        log_std = (a["log_std/W"], a["log_std/b"]) if "log_std/W" in a else a.get("log_std")
        return cls(
            hidden=tuple((a[f"hidden{i}/W"], a[f"hidden{i}/b"]) for i in range(int(meta["n_hidden"]))),
            mean=(a["mean/W"], a["mean/b"]),
            head=meta["head"],
            low=a["low"],
            high=a["high"],
            activation=meta["activation"],
            log_std=log_std,
            noise_std=float(meta["noise_std"]),
            obs_mean=a.get("obs_mean"),
            obs_var=a.get("obs_var"),
            obs_clip=float(meta["obs_clip"]),
        )


# ----------------------------------------------------------------------------------------------- extraction
def extract_policy(model: Any, *, noise_std: float = 0.0, obs_rms: Any = None, obs_clip: float = 10.0) -> MLPPolicy:
    """The actor of a trained SB3 (SAC, TD3, TQC, PPO) or SBX (SAC, TD3, TQC, CrossQ) model as an
    :class:`MLPPolicy`. ``noise_std``: TD3's exploration noise; ``obs_rms``: a ``VecNormalize``'s
    ``obs_rms`` when the model trained on normalised observations."""
    space = model.action_space
    low, high = space.low.astype(np.float32), space.high.astype(np.float32)
    name = type(model).__name__
    is_jax = type(model).__module__.startswith("sbx")
    if is_jax:
        layers = _sbx_layers(model)
    elif name in ("SAC", "TQC"):
        actor = model.policy.actor
        layers = [*_torch_linears(actor.latent_pi), _torch_linear(actor.mu), _torch_linear(actor.log_std)]
    elif name == "TD3":
        layers = _torch_linears(model.policy.actor.mu)
    elif name == "PPO":
        layers = [*_torch_linears(model.policy.mlp_extractor.policy_net), _torch_linear(model.policy.action_net)]
    else:
        raise ValueError(f"the forge cannot read the actor of {type(model).__module__}.{name}.")

    activation = _activation(model)
    if name == "PPO":
        log_std = model.policy.log_std.detach().cpu().numpy().astype(np.float32)
        policy = MLPPolicy(tuple(layers[:-1]), layers[-1], "gaussian", low, high, activation, log_std)
    elif name == "TD3":
        policy = MLPPolicy(tuple(layers[:-1]), layers[-1], "tanh", low, high, activation, noise_std=noise_std)
    else:
        policy = MLPPolicy(tuple(layers[:-2]), layers[-2], "tanh_gaussian", low, high, activation, layers[-1])
    if obs_rms is not None:
        policy = dataclasses.replace(
            policy,
            obs_mean=np.asarray(obs_rms.mean, np.float32),
            obs_var=np.asarray(obs_rms.var, np.float32),
            obs_clip=obs_clip,
        )
    return policy


def _activation(model: Any) -> Activation:
    fn = getattr(model.policy, "activation_fn", None)
    if fn is None:  # SBX keeps it on the actor module
        fn = getattr(model.policy.actor, "activation_fn", None)
    label = getattr(fn, "__name__", type(fn).__name__).lower()
    if "relu" in label:
        return "relu"
    if "tanh" in label:
        return "tanh"
    raise ValueError(f"the forge's numpy policy supports ReLU and tanh activations, not {fn!r}.")


def _torch_linear(layer: Any) -> tuple[np.ndarray, np.ndarray]:
    return (
        layer.weight.detach().cpu().numpy().T.astype(np.float32).copy(),
        layer.bias.detach().cpu().numpy().astype(np.float32).copy(),
    )


def _torch_linears(seq: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    import torch

    return [_torch_linear(m) for m in seq if isinstance(m, torch.nn.Linear)]


def _sbx_layers(model: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    """Dense layers of an SBX actor in order, with eval-mode batch renormalisation folded into the layer after
    it: Dense(s x + β - s m) = x @ (diag(s) W) + (β - s m) @ W + b with s = γ / sqrt(v + ε)."""
    state = model.policy.actor_state
    params = state.params.get("params", state.params)
    stats = getattr(state, "batch_stats", None) or {}
    dense = sorted((k for k in params if k.startswith("Dense_")), key=lambda k: int(k.split("_")[1]))
    norms = sorted((k for k in params if k.startswith("BatchRenorm_")), key=lambda k: int(k.split("_")[1]))
    layers = [(np.asarray(params[k]["kernel"], np.float64), np.asarray(params[k]["bias"], np.float64)) for k in dense]
    if not getattr(model.policy.actor, "use_batch_norm", True):
        norms = []  # CrossQ without actor normalisation keeps a dummy layer that it never applies
    if norms:
        eps = float(getattr(model.policy.actor, "epsilon", 1e-3))
        n_hidden = len(layers) - 2  # the two heads read the last normalised features
        for i, key in enumerate(norms):
            gamma, beta = np.asarray(params[key]["scale"], np.float64), np.asarray(params[key]["bias"], np.float64)
            mean = np.asarray(stats[key]["mean"], np.float64)
            var = np.asarray(stats[key]["var"], np.float64)
            scale = gamma / np.sqrt(var + eps)
            shift = beta - scale * mean
            for j in range(i, i + 1) if i < n_hidden else range(n_hidden, len(layers)):
                w, b = layers[j]
                layers[j] = (scale[:, None] * w, b + shift @ w)
    return [(w.astype(np.float32), b.astype(np.float32)) for w, b in layers]
