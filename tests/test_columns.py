"""Column encodings: constant columns held exactly, transforms that invert exactly, residual rows, auto precision."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dyaug.device as device_module
from dyaug import SynthER, Transitions
from dyaug.data.columns import ColumnCodec, ConstantColumns, QuantileTransform, SymlogTransform, irregular_columns
from dyaug.diffusion.edm import EDMDenoiser, EDMSchedule
from dyaug.diffusion.networks import ResidualMLP
from dyaug.synther.rows import RowLayout

tiny_tensors = True


def _columns(n: int = 5_000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.empty((n, 5), np.float32)
    x[:, 0] = rng.normal(1.0, 2.0, n)
    x[:, 1] = 0.25  # constant
    x[:, 2] = np.where(rng.random(n) < 0.9, 0.0, rng.exponential(1.0, n))  # sparse: 0 in 90% of rows
    x[:, 3] = rng.standard_t(2, n)  # heavy-tailed
    x[:, 4] = np.clip(rng.normal(0.0, 1.0, n), -1.0, 1.0)  # saturated at both bounds
    return x


@pytest.mark.parametrize("transform", [QuantileTransform, SymlogTransform])
def test_transforms_invert_within_float32_rounding(transform) -> None:
    x = _columns()[:, [0, 2, 3, 4]].astype(np.float64)
    fitted = transform.fit(x)
    back = fitted.inverse(fitted.forward(x))
    assert np.abs(back - x).max() <= 4 * np.spacing(np.abs(x).astype(np.float32)).max()
    again = type(fitted).from_state(fitted.state())
    np.testing.assert_array_equal(again.forward(x), fitted.forward(x))


def test_quantile_transform_gives_atoms_an_interval_that_maps_back_exactly() -> None:
    x = _columns().astype(np.float64)
    q = QuantileTransform.fit(x[:, [2, 4]])
    z = q.forward(x[:, [2, 4]])
    assert abs(z.mean()) < 0.1 and 0.5 < z.std() < 1.1  # near-Gaussian in the model's space
    # a standard normal drawn in z space lands on the atoms with the data's frequency, at exactly their values
    draw = q.inverse(np.random.default_rng(1).standard_normal((50_000, 2)))
    assert np.mean(draw[:, 0] == 0.0) == pytest.approx(np.mean(x[:, 2] == 0.0), abs=0.01)
    assert np.mean(np.abs(draw[:, 1]) == 1.0) == pytest.approx(np.mean(np.abs(x[:, 4]) == 1.0), abs=0.01)
    assert draw[:, 0].min() >= 0.0 and draw[:, 0].max() <= x[:, 2].max()  # never outside the data's range


def test_irregular_columns_finds_sparse_and_heavy_tailed_ones() -> None:
    assert irregular_columns(_columns()).tolist() == [False, False, True, True, False]
    assert irregular_columns(_columns(), skip=[2]).tolist() == [False, False, False, True, False]


def test_codec_drops_constant_columns_and_restores_them_exactly() -> None:
    x = _columns()
    codec = ColumnCodec.fit(x, transform="quantile")
    assert codec.model_dim == 4 and codec.constant.mask.tolist() == [False, True, False, False, False]
    encoded = codec.encode(x)
    assert encoded.shape == (len(x), 4) and encoded.dtype == np.float32
    back = codec.decode(encoded)
    np.testing.assert_array_equal(back[:, 1], 0.25)
    assert np.abs(back - x).max() < 1e-5
    noise = codec.decode(np.random.default_rng(0).normal(size=(100, 4)).astype(np.float32))
    np.testing.assert_array_equal(noise[:, 1], 0.25)  # whatever the model outputs, the constant stays
    again = ColumnCodec.from_state(codec.state())
    np.testing.assert_array_equal(again.decode(encoded), back)
    torch_rows = ConstantColumns.fit(x).hold(torch.zeros(3, 5))
    assert torch_rows[:, 1].tolist() == [0.25] * 3 and torch_rows[:, 0].tolist() == [0.0] * 3


def test_residual_layout_rebuilds_next_state_exactly() -> None:
    rng = np.random.default_rng(0)
    n, o, a = 1_000, 3, 2
    obs = rng.normal(size=(n, o)).astype(np.float32) * 100
    nxt = (obs + rng.normal(size=(n, o)) * 1e-3).astype(np.float32)
    t = Transitions(obs, rng.uniform(-1, 1, (n, a)), rng.normal(size=n), nxt, np.zeros(n), np.ones(n))
    layout = RowLayout(o, a, residual=True)
    rows = layout.encode(t)
    np.testing.assert_array_equal(rows[:, o + a + 1 : 2 * o + a + 1], nxt.astype(np.float64) - obs)
    from dyaug.data.coerce import ActionBounds

    back = layout.decode(rows, ActionBounds(-np.ones(a), np.ones(a), "given"))
    np.testing.assert_array_equal(back.next_observations, nxt)


def test_small_fit_reproduces_a_constant_and_a_sparse_column() -> None:
    rng = np.random.default_rng(0)
    n = 4_000
    obs = np.stack([np.full(n, 0.5), np.where(rng.random(n) < 0.8, 0.0, rng.exponential(1.0, n))], 1)
    nxt = obs.copy()
    nxt[:, 1] = np.where(rng.random(n) < 0.8, 0.0, rng.exponential(1.0, n))
    t = Transitions(obs, rng.uniform(-1, 1, (n, 1)), rng.normal(size=n), nxt, np.zeros(n), np.ones(n))
    shares = {}
    for transform in ("none", "quantile"):
        gen = SynthER("tiny", device="cpu", seed=0, transform=transform, train_steps=600).fit(t, progress=False)
        synthetic = gen.sample(2_000, progress=False)
        np.testing.assert_array_equal(synthetic.observations[:, 0], 0.5)  # held exactly in both
        np.testing.assert_array_equal(synthetic.next_observations[:, 0], 0.5)
        shares[transform] = float(np.mean(synthetic.observations[:, 1] == 0.0))
    assert shares["none"] < 0.05  # a Gaussian model never hits the atom exactly
    assert shares["quantile"] == pytest.approx(0.8, abs=0.1)  # the transform gives it its mass back


def test_auto_precision_follows_the_timing_and_stays_close_to_fp32(monkeypatch) -> None:
    monkeypatch.setattr(device_module, "_CHOICES", {})
    monkeypatch.setattr(device_module, "_matmul_seconds", lambda device, width: (2.0, 1.0))  # bf16 "faster"
    assert device_module.resolve_precision("auto", "cpu", width=64) == "bf16"
    monkeypatch.setattr(device_module, "_matmul_seconds", lambda device, width: (1.0, 2.0))
    assert device_module.resolve_precision("auto", "cpu", width=64) == "bf16"  # cached for the process
    assert device_module.resolve_precision("auto", "cpu", width=128) == "fp32"
    assert device_module.precision_timings()["cpu width 64"]["choice"] == "bf16"
    assert device_module.resolve_precision("fp32", "cpu") == "fp32"  # explicit wins
    with pytest.raises(ValueError, match="'auto', 'fp32' or 'bf16'"):
        device_module.resolve_precision("fp16", "cpu")  # type: ignore[arg-type]

    torch.manual_seed(0)
    net = ResidualMLP(6, width=64, depth=2, dim_t=16)
    x = torch.randn(256, 6)
    auto = EDMDenoiser(net, EDMSchedule(), precision="auto")  # width 64: the faked bf16
    fp32 = EDMDenoiser(net, EDMSchedule(), precision="fp32")
    assert auto.precision == "bf16"
    with torch.no_grad():
        gap = (auto(x, 1.0) - fp32(x, 1.0)).abs().max().item()
    assert gap < 0.05  # bf16 matrix products, fp32 state: within a few bf16 roundings of fp32


def test_auto_precision_times_the_cpu_on_one_thread_by_its_cpu_time(monkeypatch) -> None:
    """A busy machine must not flip the choice: waiting for the core is not counted, and the products run on one
    thread (two threads' OpenMP barrier waits for a parked thread: 16 ms per fp32 product instead of 0.12)."""
    import time

    cpu = torch.device("cpu")
    assert device_module._median_seconds(lambda: time.sleep(0.02), cpu, budget_s=0.05, give_up_s=1.0) < 0.005

    calls: list[int] = []

    def slow_first_then_fast() -> None:  # a one-off cost (a kernel's JIT) on the first run only
        calls.append(1)
        _spin(0.03 if len(calls) == 1 else 0.0005)

    assert device_module._median_seconds(slow_first_then_fast, cpu, budget_s=0.01, give_up_s=0.01) < 0.005
    slow_calls: list[int] = []
    median = device_module._median_seconds
    slow = median(lambda: slow_calls.append(1) or _spin(0.02), cpu, budget_s=0.01, give_up_s=0.01)
    assert slow > 0.01 and len(slow_calls) == 2  # emulated bf16: given up after two slow runs, not timed further
    previous = torch.get_num_threads()
    seen = []
    monkeypatch.setattr(device_module, "_matmul_seconds_here", lambda d, w: seen.append(torch.get_num_threads()))
    try:
        torch.set_num_threads(2)
        device_module._matmul_seconds(cpu, 64)
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)


def _spin(seconds: float) -> None:
    """Burn ``seconds`` of this thread's CPU time."""
    import time

    until = time.thread_time() + seconds
    while time.thread_time() < until:
        pass


def test_labelled_variant_diffuses_state_action_pairs_and_labels_them_with_the_models(tmp_path) -> None:
    import dyaug.datasets

    data = Transitions.from_minari(dyaug.datasets.load("dyaug/hopper/medium-replay-tiny-v0", progress=False))
    gen = SynthER("tiny", device="cpu", seed=0, labels="models", label_models="tiny")
    gen.fit(data, env_id="Hopper-v5", progress=False)
    assert gen.model.codec.model_dim == data.obs_dim + data.act_dim  # (s, a) only
    synthetic = gen.sample(300, seed=1, progress=False)
    labeller = gen.model.labeller
    with torch.no_grad():
        obs, act = torch.as_tensor(np.array(synthetic.observations)), torch.as_tensor(np.array(synthetic.actions))
        mean = labeller.dynamics.predict(obs, act)[0][list(labeller.dynamics.elites)]
    # every s' is one elite's mean prediction for its (s, a); r lies in the data's range with the margin
    gap = (mean - torch.as_tensor(np.array(synthetic.next_observations))[None]).abs().amax(dim=2).amin(dim=0)
    assert gap.max().item() < 1e-5
    low, high = labeller.support.reward_bounds
    assert synthetic.rewards.min() >= low - 1e-6 and synthetic.rewards.max() <= high + 1e-6
    # Hopper's own termination rule labels the terminal flag
    from dyaug.models import termination_rule

    expected = termination_rule("Hopper-v5")(obs, act, torch.as_tensor(np.array(synthetic.next_observations)))
    np.testing.assert_array_equal(synthetic.terminals, expected.numpy().astype(np.float32))
    path = gen.save(tmp_path / "labelled")
    again = SynthER.load(path, device="cpu").sample(300, seed=1, progress=False)
    for name in ("observations", "actions", "rewards", "next_observations", "terminals"):
        np.testing.assert_array_equal(getattr(again, name), getattr(synthetic, name), err_msg=name)
