"""Exact conversions between :class:`Transitions` and Minari 0.5 datasets.

A Minari episode of N steps stores N+1 observations and N actions, so transition t is
``(o[t], a[t], r[t], o[t+1], terminations[t], truncations[t])``, with the true s' also at the terminal
step. Only flat ``Box`` observation and action spaces are supported.

Minari writes dataset metadata to a JSON file, so extra metadata must be JSON: dicts (nested too),
lists, strings, numbers, booleans and None all load back; tuples come back as lists. A value ``json``
cannot encode (a numpy scalar, say) makes Minari 0.5.4 fail half-way through rewriting the file and leaves
the dataset unreadable, so :func:`transitions_to_minari` encodes extra metadata before it writes anything,
turning numpy scalars and arrays into Python numbers and lists.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from dyaug.data.transitions import Transitions

if TYPE_CHECKING:  # pragma: no cover
    import gymnasium as gym
    from minari import MinariDataset

# Keys Minari writes itself; extra metadata may not overwrite them.
_MINARI_METADATA_KEYS = frozenset(
    {
        "action_space", "algorithm_name", "author", "author_email", "code_permalink", "data_format",
        "dataset_id", "dataset_size", "description", "env_spec", "eval_env_spec", "jpeg_encoding",
        "minari_version", "num_episodes_average_score", "observation_space", "ref_max_score",
        "ref_min_score", "requirements", "total_episodes", "total_steps",
    }
)  # fmt: skip


def transitions_from_minari(dataset: MinariDataset, episode_indices: Sequence[int] | None = None) -> Transitions:
    """All transitions of ``dataset`` (or of the episodes ``episode_indices``), exactly as stored.

    ``terminals = terminations`` and ``timeouts = truncations``; ``next_observations = observations[1:]``
    per episode, so the true s' is kept at terminal steps. An episode whose last step is neither terminated
    nor truncated (data that simply stops) gets ``timeouts = 1`` there, so every episode ends with a flag.
    """
    _require_flat_box(dataset.observation_space, "observation")
    _require_flat_box(dataset.action_space, "action")
    parts: list[tuple[np.ndarray, ...]] = []
    for episode in dataset.iterate_episodes(episode_indices):
        observations = np.asarray(episode.observations)
        n = len(episode.actions)
        if n == 0:
            continue
        if len(observations) != n + 1:
            raise ValueError(
                f"Minari episode {episode.id} has {len(observations)} observations for {n} actions; "
                "a Minari episode must store N+1 observations for N steps."
            )
        timeouts = np.asarray(episode.truncations, dtype=bool).copy()
        terminals = np.asarray(episode.terminations, dtype=bool)
        timeouts[-1] |= not terminals[-1]
        parts.append((observations[:-1], episode.actions, episode.rewards, observations[1:], terminals, timeouts))
    if not parts:
        raise ValueError("the Minari dataset (or the chosen episodes) holds no transitions.")
    obs, act, rew, next_obs, term, tout = (np.concatenate(column) for column in zip(*parts, strict=True))
    return Transitions(
        observations=obs, actions=act, rewards=rew, next_observations=next_obs, terminals=term, timeouts=tout
    )


def transitions_to_minari(
    transitions: Transitions,
    dataset_id: str,
    env_id: str | None = None,
    *,
    eval_env: str | None = None,
    ref_min_score: float | None = None,
    ref_max_score: float | None = None,
    algorithm_name: str = "dyaug",
    author: str = "dyaug",
    author_email: str | None = None,
    code_permalink: str | None = None,
    description: str | None = None,
    **extra: Any,
) -> MinariDataset:
    """Write ``transitions`` as the local Minari dataset ``dataset_id`` (``(namespace/)name-vN``).

    The dataset goes under ``$MINARI_DATASETS_PATH`` (default ``~/.minari/datasets``). Episodes are the
    runs of ``transitions.episode_slices(contiguous=True)``; a run that ends without a flag (a continuity break, or data
    that stops) is written as truncated. Spaces come from ``env_id`` when given, else they are
    ``Box(-inf, inf)`` of the right sizes. ``eval_env`` defaults to ``env_id``. Reference scores must be
    given both or neither (Minari would otherwise roll out 100 random episodes) and need an environment.
    Minari warns when ``author_email`` or ``code_permalink`` is None. ``extra`` is stored as JSON metadata
    (see the module docstring); keys Minari writes itself are refused.
    """
    import gymnasium as gym
    import minari
    from minari.data_collector import EpisodeBuffer

    if len(transitions) == 0:
        raise ValueError("cannot write an empty Transitions to Minari; a dataset needs at least one step.")
    if (ref_min_score is None) != (ref_max_score is None):
        raise ValueError(
            "pass both ref_min_score and ref_max_score, or neither; with only one, Minari computes or "
            "drops the other by running 100 episodes."
        )
    eval_env = eval_env if eval_env is not None else env_id
    if ref_max_score is not None and eval_env is None:
        raise ValueError("reference scores need an environment; pass env_id or eval_env as well.")
    clashing = sorted(_MINARI_METADATA_KEYS.intersection(extra))
    if clashing:
        raise ValueError(f"metadata keys {clashing} are written by Minari itself; rename them.")
    extra_metadata = _json_metadata(extra)

    if env_id is not None:
        env = gym.make(env_id)
        observation_space, action_space = env.observation_space, env.action_space
        env.close()
        _require_flat_box(observation_space, "observation")
        _require_flat_box(action_space, "action")
        _require_size(observation_space, transitions.obs_dim, "observation", env_id)
        _require_size(action_space, transitions.act_dim, "action", env_id)
    else:
        observation_space = gym.spaces.Box(-np.inf, np.inf, (transitions.obs_dim,), np.float32)
        action_space = gym.spaces.Box(-np.inf, np.inf, (transitions.act_dim,), np.float32)

    buffers = []
    for episode_id, rows in enumerate(transitions.episode_slices(contiguous=True)):
        truncations = transitions.timeouts[rows] > 0
        terminations = transitions.terminals[rows] > 0
        truncations[-1] |= not terminations[-1]
        buffers.append(
            EpisodeBuffer(
                id=episode_id,
                observations=np.concatenate(
                    [transitions.observations[rows], transitions.next_observations[rows.stop - 1 : rows.stop]]
                ),
                actions=transitions.actions[rows],
                rewards=transitions.rewards[rows],
                terminations=terminations,
                truncations=truncations,
            )
        )
    if description is None:
        description = f"{len(transitions)} transitions in {len(buffers)} episodes, written by dyaug."
    dataset = minari.create_dataset_from_buffers(
        dataset_id=dataset_id,
        buffer=buffers,
        env=env_id,
        eval_env=eval_env,
        algorithm_name=algorithm_name,
        author=author,
        author_email=author_email,
        code_permalink=code_permalink,
        action_space=action_space,
        observation_space=observation_space,
        ref_min_score=ref_min_score,
        ref_max_score=ref_max_score,
        description=description,
    )
    if extra_metadata:
        dataset.storage.update_metadata(extra_metadata)
    return dataset


def _require_flat_box(space: gym.Space, role: str) -> None:
    import gymnasium as gym

    if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
        raise ValueError(
            f"unsupported {role} space {space}: dyaug handles flat Box spaces only (vectors); flatten "
            "Dict/Tuple observations or use a state-based environment."
        )


def _require_size(space: gym.Space, size: int, role: str, env_id: str) -> None:
    assert space.shape is not None  # a flat Box (_require_flat_box ran first)
    if space.shape[0] != size:
        raise ValueError(
            f"{env_id} has {role} size {space.shape[0]} but the transitions have {size}; "
            "pass the env_id the data came from."
        )


def _json_metadata(extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` made of plain JSON values (numpy scalars/arrays become numbers/lists), checked up front."""
    try:
        return json.loads(json.dumps(extra, default=_numpy_to_builtin, allow_nan=True))
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"extra Minari metadata must be JSON values (dict, list, str, number, bool, None): {error}. "
            "Convert the value, e.g. with str(...) or a dict of plain fields."
        ) from error


def _numpy_to_builtin(value: Any) -> Any:
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"object of type {type(value).__name__} is not JSON serializable")
