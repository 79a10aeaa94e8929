"""Diffusion actors in Stable-Baselines3: DiffusionTD3Policy, DiffusionQLTD3's update, d3rlpy -> SB3 loading (SB3's
predict and critics equal d3rlpy's), online fine-tuning, save/load, and the refused set-ups."""

from __future__ import annotations

import copy

import d3rlpy
import gymnasium as gym
import numpy as np
import pytest
import torch
from d3rlpy.dataset import MDPDataset
from d3rlpy.logging import NoopAdapterFactory
from d3rlpy.preprocessing import (
    ConstantShiftRewardScaler,
    MinMaxActionScaler,
    MultiplyRewardScaler,
    StandardObservationScaler,
)
from dyaug.integrations.d3rlpy import SRPO, DiffusionQL, DiffusionQLConfig, SRPOConfig
from dyaug.integrations.sb3 import (
    DiffusionQLTD3,
    DiffusionTD3Policy,
    load_diffusion_ql_into_td3,
    load_srpo_into_td3,
    td3_from_d3rlpy,
)
from dyaug.integrations.sb3.diffusion_td3 import stacked_q
from stable_baselines3 import PPO, SAC, TD3
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import configure
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.td3.policies import TD3Policy

from dyaug.actors.batch import TransitionBatch
from dyaug.actors.critics import soft_update_
from dyaug.actors.diffusion_ql import dql_actor_loss, dql_critic_loss

tiny_tensors = True
QUIET = {"show_progress": False, "logger_adapter": NoopAdapterFactory()}
BOUNDS = {"minimum": np.array([-2.0], np.float32), "maximum": np.array([2.0], np.float32)}  # Pendulum's torque
TINY_POLICY = {"hidden": 16, "t_dim": 4, "net_arch": [16, 16], "n_action_samples": 4}


@pytest.fixture(scope="module")
def pendulum() -> dict[str, np.ndarray]:
    """400 random-action Pendulum-v1 steps in episodes of 100 (timeouts)."""
    env, rng = gym.make("Pendulum-v1"), np.random.default_rng(0)
    rows: dict[str, list] = {"observations": [], "actions": [], "rewards": []}
    obs, _ = env.reset(seed=0)
    for _ in range(4):
        for _ in range(100):
            action = rng.uniform(-2.0, 2.0, 1).astype(np.float32)
            rows["observations"].append(obs)
            rows["actions"].append(action)
            obs, reward, *_ = env.step(action)
            rows["rewards"].append(reward)
        obs, _ = env.reset()
    data = {k: np.asarray(v, np.float32) for k, v in rows.items()}
    timeouts = np.zeros(400, np.float32)
    timeouts[99::100] = 1.0
    return {**data, "terminals": np.zeros(400, np.float32), "timeouts": timeouts}


def _fit(config: DiffusionQLConfig | SRPOConfig, data: dict[str, np.ndarray], steps: int) -> DiffusionQL | SRPO:
    d3rlpy.seed(0)
    algo = config.create()
    algo.fit(MDPDataset(**data), n_steps=steps, n_steps_per_epoch=steps, **QUIET)
    return algo


@pytest.fixture(scope="module")
def dql(pendulum) -> DiffusionQL:
    config = DiffusionQLConfig.from_preset(
        "tiny",
        observation_scaler=StandardObservationScaler(),
        action_scaler=MinMaxActionScaler(**BOUNDS),
        lr_decay_steps=None,
    )
    return _fit(config, pendulum, 20)


@pytest.fixture(scope="module")
def srpo(pendulum) -> SRPO:
    config = SRPOConfig.from_preset(
        "tiny",
        behavior_steps=10,
        critic_steps=10,
        actor_steps=10,
        observation_scaler=StandardObservationScaler(),
        action_scaler=MinMaxActionScaler(**BOUNDS),
        reward_scaler=MultiplyRewardScaler(0.1),
    )
    return _fit(config, pendulum, 20)


def _min_q(model: TD3, observations: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """min_i Q_i of the SB3 critic at env-unit actions (SB3's critics see actions scaled to [-1, 1])."""
    scaled = model.policy.scale_action(actions)
    with torch.no_grad():
        return torch.cat(model.critic(torch.as_tensor(observations), torch.as_tensor(scaled)), 1).amin(1).numpy()


# ------------------------------------------------------------------------------------------------ d3rlpy -> SB3
def test_diffusion_ql_in_sb3_predicts_and_values_as_in_d3rlpy(dql, pendulum) -> None:
    model = td3_from_d3rlpy(dql, gym.make("Pendulum-v1"), seed=0)
    assert isinstance(model, DiffusionQLTD3) and model.ema_updates == 20  # the EMA schedule resumes
    observations, actions = pendulum["observations"][:64], pendulum["actions"][:64]
    torch.manual_seed(3)
    expected = dql.predict(observations)  # 4 candidates per state, softmax over the target critic's min Q
    torch.manual_seed(3)
    predicted, _ = model.predict(observations)
    assert np.abs(expected).max() > 0.1  # env units (torque in [-2, 2]), not the algorithm's [-1, 1]
    np.testing.assert_allclose(predicted, expected, atol=1e-5)
    # SB3 sees raw observations: the standardisation is folded into the first layers
    np.testing.assert_allclose(
        _min_q(model, observations, actions), dql.predict_value(observations, actions), atol=1e-5
    )
    model.policy.action_selection = "sample"  # one chain draw, as d3rlpy's sample_action
    torch.manual_seed(4)
    expected = dql.sample_action(observations)
    torch.manual_seed(4)
    np.testing.assert_allclose(model.predict(observations)[0], expected, atol=1e-5)


def test_srpo_in_sb3_td3_predicts_and_values_as_in_d3rlpy(srpo, pendulum) -> None:
    model = td3_from_d3rlpy(srpo, "Pendulum-v1", seed=0)
    assert type(model) is TD3
    observations, actions = pendulum["observations"][:64], pendulum["actions"][:64]
    np.testing.assert_allclose(model.predict(observations)[0], srpo.predict(observations), atol=1e-5)
    np.testing.assert_array_equal(
        model.actor_target(torch.as_tensor(observations)).detach().numpy(),
        model.actor(torch.as_tensor(observations)).detach().numpy(),
    )
    # d3rlpy's critic learnt Q of 0.1 r; the SB3 critic holds Q of r, the env's reward units
    np.testing.assert_allclose(
        0.1 * _min_q(model, observations, actions), srpo.predict_value(observations, actions), atol=1e-5
    )
    fresh = TD3("MlpPolicy", "Pendulum-v1", policy_kwargs={"net_arch": [32, 32]}, seed=1)
    before = copy.deepcopy(fresh.critic.state_dict())
    load_srpo_into_td3(fresh, srpo, critic=False)  # actor only
    np.testing.assert_allclose(fresh.predict(observations)[0], srpo.predict(observations), atol=1e-5)
    assert all(torch.equal(v, fresh.critic.state_dict()[k]) for k, v in before.items())


def test_loading_refuses_mismatched_models_and_units(dql, srpo, pendulum) -> None:
    env = gym.make("Pendulum-v1")
    with pytest.raises(ValueError, match="hidden"):  # a default-sized diffusion actor
        load_diffusion_ql_into_td3(DiffusionQLTD3("MlpPolicy", env, policy_kwargs={"net_arch": [8]}), dql)
    with pytest.raises(ValueError, match="clash"):
        td3_from_d3rlpy(dql, env, policy_kwargs={"hidden": 64})
    with pytest.raises(ValueError, match="sizes"):  # MountainCar has 2 observation dimensions, Pendulum 3
        td3_from_d3rlpy(srpo, "MountainCarContinuous-v0")
    with pytest.raises(TypeError, match="Gaussian"):
        load_srpo_into_td3(SAC("MlpPolicy", env), srpo)
    with pytest.raises(TypeError, match="DiffusionQL and SRPO"):
        td3_from_d3rlpy(d3rlpy.algos.TD3PlusBCConfig().create(), env)
    unscaled = DiffusionQLConfig.from_preset("tiny")  # its [-1, 1] is not Pendulum's [-2, 2]
    algo = _fit(unscaled, {**pendulum, "actions": pendulum["actions"] / 2}, 1)
    with pytest.raises(ValueError, match="RescaleAction"):
        td3_from_d3rlpy(algo, env)
    shifted = SRPOConfig.from_preset(
        "tiny", behavior_steps=1, critic_steps=1, actor_steps=0, reward_scaler=ConstantShiftRewardScaler(shift=-1.0)
    )
    algo = _fit(shifted, {**pendulum, "actions": pendulum["actions"] / 2}, 1)
    box = gym.wrappers.RescaleAction(env, np.float32(-1.0), np.float32(1.0))
    with pytest.raises(ValueError, match="critic=False"):
        td3_from_d3rlpy(algo, box)
    assert td3_from_d3rlpy(algo, box, critic=False).policy.actor is not None


# ------------------------------------------------------------------------------------------------- fine-tuning
def test_fine_tuning_runs_evaluates_and_round_trips(dql, tmp_path) -> None:
    model = td3_from_d3rlpy(dql, gym.make("Pendulum-v1"), learning_starts=100, seed=0)
    loaded = copy.deepcopy(model.actor.diffusion.state_dict())
    model.learn(300)
    assert model._n_updates == 200 and model.ema_updates == 20 + 200
    assert any(not torch.equal(v, model.actor.diffusion.state_dict()[k]) for k, v in loaded.items())
    mean_return, _ = evaluate_policy(model, model.get_env(), n_eval_episodes=1)
    assert -2000.0 < mean_return <= 0.0  # Pendulum's returns over 200 steps lie in [-16.3 * 200, 0]
    model.save(tmp_path / "dql")
    restored = DiffusionQLTD3.load(tmp_path / "dql")
    assert restored.ema_updates == model.ema_updates and restored.eta == model.eta
    assert restored.policy.actor_target is restored._ema.module
    observations = np.random.default_rng(0).normal(size=(16, 3)).astype(np.float32)
    torch.manual_seed(5)
    expected = model.predict(observations)[0]
    torch.manual_seed(5)
    np.testing.assert_array_equal(restored.predict(observations)[0], expected)


def test_one_update_is_diffusion_ql_in_order_critic_actor_ema_target() -> None:
    # SGD with a large step: parameter changes proportional to the gradients (Adam's first step is lr * sign(g))
    policy_kwargs = {**TINY_POLICY, "optimizer_class": torch.optim.SGD}
    model = DiffusionQLTD3(
        "MlpPolicy", "Pendulum-v1", 0.1, policy_kwargs=policy_kwargs, ema_warmup=0, ema_every=1, grad_norm=1.0, seed=0
    )
    rng = np.random.default_rng(1)
    replay = ReplayBufferSamples(
        observations=torch.as_tensor(rng.normal(size=(32, 3)), dtype=torch.float32),
        actions=torch.as_tensor(rng.uniform(-1, 1, (32, 1)), dtype=torch.float32),
        next_observations=torch.as_tensor(rng.normal(size=(32, 3)), dtype=torch.float32),
        dones=torch.as_tensor(rng.integers(0, 2, (32, 1)), dtype=torch.float32),
        rewards=torch.as_tensor(rng.normal(size=(32, 1)), dtype=torch.float32),
    )
    model.replay_buffer.sample = lambda batch_size, env=None: replay
    model.set_logger(configure(None, []))
    model._ema.step = model.ema_updates = 7  # past warm-up: decay min(0.995, 1 - 8^(-2/3)) = 0.75
    with torch.no_grad():  # an EMA actor unlike the actor, so that using the wrong one shows
        for parameter in model.actor_target.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    reference = {
        name: copy.deepcopy(getattr(model, name)) for name in ("actor", "actor_target", "critic", "critic_target")
    }
    torch.manual_seed(0)
    model.train(gradient_steps=1, batch_size=32)

    torch.manual_seed(0)
    batch = TransitionBatch(
        observations=replay.observations,
        actions=replay.actions,
        rewards=replay.rewards.reshape(-1),
        next_observations=replay.next_observations,
        terminals=replay.dones.reshape(-1),
        discounts=torch.full((32,), 0.99),
    )
    actor, ema, critic, target = (reference[n] for n in ("actor", "actor_target", "critic", "critic_target"))
    for network, loss in (
        (critic, lambda: dql_critic_loss(stacked_q(critic), stacked_q(target), ema.diffusion, batch)),
        (actor, lambda: dql_actor_loss(actor.diffusion, stacked_q(critic), batch, 1.0).actor_loss),
    ):
        network.optimizer.zero_grad()
        loss().backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), 1.0)
        network.optimizer.step()
    with torch.no_grad():
        for ema_p, p in zip(ema.parameters(), actor.parameters(), strict=True):
            ema_p.lerp_(p, 0.25)
    soft_update_(target, critic, 0.005)
    for name, expected in (("actor", actor), ("actor_target", ema), ("critic", critic), ("critic_target", target)):
        for (key, value), got in zip(
            expected.state_dict().items(), getattr(model, name).state_dict().values(), strict=True
        ):
            torch.testing.assert_close(got, value, rtol=1e-6, atol=1e-7, msg=f"{name}.{key}")
    assert model.ema_updates == 8


def test_sb3_td3_trains_the_diffusion_actor_reproducibly() -> None:
    def run() -> dict[str, torch.Tensor]:
        model = TD3(DiffusionTD3Policy, "Pendulum-v1", policy_kwargs=TINY_POLICY, learning_starts=50, seed=0)
        model.learn(120)
        assert model._n_updates == 70
        return model.actor.state_dict()

    first, second = run(), run()
    assert all(torch.equal(first[k], second[k]) for k in first)


# -------------------------------------------------------------------------------------------------- bad input
class _ImageEnv(gym.Env):
    observation_space = gym.spaces.Box(0, 255, (16, 16, 3), np.uint8)
    action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)


@pytest.mark.parametrize("algorithm", [SAC, PPO])
def test_algorithms_that_need_log_probabilities_are_refused(algorithm) -> None:
    with pytest.raises(TypeError, match="log-probability"):
        algorithm(DiffusionTD3Policy, "Pendulum-v1")


def test_discrete_image_and_non_diffusion_set_ups_are_refused() -> None:
    with pytest.raises(ValueError, match=r"continuous \(Box\) action space"):
        DiffusionQLTD3("MlpPolicy", "CartPole-v1")
    with pytest.raises(ValueError, match="flat vector observations"):
        DiffusionQLTD3("MlpPolicy", _ImageEnv())
    with pytest.raises(ValueError, match="flat vector observations"):
        DiffusionTD3Policy(_ImageEnv.observation_space, _ImageEnv.action_space, lambda _: 1e-3)
    with pytest.raises(TypeError, match="needs DiffusionTD3Policy"):
        DiffusionQLTD3(TD3Policy, "Pendulum-v1")
    with pytest.raises(ValueError, match="exactly two critics"):
        DiffusionQLTD3("MlpPolicy", "Pendulum-v1", policy_kwargs={**TINY_POLICY, "n_critics": 3})
    with pytest.raises(ValueError, match="action_selection"):
        DiffusionQLTD3("MlpPolicy", "Pendulum-v1", policy_kwargs={**TINY_POLICY, "action_selection": "best"})
