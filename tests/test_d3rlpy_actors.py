"""Diffusion-QL and SRPO as d3rlpy algorithms: fit with loggers, evaluators and callbacks, the learning-rate
schedule, predict / predict_value, save + d3rlpy.load_learnable, SRPO's phases and reuse, presets, bad input."""

from __future__ import annotations

import dataclasses
import math

import d3rlpy
import numpy as np
import pytest
import torch
from d3rlpy.base import LearnableConfig
from d3rlpy.dataset import MDPDataset
from d3rlpy.logging import FileAdapterFactory, NoopAdapterFactory
from d3rlpy.preprocessing import ConstantShiftRewardScaler, MinMaxActionScaler, ReturnBasedRewardScaler
from dyaug.integrations.d3rlpy import SRPO, DiffusionQL, DiffusionQLConfig, SRPOConfig
from dyaug.integrations.d3rlpy.actor_support import register_once

from dyaug.actors.diffusion_ql import select_actions

tiny_tensors = True
OBS_DIM, ACT_DIM, N = 3, 2, 400
QUIET = {"show_progress": False, "logger_adapter": NoopAdapterFactory()}


def _arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """Episodes of 50 steps (terminal, then timeout, alternately); behaviour a ≈ tanh(s[:2]); r = −‖a − 0.5‖²."""
    rng = np.random.default_rng(seed)
    observations = rng.normal(size=(N, OBS_DIM)).astype(np.float32)
    actions = np.tanh(observations[:, :ACT_DIM] + 0.1 * rng.normal(size=(N, ACT_DIM))).astype(np.float32)
    ends = np.zeros(N, np.float32)
    ends[49::50] = 1.0
    terminal = np.arange(N) // 50 % 2 == 0
    return {
        "observations": observations,
        "actions": actions,
        "rewards": -np.square(actions - 0.5).sum(1).astype(np.float32),
        "terminals": ends * terminal,
        "timeouts": ends * ~terminal,
    }


def _dataset(**changes: np.ndarray) -> MDPDataset:
    return MDPDataset(**{**_arrays(), **changes})


# ------------------------------------------------------------------------------------------- Diffusion-QL
def test_diffusion_ql_fits_with_loggers_evaluators_callbacks_and_round_trips(tmp_path) -> None:
    d3rlpy.seed(0)
    data = _arrays()
    algo = DiffusionQLConfig.from_preset("tiny", lr_decay_steps=120).create(device="cpu:0")
    lrs: list[tuple[float, float]] = []

    def record_lr(algo: DiffusionQL, epoch: int, step: int) -> None:
        modules = algo.impl.modules
        lrs.append((modules.actor_optim.optim.param_groups[0]["lr"], modules.critic_optim.optim.param_groups[0]["lr"]))

    results = algo.fit(
        _dataset(),
        n_steps=120,
        n_steps_per_epoch=40,
        experiment_name="dql",
        with_timestamp=False,
        logger_adapter=FileAdapterFactory(root_dir=str(tmp_path / "logs")),
        show_progress=False,
        evaluators={
            "value": lambda algo, dataset: float(
                algo.predict_value(data["observations"][:8], data["actions"][:8]).mean()
            )
        },
        callback=record_lr,
    )
    first, last = results[0][1], results[-1][1]
    assert last["critic_loss"] < first["critic_loss"] and last["bc_loss"] < first["bc_loss"]
    assert math.isfinite(last["value"])
    for name in ("params.json", "critic_loss.csv", "bc_loss.csv", "q_loss.csv", "value.csv", "model_120.d3"):
        assert (tmp_path / "logs" / "dql" / name).exists(), name
    # the cosine decay really decays: lr_k = lr (1 + cos(πk/K)) / 2 after update k, down to 0 at K
    expected = [3e-4 * (1 + math.cos(math.pi * k / 120)) / 2 for k in range(1, 121)]
    np.testing.assert_allclose(np.array(lrs), np.stack([expected, expected], 1), rtol=1e-6, atol=1e-12)

    observations = data["observations"][:50]
    actions = algo.predict(observations)
    assert actions.shape == (50, ACT_DIM) and np.abs(actions).max() <= 1.0
    assert np.abs(algo.sample_action(observations)).max() <= 1.0
    assert algo.predict_value(observations, data["actions"][:50]).shape == (50,)
    algo.save(str(tmp_path / "dql.d3"))
    loaded = d3rlpy.load_learnable(str(tmp_path / "dql.d3"))
    assert type(loaded) is DiffusionQL and type(loaded.config) is DiffusionQLConfig
    assert loaded.config == algo.config
    assert loaded.impl.modules.progress.done() == {"update": 120}  # the EMA schedule resumes where it was
    torch.manual_seed(7)
    expected_actions = algo.predict(observations)
    torch.manual_seed(7)
    np.testing.assert_array_equal(loaded.predict(observations), expected_actions)
    np.testing.assert_array_equal(
        loaded.predict_value(observations, actions), algo.predict_value(observations, actions)
    )


def test_diffusion_ql_warns_when_a_fit_outruns_the_cosine_decay() -> None:
    algo = DiffusionQLConfig.from_preset("tiny", lr_decay_steps=10).create()
    with pytest.warns(UserWarning, match="lr_decay_steps=10"):
        algo.fit(_dataset(), n_steps=20, n_steps_per_epoch=20, **QUIET)


@pytest.mark.parametrize("evaluation_actor", ["online", "ema"])
def test_diffusion_ql_predict_picks_the_candidate_the_target_critic_likes_best(evaluation_actor: str) -> None:
    d3rlpy.seed(0)
    config = DiffusionQLConfig.from_preset(
        "tiny", action_selection="argmax", n_action_samples=16, evaluation_actor=evaluation_actor
    )
    algo = config.create()
    algo.build_with_dataset(_dataset())
    with torch.no_grad():  # make the EMA actor differ from the online one
        algo.impl.modules.ema_policy.eps_net.net[-1].bias.add_(0.5)
    actor = {"online": algo.impl.modules.policy, "ema": algo.impl.modules.ema_policy}[evaluation_actor]
    observations = _arrays()["observations"][:64]
    impl = algo.impl
    x = torch.as_tensor(observations)
    torch.manual_seed(1)
    best = algo.predict(observations)
    torch.manual_seed(1)
    with torch.no_grad():
        manual = select_actions(actor, impl.modules.targ_q_funcs.min, x, n_candidates=16, selection="argmax")
        q_best = impl.modules.targ_q_funcs.min(x, torch.as_tensor(best))
        q_single = impl.modules.targ_q_funcs.min(x, actor(x))
    np.testing.assert_array_equal(best, manual.numpy())
    assert float(q_best.mean()) > float(q_single.mean())


# ---------------------------------------------------------------------------------------------------- SRPO
def test_srpo_runs_its_phases_in_one_fit_and_round_trips(tmp_path) -> None:
    d3rlpy.seed(0)
    dataset = _dataset()
    sizes: list[int] = []
    sample = dataset.sample_transition_batch
    dataset.sample_transition_batch = lambda n: sizes.append(n) or sample(n)
    config = SRPOConfig.from_preset("tiny", behavior_steps=60, critic_steps=40, actor_steps=40)
    algo = config.create(device="cpu:0")
    results = dict(algo.fit(dataset, n_steps=100, n_steps_per_epoch=20, **QUIET))
    assert sizes == [config.behavior_batch_size] * 60 + [config.batch_size] * 40
    assert algo.steps_done == {"behavior": 60, "critic": 40, "actor": 40}
    trained = {epoch: {k for k in ("behavior_loss", "q_loss", "actor_loss") if k in m} for epoch, m in results.items()}
    assert trained == {
        1: {"behavior_loss", "q_loss"},
        2: {"behavior_loss", "q_loss"},
        3: {"behavior_loss"},
        4: {"actor_loss"},
        5: {"actor_loss"},
    }
    assert results[3]["behavior_loss"] < results[1]["behavior_loss"]
    assert results[2]["q_loss"] < results[1]["q_loss"]
    observations = _arrays()["observations"]
    actions = algo.predict(observations)
    assert np.abs(actions).max() <= 1.0
    np.testing.assert_array_equal(algo.sample_action(observations), actions)
    algo.save(str(tmp_path / "srpo.d3"))
    loaded = d3rlpy.load_learnable(str(tmp_path / "srpo.d3"))
    assert type(loaded) is SRPO and loaded.config == config
    np.testing.assert_array_equal(loaded.predict(observations), actions)
    assert loaded.steps_done == algo.steps_done
    with pytest.raises(ValueError, match="phases have 0 left"):
        loaded.fit(dataset, n_steps=20, n_steps_per_epoch=20, **QUIET)


def test_srpo_trains_actors_on_a_reused_pretrained_behaviour_model_and_critic() -> None:
    d3rlpy.seed(0)
    dataset = _dataset()
    pretrained = SRPOConfig.from_preset("tiny", behavior_steps=40, critic_steps=40, actor_steps=0).create()
    pretrained.fit(dataset, n_steps=40, n_steps_per_epoch=40, **QUIET)
    algo = SRPOConfig.from_preset("tiny", behavior_steps=0, critic_steps=0, actor_steps=20, beta=0.5).create()
    algo.copy_pretrained_from(pretrained)
    assert algo.steps_done == {"behavior": 40, "critic": 40, "actor": 0}
    actor_before = {k: v.clone() for k, v in algo.impl.modules.actor.state_dict().items()}
    algo.fit(dataset, n_steps=20, n_steps_per_epoch=20, **QUIET)
    assert algo.steps_done == {"behavior": 40, "critic": 40, "actor": 20}
    for name in ("behavior", "q_funcs", "targ_q_funcs", "value_func"):
        ours, theirs = (
            getattr(algo.impl.modules, name).state_dict(),
            getattr(pretrained.impl.modules, name).state_dict(),
        )
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs), name
    assert any(not torch.equal(v, actor_before[k]) for k, v in algo.impl.modules.actor.state_dict().items())

    untrained = SRPOConfig.from_preset("tiny", behavior_steps=0, critic_steps=0, actor_steps=20).create()
    with pytest.raises(ValueError, match="behavior and critic had 0 training steps"):
        untrained.fit(dataset, n_steps=20, n_steps_per_epoch=20, **QUIET)
    other_sizes = SRPOConfig.from_preset("tiny", behavior_hidden=16).create()
    with pytest.raises(ValueError, match="cannot copy SRPO's behavior"):
        other_sizes.copy_pretrained_from(pretrained)


# ------------------------------------------------------------------------------------------- presets, errors
def test_presets_and_task_tables() -> None:
    paper = DiffusionQLConfig.from_preset("paper")
    assert (paper.n_diffusion_steps, paper.n_action_samples, paper.action_selection) == (5, 50, "softmax")
    assert (paper.ema_decay, paper.ema_every, paper.ema_warmup, paper.batch_size) == (0.995, 5, 1000, 256)
    walker = DiffusionQLConfig.from_preset(task="walker2d-medium")
    assert (walker.grad_norm, walker.eta, walker.lr_decay_steps, walker.reward_scaler) == (1.0, 1.0, 2_000_000, None)
    maze = DiffusionQLConfig.from_preset(task="antmaze-medium-play")
    assert (maze.actor_learning_rate, maze.eta, maze.max_q_backup) == (1e-3, 2.0, True)
    assert isinstance(maze.reward_scaler, ConstantShiftRewardScaler)
    torch.testing.assert_close(maze.reward_scaler.transform(torch.tensor([0.0, 1.0])), torch.tensor([-2.0, 2.0]))

    srpo = SRPOConfig()
    assert (srpo.behavior_steps, srpo.critic_steps, srpo.actor_steps) == (2_000_000, 1_500_000, 1_000_000)
    assert (srpo.expectile, srpo.t_min, srpo.t_max, srpo.weighting, srpo.eps_baseline) == (
        0.7,
        0.02,
        0.98,
        "sigma2",
        True,
    )
    assert isinstance(srpo.reward_scaler, ReturnBasedRewardScaler) and srpo.reward_scaler.multiplier == 1000.0
    assert SRPOConfig.from_preset(task="hopper-medium").beta == 0.05
    antmaze = SRPOConfig.from_preset(task="antmaze-large-play")
    assert (antmaze.beta, antmaze.expectile, antmaze.actor_layers, antmaze.normalize_q_grad) == (0.06, 0.9, 4, True)
    torch.testing.assert_close(antmaze.reward_scaler.transform(torch.tensor([1.0])), torch.tensor([0.0]))
    assert SRPOConfig.deserialize(antmaze.serialize()) == antmaze
    with pytest.raises(ValueError, match="unknown SRPOConfig preset 'huge'"):
        SRPOConfig.from_preset("huge")
    with pytest.raises(ValueError, match="unknown DiffusionQLConfig task 'hopper-medium-v2'"):
        DiffusionQLConfig.from_preset(task="hopper-medium-v2")
    with pytest.raises(TypeError, match="has no fields \\['learning_rate'\\]"):
        SRPOConfig.from_preset("tiny", learning_rate=1e-3)
    with pytest.raises(ValueError, match=r"either reward .* or reward_scaler"):
        SRPOConfig.from_preset("tiny", reward="raw", reward_scaler=None)
    with pytest.raises(ValueError, match="action_selection must be one of"):
        DiffusionQLConfig(action_selection="best")
    with pytest.raises(ValueError, match="weighting must be one of"):
        SRPOConfig(weighting="sigma")


@pytest.mark.parametrize("config", [DiffusionQLConfig.from_preset("tiny"), SRPOConfig.from_preset("tiny")])
def test_bad_inputs_raise_clear_errors(config: LearnableConfig) -> None:
    name = type(config).__name__.removesuffix("Config")
    discrete = _dataset(actions=np.random.default_rng(0).integers(3, size=N))
    with pytest.raises(ValueError, match=f"{name} is for continuous actions"):
        config.create().fit(discrete, n_steps=10, n_steps_per_epoch=10, **QUIET)
    images = _dataset(observations=np.zeros((N, 1, 4, 4), np.float32))
    with pytest.raises(
        ValueError, match=r"flat vector observations of shape \(obs_dim,\), got observation shape \(1, 4, 4\)"
    ):
        config.create().fit(images, n_steps=10, n_steps_per_epoch=10, **QUIET)
    wide = _dataset(actions=3 * _arrays()["actions"])
    with pytest.raises(ValueError, match=r"needs actions in \[-1, 1\].*MinMaxActionScaler"):
        config.create().fit(wide, n_steps=10, n_steps_per_epoch=10, **QUIET)
    with pytest.raises(ValueError, match="enable_ddp"):
        config.create(enable_ddp=True)


def test_a_reward_scaler_that_breaks_the_rewards_is_refused() -> None:
    one_return = _dataset(terminals=np.eye(1, N, N - 1, dtype=np.float32)[0], timeouts=np.zeros(N, np.float32))
    with pytest.raises(ValueError, match="ReturnBasedRewardScaler needs episodes with different returns"):
        SRPOConfig.from_preset("tiny", reward_scaler=ReturnBasedRewardScaler(multiplier=1000.0)).create().fit(
            one_return, n_steps=10, n_steps_per_epoch=10, **QUIET
        )


def test_scaled_actions_are_accepted_and_predicted_in_dataset_units() -> None:
    d3rlpy.seed(0)
    wide_actions = 3 * _arrays()["actions"]
    config = SRPOConfig.from_preset("tiny", behavior_steps=10, critic_steps=10, actor_steps=0)
    algo = dataclasses.replace(config, action_scaler=MinMaxActionScaler()).create()
    algo.fit(_dataset(actions=wide_actions), n_steps=10, n_steps_per_epoch=10, **QUIET)
    predicted = algo.predict(_arrays()["observations"])
    assert np.all(predicted >= wide_actions.min(0) - 1e-5) and np.all(predicted <= wide_actions.max(0) + 1e-5)


def test_registration_is_idempotent_and_keys_are_not_stolen() -> None:
    register_once(DiffusionQLConfig)  # the module executed again: no error
    impostor = type("Impostor", (SRPOConfig,), {"get_type": staticmethod(lambda: "dyaug_srpo")})
    with pytest.raises(ValueError, match="'dyaug_srpo' is taken by"):
        register_once(impostor)
