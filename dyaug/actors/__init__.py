"""Diffusion actors for offline RL as plain torch modules and loss functions (no d3rlpy, no SB3).

- Diffusion-QL (Wang, Hunt & Zhou, arXiv 2208.06193): :class:`DiffusionPolicy`, :func:`dql_actor_loss`,
  :func:`dql_critic_loss`, one update in the official order :func:`diffusion_ql_update`, :func:`select_actions`;
- SRPO (Chen et al., arXiv 2310.07297): :class:`DeterministicActor`, :func:`srpo_actor_loss`,
  :func:`score_regularizer`, :class:`SRPOPhases`; its behaviour model is
  :class:`~dyaug.diffusion.networks.LNResNet` trained with :meth:`~dyaug.diffusion.vp.VPSDE.loss`;
- critics: :class:`TwinQ`, :class:`ValueMLP`, the IQL losses;
- presets and the papers' per-task tables: :mod:`dyaug.actors.presets`.

Actors map observations (as the caller normalises them) to actions in [-1, 1]. The d3rlpy algorithms built
from these parts are the d3rlpy integration's ``DiffusionQLConfig`` and ``SRPOConfig``.
"""

from dyaug.actors.batch import TransitionBatch
from dyaug.actors.critics import TwinQ, ValueMLP, expectile_loss, iql_q_loss, iql_value_loss, soft_update_
from dyaug.actors.diffusion_ql import (
    DiffusionPolicy,
    DQLActorLoss,
    diffusion_ql_update,
    dql_actor_loss,
    dql_critic_loss,
    select_actions,
)
from dyaug.actors.srpo import (
    DeterministicActor,
    SRPOActorLoss,
    SRPOPhases,
    q_action_gradient,
    score_regularizer,
    srpo_actor_loss,
)

__all__ = [
    "DQLActorLoss",
    "DeterministicActor",
    "DiffusionPolicy",
    "SRPOActorLoss",
    "SRPOPhases",
    "TransitionBatch",
    "TwinQ",
    "ValueMLP",
    "diffusion_ql_update",
    "dql_actor_loss",
    "dql_critic_loss",
    "expectile_loss",
    "iql_q_loss",
    "iql_value_loss",
    "q_action_gradient",
    "score_regularizer",
    "select_actions",
    "soft_update_",
    "srpo_actor_loss",
]
