"""How an environment served by learned models steps, resets and ends its episodes: one frozen dataclass."""

from __future__ import annotations

import dataclasses
import math

from dyaug.validation import check_int

MODES: tuple[str, ...] = ("ensemble", "diffusion")
RESET_SOURCES: tuple[str, ...] = ("env", "dataset")


@dataclasses.dataclass(frozen=True)
class LearnedEnvConfig:
    """Settings of :class:`~dyaug.envs.LearnedDynamicsWrapper` and :class:`~dyaug.envs.LearnedDynamicsVectorEnv`.

    :param mode: where s' comes from. ``"ensemble"``: one step of the dynamics ensemble, ``s' = s + μ_e(s, a)``
        with ``e`` a uniformly random elite per step (MBPO/DyDiff rollouts). ``"diffusion"``: s' inpainted by
        DyDiff's trajectory diffusion model in a window of the episode's last steps
        (:class:`~dyaug.envs.stepping.WindowInpainting`); one diffusion sample (2N − 1 network evaluations) per
        step, shared by the whole batch of a vector environment.
    :param reset_from: ``"env"``: episodes start where the real environment's ``reset`` puts them; ``"dataset"``:
        at a state drawn uniformly from :attr:`LearnedModels.start_states`. ``None``: ``"env"`` when a real
        simulator is wrapped, ``"dataset"`` otherwise.
    :param penalty: λ of MOPO's uncertainty-penalised reward ``r̃ = r̂(s, a) − λ u(s, a)`` (Yu et al. 2020,
        arXiv 2005.13239; see :func:`~dyaug.envs.stepping.uncertainty`); 0 (the default) turns it off.
    :param max_episode_steps: ``truncated`` is True at this step count; ``None``: the real environment's spec,
        else :attr:`LearnedModels.max_episode_steps`, else episodes are never truncated.
    """

    mode: str = "ensemble"
    reset_from: str | None = None
    penalty: float = 0.0
    max_episode_steps: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}.")
        if self.reset_from is not None and self.reset_from not in RESET_SOURCES:
            raise ValueError(f"reset_from must be one of {RESET_SOURCES} or None, got {self.reset_from!r}.")
        penalty = self.penalty
        if (
            isinstance(penalty, bool)
            or not isinstance(penalty, int | float)
            or not (math.isfinite(penalty) and penalty >= 0)
        ):
            raise ValueError(f"penalty must be a finite number >= 0 (0 = off), got {penalty!r}.")
        if self.max_episode_steps is not None:
            check_int("max_episode_steps", self.max_episode_steps, numpy=False, hint="or None")

    def resolved(self, *, has_simulator: bool, spec_steps: int | None, model_steps: int | None) -> LearnedEnvConfig:
        """This config with ``reset_from`` and ``max_episode_steps`` filled in by the rules of the parameters."""
        reset_from = self.reset_from or ("env" if has_simulator else "dataset")
        if reset_from == "env" and not has_simulator:
            raise ValueError(
                "reset_from='env' needs the real environment's reset, but there is no simulator here; "
                "use reset_from='dataset' (states drawn from LearnedModels.start_states)."
            )
        steps = next((s for s in (self.max_episode_steps, spec_steps, model_steps) if s is not None), None)
        return dataclasses.replace(self, reset_from=reset_from, max_episode_steps=steps)
