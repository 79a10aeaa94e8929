"""``SyntheticReplayBuffer``: a d3rlpy 2.8 replay buffer that mixes real and synthetic transitions.

SynthER (Lu et al. 2023, "Synthetic Experience Replay") trains offline agents on generated transitions
(offline: synthetic only, ``real_ratio=0``) or on batches mixing both. d3rlpy's own buffers build every
batch one transition at a time in Python; this one keeps both sets as flat float32 tables and draws a
batch with two vectorised gathers (over 20x faster at batch 256, see ``benchmarks/replay_buffer_speed.py``).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

import numpy as np
from d3rlpy.dataset import (
    BasicTransitionPicker,
    DatasetInfo,
    EpisodeBase,
    ReplayBufferBase,
    Transition,
    TransitionMiniBatch,
)
from d3rlpy.dataset.buffers import BufferProtocol
from d3rlpy.dataset.trajectory_slicers import TrajectorySlicerProtocol
from d3rlpy.dataset.transition_pickers import TransitionPickerProtocol
from dyaug.integrations.d3rlpy.convert import transitions_from_d3rlpy
from dyaug.integrations.mixing import RealRatioMixin, batch_split, check_real_ratio, check_synthetic

from dyaug.data.shards import ShardedTransitions
from dyaug.data.transitions import Transitions

__all__ = ["SyntheticReplayBuffer"]

_ONLINE_HINT = (
    "SyntheticReplayBuffer never modifies its real buffer: append to the real buffer itself and wrap it "
    "again (SyntheticReplayBuffer(real_buffer, synthetic)); for online SynthER use "
    "dyaug.integrations.sb3.SyntheticReplayBuffer with SynthERCallback."
)


class SyntheticReplayBuffer(RealRatioMixin, ReplayBufferBase):
    """A d3rlpy ``ReplayBufferBase`` whose batches hold ``round(real_ratio · B)`` real rows, then synthetic ones.

    ``real_ratio=0`` is SynthER's offline mode (real data replaced by synthetic data), ``real_ratio=1`` trains
    on the real data only. Every d3rlpy Q-learning algorithm's ``fit()`` accepts it.

    What comes from the real buffer, unchanged: ``episodes``, ``size()``, ``buffer``, ``transition_count``,
    ``dataset_info``, ``transition_picker``, ``trajectory_slicer`` and ``sample_transition`` (``fit()`` infers
    the observation shape from it), so d3rlpy fits its observation, action and reward scalers on real data
    only. The real buffer is read once, at construction, into a flat table (one float32 copy of its
    transitions) and never modified.

    Batch rows:

    - real rows are exactly what d3rlpy's ``BasicTransitionPicker`` returns, so algorithms see the same real
      data as without augmentation: at terminal steps s' and a' are zeros (d3rlpy's convention, even where
      the buffer stores the true s'; targets use ``(1 − terminal) · γ · Q(s', a')``, so they do not depend
      on it); elsewhere a' is the next action of the episode (ReBRAC's critic reads ``batch.next_actions``);
    - synthetic rows are the given ``Transitions`` as they are (terminal = ``terminals``, timeouts ignored).
      Their a' is ``Transitions.next_actions``; without it (SynthER does not model a') it is zero and one
      ``UserWarning`` says so: algorithms that read a' (ReBRAC) then see a' = 0 on synthetic rows;
    - ``intervals`` are 1; real rows come first. Indices are drawn with ``np.random.randint``, the RNG
      d3rlpy seeds in ``d3rlpy.seed``: the same seed gives the same batches.

    Batches carry no per-transition ``Transition`` objects, so algorithms that need returns-to-go (CalQL)
    raise when they read them. Appending (``append``, ``append_episode``, ``clip_episode``, i.e.
    ``fit_online``), trajectory sampling (transformer algorithms) and ``dump``/``load`` raise
    ``NotImplementedError``: synthetic transitions have no episodes.

    ``len(buffer)`` counts every row a batch can draw from (real + synthetic); ``transition_count`` counts the
    real ones, like ``buffer`` and ``episodes`` that d3rlpy pairs it with.
    """

    def __init__(self, real_buffer: ReplayBufferBase, synthetic: Transitions, real_ratio: float = 0.5) -> None:
        if isinstance(real_buffer, SyntheticReplayBuffer):
            raise TypeError(
                "real_buffer is already a SyntheticReplayBuffer; call its set_synthetic() to change the "
                "synthetic data instead of nesting buffers."
            )
        if not isinstance(real_buffer, ReplayBufferBase):
            raise TypeError(
                f"real_buffer must be a d3rlpy ReplayBuffer or MDPDataset, got {type(real_buffer).__name__}."
            )
        if type(real_buffer.transition_picker) is not BasicTransitionPicker:
            raise ValueError(
                f"the real buffer uses {type(real_buffer.transition_picker).__name__}, but "
                "SyntheticReplayBuffer samples one-step transitions like d3rlpy's BasicTransitionPicker; build "
                "the real buffer with the default transition picker."
            )
        self._real_buffer = real_buffer
        self._real_ratio = check_real_ratio(real_ratio)
        self._real_rows = _real_table(real_buffer)
        self._obs_dim = real_buffer.dataset_info.observation_signature.shape[0][0]
        self._act_dim = real_buffer.dataset_info.action_size
        self._warned_missing_next_actions = False
        self._install(synthetic)

    # ------------------------------------------------------------------ synthetic data
    def set_synthetic(self, transitions: Transitions | ShardedTransitions | str | Path) -> None:
        """Replace the synthetic set (e.g. after regenerating it); the next batch draws from the new one. A set on
        disk (:func:`dyaug.data.shards.write_shards`) is read, checksums checked."""
        self._install(transitions)

    def _install(self, transitions: Transitions | ShardedTransitions | str | Path) -> None:
        # Called from __init__ and set_synthetic only: stacklevel 3 points warnings at their caller.
        transitions = check_synthetic(transitions, self._obs_dim, self._act_dim)
        if transitions.next_actions is None and self._real_ratio < 1.0 and not self._warned_missing_next_actions:
            self._warned_missing_next_actions = True
            warnings.warn(
                "the synthetic Transitions have no next_actions, so synthetic rows get a' = 0 in "
                "batch.next_actions; algorithms that read a' (ReBRAC) see zeros there. Pass Transitions with "
                "next_actions to avoid it.",
                UserWarning,
                stacklevel=3,
            )
        self._synthetic = transitions
        self._synthetic_rows = _table(
            transitions.observations,
            transitions.actions,
            transitions.rewards,
            transitions.next_observations,
            transitions.next_actions if transitions.next_actions is not None else np.zeros_like(transitions.actions),
            transitions.terminals,
        )

    @property
    def synthetic(self) -> Transitions:
        """The synthetic set batches draw from."""
        return self._synthetic

    @property
    def real_buffer(self) -> ReplayBufferBase:
        """The wrapped real buffer (never modified)."""
        return self._real_buffer

    def __len__(self) -> int:
        return len(self._real_rows) + len(self._synthetic_rows)

    # ------------------------------------------------------------------ sampling
    def sample_transition_batch(self, batch_size: int) -> TransitionMiniBatch:
        """A batch of uniform real rows followed by uniform synthetic rows, split by
        :func:`~dyaug.integrations.mixing.batch_split`."""
        n_real, _ = batch_split(batch_size, self._real_ratio, len(self._synthetic_rows))
        rows = np.empty((batch_size, self._real_rows.shape[1]), np.float32)
        real_index = np.random.randint(len(self._real_rows), size=n_real)
        synthetic_index = np.random.randint(len(self._synthetic_rows), size=batch_size - n_real)
        np.take(self._real_rows, real_index, axis=0, out=rows[:n_real])
        np.take(self._synthetic_rows, synthetic_index, axis=0, out=rows[n_real:])
        return _mini_batch(rows, self._obs_dim, self._act_dim)

    def sample_transition(self) -> Transition:
        """One real transition (d3rlpy's ``fit()`` infers the observation shape from it)."""
        return self._real_buffer.sample_transition()

    def sample_trajectory(self, length: int) -> NoReturn:
        raise NotImplementedError(
            "SyntheticReplayBuffer holds unordered synthetic transitions, not trajectories; train "
            "transformer algorithms (DecisionTransformer) on the real buffer."
        )

    def sample_trajectory_batch(self, batch_size: int, length: int) -> NoReturn:
        self.sample_trajectory(length)

    # ------------------------------------------------------------------ delegated to the real buffer
    @property
    def episodes(self) -> Sequence[EpisodeBase]:
        return self._real_buffer.episodes

    def size(self) -> int:
        return self._real_buffer.size()

    @property
    def buffer(self) -> BufferProtocol:
        return self._real_buffer.buffer

    @property
    def transition_count(self) -> int:
        return self._real_buffer.transition_count

    @property
    def transition_picker(self) -> TransitionPickerProtocol:
        return self._real_buffer.transition_picker

    @property
    def trajectory_slicer(self) -> TrajectorySlicerProtocol:
        return self._real_buffer.trajectory_slicer

    @property
    def dataset_info(self) -> DatasetInfo:
        return self._real_buffer.dataset_info

    # ------------------------------------------------------------------ not supported
    def append(self, observation: Any, action: Any, reward: Any) -> NoReturn:
        raise NotImplementedError(_ONLINE_HINT)

    def append_episode(self, episode: EpisodeBase) -> NoReturn:
        raise NotImplementedError(_ONLINE_HINT)

    def clip_episode(self, terminated: bool) -> NoReturn:
        raise NotImplementedError(_ONLINE_HINT)

    def dump(self, f: BinaryIO) -> NoReturn:
        raise NotImplementedError(
            "dump the real buffer (buffer.real_buffer.dump(f)) and save the synthetic set separately "
            "(buffer.synthetic.to_minari(...))."
        )

    @classmethod
    def from_episode_generator(cls, *args: Any, **kwargs: Any) -> NoReturn:
        raise NotImplementedError(
            "build the real d3rlpy ReplayBuffer first, then wrap it: SyntheticReplayBuffer(real_buffer, synthetic)."
        )

    @classmethod
    def load(cls, *args: Any, **kwargs: Any) -> NoReturn:
        raise NotImplementedError(
            "load the real d3rlpy ReplayBuffer (ReplayBuffer.load), then wrap it: "
            "SyntheticReplayBuffer(real_buffer, synthetic)."
        )


class _NoTransitions(Sequence):
    """``TransitionMiniBatch.transitions`` of a vectorised batch: there are no ``Transition`` objects."""

    def __init__(self, size: int) -> None:
        self._size = size

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, index: Any) -> NoReturn:
        raise NotImplementedError(
            "SyntheticReplayBuffer batches carry no Transition objects (synthetic transitions have no "
            "returns-to-go); train algorithms that need them (CalQL) on the real buffer."
        )


def _table(
    observations: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    next_observations: np.ndarray,
    next_actions: np.ndarray,
    terminals: np.ndarray,
) -> np.ndarray:
    """Rows ``[s | a | r | s' | a' | terminal]`` as one C-contiguous float32 matrix (one gather per batch)."""
    return np.concatenate(
        [observations, actions, rewards[:, None], next_observations, next_actions, terminals[:, None]],
        axis=1,
        dtype=np.float32,
    )


def _real_transitions(real_buffer: ReplayBufferBase) -> Transitions:
    """``transitions_from_d3rlpy(real_buffer)`` without its warning that d3rlpy keeps no s' at terminals, for
    callers that do not read s' there."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*have no stored s'", category=UserWarning)
        return transitions_from_d3rlpy(real_buffer)


def _real_table(real_buffer: ReplayBufferBase) -> np.ndarray:
    """The real buffer's transitions as ``BasicTransitionPicker`` returns them (s' = 0 at terminals)."""
    real = _real_transitions(real_buffer)
    assert real.next_actions is not None  # transitions_from_d3rlpy always reads a'
    terminal = real.terminals[:, None] > 0
    return _table(
        real.observations,
        real.actions,
        real.rewards,
        np.where(terminal, 0.0, real.next_observations),
        real.next_actions,
        real.terminals,
    )


def _mini_batch(rows: np.ndarray, obs_dim: int, act_dim: int) -> TransitionMiniBatch:
    """Split a ``[s | a | r | s' | a' | terminal]`` matrix into d3rlpy's batch fields (views, no copies)."""
    bounds = np.cumsum([0, obs_dim, act_dim, 1, obs_dim, act_dim, 1])
    observations, actions, rewards, next_observations, next_actions, terminals = (
        rows[:, start:stop] for start, stop in itertools.pairwise(bounds)
    )
    return TransitionMiniBatch(
        observations=observations,
        actions=actions,
        rewards=rewards,
        next_observations=next_observations,
        next_actions=next_actions,
        terminals=terminals,
        intervals=np.ones_like(terminals),
        transitions=_NoTransitions(len(rows)),
    )
