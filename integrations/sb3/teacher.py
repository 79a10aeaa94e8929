"""The SAC teacher behind the dataset forge: an SB3 SAC run with evaluated actor checkpoints.

D4RL built its locomotion datasets from one SAC run per environment (Fu et al. 2020, "D4RL: Datasets for Deep
Data-Driven Reinforcement Learning"): ``medium`` rolls out a policy stopped early, ``medium-replay`` is the
replay buffer up to that point and ``expert`` rolls out the trained policy. This module trains that run and
returns what the forge needs from it; it knows nothing of Minari or of the dataset levels.
"""

from __future__ import annotations

import dataclasses
import time

import gymnasium as gym
import numpy as np
import torch
from dyaug.integrations.sb3.convert import transitions_from_sb3
from stable_baselines3 import SAC
from stable_baselines3.common.callbacks import BaseCallback
from tqdm.auto import tqdm

from dyaug.data import Transitions


@dataclasses.dataclass(frozen=True)
class ActorCheckpoint:
    """One evaluated snapshot of the SAC actor (``state`` holds ``policy.actor``'s weights as arrays)."""

    step: int
    mean_return: float
    std_return: float
    state: dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class SACRun:
    """A finished SAC run: its actor checkpoints (in step order) and every transition it collected."""

    env_id: str
    seed: int
    checkpoints: list[ActorCheckpoint]
    replay: Transitions
    seconds: float
    hyperparameters: dict[str, float | int]


class _EvaluateActor(BaseCallback):
    def __init__(self, eval_env: gym.Env, every: int, episodes: int, seed: int, bar: tqdm | None) -> None:
        super().__init__()
        self.eval_env, self.every, self.episodes, self.seed, self.bar = eval_env, every, episodes, seed, bar
        self.checkpoints: list[ActorCheckpoint] = []

    def _on_step(self) -> bool:
        if self.bar is not None:
            self.bar.update(1)
        if self.num_timesteps % self.every == 0:
            returns = evaluate_actor(self.model.policy.actor, self.eval_env, self.episodes, seed=self.seed)
            state = {k: v.detach().cpu().numpy().copy() for k, v in self.model.policy.actor.state_dict().items()}
            self.checkpoints.append(
                ActorCheckpoint(self.num_timesteps, float(np.mean(returns)), float(np.std(returns)), state)
            )
            if self.bar is not None:
                self.bar.set_postfix(eval_return=f"{np.mean(returns):.0f}")
        return True


def train_sac(
    env_id: str,
    *,
    total_steps: int,
    eval_every: int,
    eval_episodes: int = 5,
    learning_starts: int = 5_000,
    seed: int = 0,
    progress: bool = True,
) -> SACRun:
    """Train SB3 SAC (its defaults: MLP 256x256, lr 3e-4, batch 256, UTD 1, auto entropy) on ``env_id``.

    Every ``eval_every`` steps the deterministic actor is evaluated on ``eval_episodes`` episodes of a
    separately seeded environment and its weights kept. The replay buffer holds every step, so
    ``SACRun.replay`` is the whole collected history in time order (actions in environment units).
    """
    if total_steps < eval_every or eval_every < 1:
        raise ValueError(
            f"need 1 <= eval_every <= total_steps, got eval_every={eval_every}, total_steps={total_steps}."
        )
    env, eval_env = gym.make(env_id), gym.make(env_id)
    model = SAC(
        "MlpPolicy",
        env,
        buffer_size=total_steps,
        learning_starts=min(learning_starts, total_steps),
        seed=seed,
        device="cpu",
        verbose=0,
    )
    bar = tqdm(total=total_steps, desc=f"SAC {env_id}", disable=not progress, mininterval=2.0)
    callback = _EvaluateActor(eval_env, eval_every, eval_episodes, seed=seed + 10_000, bar=bar)
    start = time.perf_counter()
    model.learn(total_timesteps=total_steps, callback=callback)
    seconds = time.perf_counter() - start
    bar.close()
    hyper = {
        "total_steps": total_steps,
        "learning_starts": min(learning_starts, total_steps),
        "eval_every": eval_every,
        "eval_episodes": eval_episodes,
        "batch_size": model.batch_size,
        "learning_rate": float(model.learning_rate),
        "gamma": model.gamma,
        "tau": model.tau,
    }
    replay = transitions_from_sb3(model.replay_buffer)
    env.close()
    eval_env.close()
    return SACRun(env_id, seed, callback.checkpoints, replay, seconds, hyper)


def build_actor(env_id: str, state: dict[str, np.ndarray]) -> torch.nn.Module:
    """Rebuild an SB3 SAC actor for ``env_id`` from checkpoint weights (eval mode, on the CPU)."""
    env = gym.make(env_id)
    actor = SAC("MlpPolicy", env, device="cpu", buffer_size=1, learning_starts=0).policy.actor
    env.close()
    actor.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()})
    return actor.eval()


@torch.no_grad()
def actor_actions(
    actor: torch.nn.Module, obs: np.ndarray, action_space: gym.spaces.Box, noise: np.ndarray | None
) -> np.ndarray:
    """Actions of an SB3 SAC actor in environment units: tanh(mu + std * noise), or tanh(mu) without noise."""
    mean, log_std, _ = actor.get_action_dist_params(torch.as_tensor(obs, dtype=torch.float32)[None])
    pre = mean if noise is None else mean + log_std.exp() * torch.as_tensor(noise, dtype=torch.float32)
    scaled = torch.tanh(pre)[0].numpy().astype(np.float64)
    return (action_space.low + 0.5 * (scaled + 1.0) * (action_space.high - action_space.low)).astype(np.float32)


def evaluate_actor(actor: torch.nn.Module, env: gym.Env, episodes: int, *, seed: int) -> list[float]:
    """Undiscounted returns of the deterministic actor over ``episodes`` episodes (seeds ``seed + i``)."""
    returns = []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        done, total = False, 0.0
        while not done:
            obs, reward, terminated, truncated, _ = env.step(actor_actions(actor, obs, env.action_space, None))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return returns
