"""The forge's teachers: RL runs whose evaluated checkpoints and collected data become the dataset levels.

D4RL built its locomotion datasets from one SAC run per environment (Fu et al. 2020): ``medium`` rolls out a
policy stopped early, ``medium-replay`` is the data collected up to that point and ``expert`` rolls out the
trained policy. Any learner can play that part; which one reaches expert level soonest on a given machine is
measured by ``benchmarks/forge_teachers.py``. A :class:`Teacher` names an algorithm of Stable-Baselines3
(PyTorch; TQC and CrossQ from sb3-contrib) or of SBX (the JAX implementations of the same family, the
``dyaug[forge]`` extra) and its settings. :func:`train_teacher` runs it, evaluates the deterministic actor every
``eval_every`` environment steps and keeps each evaluated actor as an array :class:`MLPPolicy`, so rolling a
level out needs neither the library nor the framework that trained it.
"""

from __future__ import annotations

import dataclasses
import importlib
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

from dyaug.data import Transitions
from dyaug.datasets.policy import MLPPolicy, extract_policy

_LIBRARIES = {"sb3": "stable_baselines3", "sb3-contrib": "sb3_contrib", "sbx": "sbx"}
_EXTRA = {"sb3": "stable-baselines3", "sb3-contrib": "dyaug[forge]", "sbx": "dyaug[forge]"}


@dataclasses.dataclass(frozen=True)
class Teacher:
    """One learner the forge can train.

    Attributes:
        name: the forge's name for it (``"sbx-td3"``); part of every cache key and provenance record.
        library: ``"sb3"``, ``"sb3-contrib"`` or ``"sbx"``.
        algorithm: the class name in that library (``"SAC"``, ``"TD3"``, ``"TQC"``, ``"CrossQ"``, ``"PPO"``).
        settings: keyword arguments of the algorithm, JSON values only; ``policy_kwargs.activation_fn`` is
            ``"relu"`` or ``"tanh"``.
        n_envs: environments stepped together (on-policy learners).
        normalize: wrap the environments in SB3's ``VecNormalize`` (observations and rewards).
        action_noise: standard deviation of TD3's Gaussian exploration noise, in [-1, 1] action units; the
            forge's stochastic rollouts of a TD3 actor use the same noise.
    """

    name: str
    library: str
    algorithm: str
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    n_envs: int = 1
    normalize: bool = False
    action_noise: float = 0.0

    def __post_init__(self) -> None:
        if self.library not in _LIBRARIES:
            raise ValueError(f"unknown teacher library {self.library!r}; choose one of {', '.join(_LIBRARIES)}.")
        if self.n_envs < 1:
            raise ValueError(f"n_envs must be at least 1, got {self.n_envs}.")

    @property
    def on_policy(self) -> bool:
        return self.algorithm == "PPO"

    def describe(self) -> dict[str, Any]:
        """Everything that changes a run, as JSON values: the teacher's part of the forge's cache key."""
        return {**dataclasses.asdict(self), "settings": dict(self.settings)}

    def algorithm_class(self) -> type:
        module = _LIBRARIES[self.library]
        try:
            lib = importlib.import_module(module)
        except ImportError as err:
            raise ImportError(
                f"the forge teacher {self.name!r} needs {module}, which is not installed: "
                f"pip install '{_EXTRA[self.library]}'."
            ) from err
        return getattr(lib, self.algorithm)


_ZOO_OFF_POLICY = {"learning_starts": 10_000}
# RL-Zoo settings for the MuJoCo tasks (rl-baselines3-zoo hyperparams/*.yml) where they exist; PPO is scaled
# to 8 environments (the Zoo's Hopper PPO steps one), with larger minibatches to keep its updates cheap.
TEACHERS: dict[str, Teacher] = {
    t.name: t
    for t in (
        Teacher("sac", "sb3", "SAC", _ZOO_OFF_POLICY),
        Teacher("tqc", "sb3-contrib", "TQC", _ZOO_OFF_POLICY),
        Teacher("crossq", "sb3-contrib", "CrossQ", {"learning_starts": 5_000}),
        Teacher(
            "td3",
            "sb3",
            "TD3",
            {**_ZOO_OFF_POLICY, "learning_rate": 1e-3, "policy_kwargs": {"net_arch": [400, 300]}},
            action_noise=0.1,
        ),
        Teacher(
            "ppo",
            "sb3",
            "PPO",
            {
                "n_steps": 512,
                "batch_size": 512,
                "n_epochs": 5,
                "learning_rate": 3e-4,
                "gamma": 0.99,
                "gae_lambda": 0.95,
                "clip_range": 0.2,
                "ent_coef": 0.0,
                "max_grad_norm": 0.5,
                "policy_kwargs": {
                    "net_arch": {"pi": [256, 256], "vf": [256, 256]},
                    "activation_fn": "tanh",
                    "log_std_init": -1.0,
                },
            },
            n_envs=8,
            normalize=True,
        ),
        Teacher("sbx-sac", "sbx", "SAC", _ZOO_OFF_POLICY),
        Teacher("sbx-tqc", "sbx", "TQC", _ZOO_OFF_POLICY),
        Teacher("sbx-crossq", "sbx", "CrossQ", {"learning_starts": 5_000}),
        Teacher(
            "sbx-td3",
            "sbx",
            "TD3",
            {**_ZOO_OFF_POLICY, "learning_rate": 1e-3, "policy_kwargs": {"net_arch": [400, 300]}},
            action_noise=0.1,
        ),
        # TD3 with the minibatches of Fujimoto et al. (2018) (100) and the 256x256 networks of their later code:
        # 3.6x fewer FLOPs per update than the Zoo's 400x300 at batch 256
        Teacher(
            "sbx-td3-b100",
            "sbx",
            "TD3",
            {**_ZOO_OFF_POLICY, "learning_rate": 1e-3, "batch_size": 100, "policy_kwargs": {"net_arch": [256, 256]}},
            action_noise=0.1,
        ),
    )
}


def get_teacher(teacher: str | Teacher) -> Teacher:
    if isinstance(teacher, Teacher):
        return teacher
    if teacher not in TEACHERS:
        raise ValueError(f"unknown forge teacher {teacher!r}; choose one of {', '.join(TEACHERS)}.")
    return TEACHERS[teacher]


# ------------------------------------------------------------------------------------------------ a run
@dataclasses.dataclass(frozen=True)
class PolicyCheckpoint:
    """One evaluated actor: after ``step`` environment steps, ``seconds`` of training wall time and
    ``cpu_seconds`` of the process's CPU time (evaluations not counted in either), the deterministic ``policy``
    returned ``mean_return`` ± ``std_return``. With one thread, CPU time is the wall time the run would take on
    an idle core, whatever else shared the machine."""

    step: int
    seconds: float
    cpu_seconds: float
    mean_return: float
    std_return: float
    policy: MLPPolicy | None


@dataclasses.dataclass(frozen=True)
class TeacherRun:
    """A finished teacher run: its checkpoints in step order and, when recorded, every transition it collected.

    ``replay`` holds each environment's stream in time order, one stream after the other; ``replay_step[i]``
    is the number of environment steps the run had taken when row ``i`` was collected.
    """

    env_id: str
    seed: int
    teacher: dict[str, Any]
    checkpoints: list[PolicyCheckpoint]
    replay: Transitions | None
    replay_step: np.ndarray | None
    seconds: float
    steps: int

    def replay_until(self, step: int) -> Transitions:
        """The data collected before environment step ``step``, each environment's last episode closed as a
        timeout where the cut falls inside it."""
        if self.replay is None or self.replay_step is None:
            raise ValueError("this teacher run did not record its transitions; train it with record=True.")
        keep = self.replay_step < step
        data = self.replay[keep]
        ends = np.flatnonzero(np.diff(self._stream[keep], append=-1) != 0)  # last row of each stream
        timeouts = data.timeouts.copy()
        timeouts[ends] = np.maximum(timeouts[ends], 1.0 - data.terminals[ends])
        return data.replace(timeouts=timeouts)

    @property
    def _stream(self) -> np.ndarray:
        # streams are stored one after the other and each starts where replay_step drops back
        assert self.replay_step is not None
        return np.concatenate([[0], np.cumsum(np.diff(self.replay_step) < 0)])

    # ----------------------------------------------------------------------------------- persistence
    def save(self, path: str | Path, keep_until: int | None = None) -> Path:
        """One atomic safetensors file; ``keep_until``: keep only the transitions collected before that step."""
        import torch

        from dyaug.persistence import save_checkpoint

        tensors: dict[str, Any] = {}
        metas = []
        for i, c in enumerate(self.checkpoints):
            meta: dict[str, Any] = {
                "step": c.step,
                "seconds": c.seconds,
                "cpu_seconds": c.cpu_seconds,
                "mean_return": c.mean_return,
                "std_return": c.std_return,
            }
            if c.policy is not None:
                arrays, meta["policy"] = c.policy.state()
                tensors.update({f"ckpt{i}/{k}": torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()})
            metas.append(meta)
        if self.replay is not None and self.replay_step is not None:
            kept = self.replay_step < (np.inf if keep_until is None else keep_until)
            replay = self.replay if keep_until is None else self.replay_until(keep_until)
            tensors.update({f"replay/{k}": torch.from_numpy(np.array(v)) for k, v in _fields(replay)})
            tensors["replay_step"] = torch.from_numpy(np.asarray(self.replay_step[kept], np.int64))
        meta = {
            "kind": "forge-teacher-run",
            "env_id": self.env_id,
            "seed": self.seed,
            "teacher": self.teacher,
            "seconds": self.seconds,
            "steps": self.steps,
            "checkpoints": metas,
        }
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return save_checkpoint(path, tensors, meta)

    @classmethod
    def load(cls, path: str | Path) -> TeacherRun:
        from dyaug.persistence import load_checkpoint

        tensors, meta = load_checkpoint(path, kind="forge-teacher-run")
        arrays = {k: v.numpy() for k, v in tensors.items()}
        checkpoints = []
        for i, c in enumerate(meta["checkpoints"]):
            prefix = f"ckpt{i}/"
            policy = None
            if "policy" in c:
                own = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
                policy = MLPPolicy.from_state(own, c["policy"])
            checkpoints.append(
                PolicyCheckpoint(c["step"], c["seconds"], c["cpu_seconds"], c["mean_return"], c["std_return"], policy)
            )
        replay_fields = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("replay/")}
        replay = Transitions(**replay_fields) if replay_fields else None
        return cls(
            meta["env_id"],
            meta["seed"],
            meta["teacher"],
            checkpoints,
            replay,
            arrays.get("replay_step"),
            meta["seconds"],
            meta["steps"],
        )


# ------------------------------------------------------------------------------------------- training
def train_teacher(
    env_id: str,
    teacher: str | Teacher,
    *,
    total_steps: int,
    eval_every: int,
    eval_episodes: int = 5,
    seed: int = 0,
    record: bool = True,
    time_limit: float | None = None,
    progress: bool = True,
) -> TeacherRun:
    """Train ``teacher`` on ``env_id`` for ``total_steps`` environment steps (or until ``time_limit`` seconds of
    training CPU time, evaluations not counted), evaluating the deterministic actor on ``eval_episodes`` episodes
    (seeds ``seed + 10_000 + i``) every ``eval_every`` steps.

    With ``record`` every collected transition is kept in environment units (actions unscaled, observations
    and rewards never normalised), whatever wrappers the learner trains through.
    """
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.vec_env import VecNormalize
    from tqdm.auto import tqdm

    spec = get_teacher(teacher)
    if not 1 <= eval_every <= total_steps:
        raise ValueError(
            f"need 1 <= eval_every <= total_steps, got eval_every={eval_every}, total_steps={total_steps}."
        )
    overshoot = spec.n_envs * int(spec.settings.get("n_steps", 1))  # on-policy learners finish their rollout
    log = _Log(total_steps + overshoot if record else 0)
    model, venv = make_learner(env_id, spec, seed=seed, buffer_size=total_steps, log=log)

    eval_env = gym.make(env_id)
    bar = tqdm(total=total_steps, desc=f"{spec.name} {env_id}", disable=not progress, mininterval=2.0)

    class Checkpoints(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.checkpoints: list[PolicyCheckpoint] = []
            self.next_eval, self.clock = eval_every, _TrainingClock()

        def _on_training_start(self) -> None:
            self.clock.start()

        def _on_step(self) -> bool:
            bar.n = min(self.num_timesteps, total_steps)
            bar.update(0)
            if self.num_timesteps >= self.next_eval:
                self.next_eval += eval_every
                self.clock.stop()
                obs_rms = venv.obs_rms if isinstance(venv, VecNormalize) else None
                policy = extract_policy(model, noise_std=spec.action_noise, obs_rms=obs_rms)
                returns = evaluate_policy(policy, eval_env, eval_episodes, seed=seed + 10_000)
                mean, std = float(np.mean(returns)), float(np.std(returns))
                self.checkpoints.append(
                    PolicyCheckpoint(self.num_timesteps, self.clock.wall, self.clock.cpu, mean, std, policy)
                )
                bar.set_postfix(eval_return=f"{mean:.0f}")
                self.clock.start()
            return time_limit is None or self.clock.read()[1] < time_limit

    callback = Checkpoints()
    model.learn(total_timesteps=total_steps, callback=callback)
    callback.clock.stop()
    seconds = callback.clock.wall
    bar.close()
    venv.close()
    eval_env.close()
    replay, replay_step = log.transitions() if record else (None, None)
    return TeacherRun(
        env_id, seed, spec.describe(), callback.checkpoints, replay, replay_step, seconds, int(model.num_timesteps)
    )


def make_learner(
    env_id: str, teacher: str | Teacher, *, seed: int, buffer_size: int, log: _Log | None = None
) -> tuple[Any, Any]:
    """``(model, vec_env)``: the teacher's algorithm on ``env_id`` (``VecNormalize`` outermost when the teacher
    normalises), every environment recording into ``log`` when given."""
    from stable_baselines3.common.noise import NormalActionNoise
    from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecNormalize

    spec = get_teacher(teacher)
    algorithm = spec.algorithm_class()
    log = log if log is not None else _Log(0)
    venv: VecEnv = DummyVecEnv([_recording_env(env_id, log, i) for i in range(spec.n_envs)])
    if spec.normalize:
        venv = VecNormalize(venv, gamma=float(spec.settings.get("gamma", 0.99)))
    kwargs = _plain_to_library(dict(spec.settings), spec.library)
    if spec.on_policy:
        kwargs.pop("learning_starts", None)
    else:
        kwargs.setdefault("buffer_size", buffer_size)
        kwargs["learning_starts"] = min(int(kwargs.get("learning_starts", 100)), buffer_size)
    if spec.action_noise:
        assert venv.action_space.shape is not None  # a Box: the forge's tasks have continuous actions
        n = venv.action_space.shape[0]
        kwargs["action_noise"] = NormalActionNoise(np.zeros(n), spec.action_noise * np.ones(n))
    if spec.library != "sbx":
        kwargs["device"] = "cpu"
    return algorithm("MlpPolicy", venv, seed=seed, verbose=0, **kwargs), venv


def evaluate_policy(policy: Callable[..., np.ndarray], env: gym.Env, episodes: int, *, seed: int) -> list[float]:
    """Undiscounted returns of the deterministic ``policy(obs)`` over ``episodes`` episodes (seeds ``seed + i``)."""
    returns = []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        done, total = False, 0.0
        while not done:
            obs, reward, terminated, truncated, _ = env.step(policy(obs))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return returns


def _plain_to_library(settings: dict[str, Any], library: str) -> dict[str, Any]:
    """JSON settings to the algorithm's keyword arguments: activation names become the framework's functions."""
    pk = dict(settings.get("policy_kwargs", {}))
    name = pk.get("activation_fn")
    if name is not None:
        if library == "sbx":
            import flax.linen as fnn

            pk["activation_fn"] = {"relu": fnn.relu, "tanh": fnn.tanh}[name]
        else:
            import torch

            pk["activation_fn"] = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh}[name]
    if pk:
        settings["policy_kwargs"] = pk
    return settings


class _TrainingClock:
    """Wall and process CPU seconds of training, summed over the stretches between ``start`` and ``stop``."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0
        self._mark: tuple[float, float] | None = None

    def start(self) -> None:
        self._mark = (time.perf_counter(), time.process_time())

    def stop(self) -> None:
        self.wall, self.cpu = self.read()
        self._mark = None

    def read(self) -> tuple[float, float]:
        if self._mark is None:
            return self.wall, self.cpu
        return self.wall + time.perf_counter() - self._mark[0], self.cpu + time.process_time() - self._mark[1]


# ------------------------------------------------------------------------------------------- recording
class _Log:
    """Preallocated arrays that every environment's recorder appends to, with the global step of each row."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.n, self.step = capacity, 0, 0
        self.rows: dict[str, np.ndarray] | None = None
        self.env_index = np.zeros(capacity, np.int64)
        self.at_step = np.zeros(capacity, np.int64)

    def add(
        self,
        env_index: int,
        obs: np.ndarray,
        action: np.ndarray,
        reward: SupportsFloat,
        nxt: np.ndarray,
        terminated: bool,
        truncated: bool,
    ) -> None:
        if self.capacity and self.n < self.capacity:
            if self.rows is None:
                self.rows = {
                    "observations": np.zeros((self.capacity, obs.shape[0]), np.float32),
                    "actions": np.zeros((self.capacity, action.shape[0]), np.float32),
                    "rewards": np.zeros(self.capacity, np.float32),
                    "next_observations": np.zeros((self.capacity, obs.shape[0]), np.float32),
                    "terminals": np.zeros(self.capacity, np.float32),
                    "timeouts": np.zeros(self.capacity, np.float32),
                }
            r, i = self.rows, self.n
            r["observations"][i], r["actions"][i], r["rewards"][i] = obs, action, reward
            r["next_observations"][i], r["terminals"][i], r["timeouts"][i] = nxt, terminated, truncated
            self.env_index[i], self.at_step[i] = env_index, self.step
            self.n += 1
        self.step += 1

    def transitions(self) -> tuple[Transitions, np.ndarray]:
        """Each environment's rows in time order, environment after environment; the last row of each stream
        closed as a timeout when the run stopped inside an episode."""
        assert self.rows is not None, "no transition was recorded"
        order = np.lexsort((np.arange(self.n), self.env_index[: self.n]))
        data = Transitions(**{k: v[: self.n][order] for k, v in self.rows.items()})
        steps = self.at_step[: self.n][order]
        last = np.flatnonzero(np.diff(self.env_index[: self.n][order], append=-1) != 0)
        timeouts = data.timeouts.copy()
        timeouts[last] = np.maximum(timeouts[last], 1.0 - data.terminals[last])
        return data.replace(timeouts=timeouts), steps


def _fields(data: Transitions) -> list[tuple[str, np.ndarray]]:
    return [(k, v) for k, v in data.as_dict().items() if v is not None]


def _recording_env(env_id: str, log: _Log, index: int) -> Callable[[], gym.Env]:
    class Recorder(gym.Wrapper):
        """Records (s, a, r, s', terminated, truncated) in environment units as the learner steps."""

        def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict]:
            obs, info = self.env.reset(**kwargs)
            self.obs = obs
            return obs, info

        def step(self, action: np.ndarray) -> tuple:
            nxt, reward, terminated, truncated, info = self.env.step(action)
            log.add(index, self.obs, np.asarray(action), reward, nxt, terminated, truncated)
            self.obs = nxt
            return nxt, reward, terminated, truncated, info

    return lambda: Recorder(gym.make(env_id))
