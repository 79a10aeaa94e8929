from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dyaug.data import MinMaxNormalizer, Normalizer, ZScoreNormalizer


def _data(n: int = 4000, seed: int = 0) -> np.ndarray:
    """Columns with different means/scales, plus a 0/1 flag column (index 3) and a constant column (4)."""
    rng = np.random.default_rng(seed)
    x = np.empty((n, 5), np.float32)
    x[:, 0] = rng.normal(3.0, 2.0, n)
    x[:, 1] = rng.normal(-100.0, 0.01, n)
    x[:, 2] = rng.uniform(-7.0, 5.0, n)
    x[:, 3] = rng.integers(0, 2, n)
    x[:, 4] = 2.5
    return x


def test_zscore_statistics_follow_synther():
    x = _data()
    norm = ZScoreNormalizer.fit(x, skip=(3,), relative_floor=0.0)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(norm.shift, np.r_[x64[:, :3].mean(0), 0.0, 2.5], rtol=1e-13)
    np.testing.assert_allclose(norm.scale[:3], x64[:, :3].std(0, ddof=1) + 1e-5, rtol=1e-13)
    assert norm.scale[3] == 1.0
    assert norm.scale[4] == 1e-5  # constant column: std 0, plus eps
    z = norm.normalize(x)
    assert z.dtype == np.float32
    np.testing.assert_allclose(z[:, :3].astype(np.float64).mean(0), 0.0, atol=1e-5)
    std = x64[:, :3].std(0, ddof=1)
    np.testing.assert_allclose(z[:, :3].astype(np.float64).std(0, ddof=1), std / (std + 1e-5), rtol=1e-5)
    assert z[:, 1].std() < 0.9995  # eps is visible on the narrow column: std / (std + 1e-5) with std ~ 0.01


def test_minmax_maps_range_to_minus_one_one_and_keeps_constant_columns_finite():
    x = _data()
    norm = MinMaxNormalizer.fit(x, skip=[3], relative_floor=0.0)
    z = norm.normalize(x.astype(np.float64))
    np.testing.assert_allclose(z[:, :3].min(0), -1.0, atol=1e-12)
    np.testing.assert_allclose(z[:, :3].max(0), 1.0, atol=1e-12)
    # DyDiff's formula 2 (x - min) / (max - min) - 1, column 2
    low, high = x[:, 2].astype(np.float64).min(), x[:, 2].astype(np.float64).max()
    np.testing.assert_allclose(z[:, 2], 2 * (x[:, 2] - low) / (high - low) - 1, atol=1e-12)
    np.testing.assert_array_equal(z[:, 4], 0.0)  # constant column maps to 0, no division by zero
    assert np.isfinite(z).all()


@pytest.mark.parametrize("cls", [ZScoreNormalizer, MinMaxNormalizer])
def test_nearly_constant_columns_get_a_floor_on_their_scale(cls):
    x = _data()  # column 1: -100 ± 0.01, its spread far below 1% of its magnitude
    norm = cls.fit(x, skip=(3,))
    assert norm.scale[1] == pytest.approx(0.01 * np.abs(x[:, 1].astype(np.float64)).max(), rel=1e-4)
    # a deviation of 0.1 (10 standard deviations of the data) is an input of about 0.1, not 10
    z = norm.normalize(np.array([[3.0, x[:, 1].mean() + 0.1, 0.0, 1.0, 2.5]]))
    assert abs(z[0, 1]) < 0.2
    # columns with a normal spread (and the skipped flag) keep the papers' statistics exactly
    plain = cls.fit(x, skip=(3,), relative_floor=0.0)
    np.testing.assert_array_equal(norm.scale[[0, 2, 3]], plain.scale[[0, 2, 3]])
    # a constant column: z-score floors it too (1% of 2.5), min-max keeps its scale of 1
    assert norm.scale[4] == pytest.approx(0.025 + 1e-5 if cls is ZScoreNormalizer else 1.0, abs=1e-9)


@pytest.mark.parametrize("cls", [ZScoreNormalizer, MinMaxNormalizer])
def test_numpy_round_trip_is_tight_and_skipped_dims_are_bit_exact(cls):
    x = _data()
    norm = cls.fit(x, skip=(3,))
    back = norm.unnormalize(norm.normalize(x))
    assert back.dtype == np.float32
    err = np.abs(back.astype(np.float64) - x)
    # float32 precision: within 1e-6 of each column's scale, or one float32 spacing of the value itself
    bound = 1e-6 * norm.scale + np.spacing(np.abs(x)).astype(np.float64)
    assert (err <= bound).all(), float((err - bound).max())
    np.testing.assert_array_equal(norm.normalize(x)[:, 3], x[:, 3])
    np.testing.assert_array_equal(back[:, 3], x[:, 3])
    # float64 input stays float64 and round-trips to float64 precision
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(norm.unnormalize(norm.normalize(x64)), x64, rtol=0, atol=1e-12 * 1e3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_torch_tensors_keep_dtype_device_and_match_numpy(dtype):
    x = _data(200)
    norm = ZScoreNormalizer.fit(x, skip=(3,))
    t = torch.as_tensor(x).to(dtype).reshape(10, 20, 5)  # any leading dimensions
    z = norm.normalize(t)
    assert z.dtype == dtype and z.device == t.device and z.shape == t.shape
    expected = norm.normalize(t.double().numpy().reshape(-1, 5))
    tol = {torch.float32: 1e-5, torch.float64: 1e-12, torch.bfloat16: 2e-2}[dtype]
    np.testing.assert_allclose(z.double().numpy().reshape(-1, 5), expected, atol=tol * 50, rtol=tol)
    back = norm.unnormalize(z)
    assert torch.equal(back[..., 3], t[..., 3])  # flags pass through exactly, whatever the dtype
    if dtype != torch.bfloat16:
        np.testing.assert_allclose(back.double().numpy(), t.double().numpy(), rtol=tol * 10, atol=tol * 10)


def test_tensors_never_leave_their_device():
    # Meta tensors have no data: any host copy (.cpu(), .item(), .numpy()) would raise.
    norm = MinMaxNormalizer.fit(_data(50))
    t = torch.empty(7, 5, device="meta", dtype=torch.float16)
    for out in (norm.normalize(t), norm.unnormalize(t)):
        assert out.device.type == "meta" and out.dtype == torch.float16 and out.shape == (7, 5)


def test_state_dict_round_trip_uses_plain_arrays_and_kind():
    x = _data()
    for cls in (ZScoreNormalizer, MinMaxNormalizer):
        norm = cls.fit(x, skip=(3,))
        state = norm.state_dict()
        assert set(state) == {"kind", "shift", "scale"}
        assert isinstance(state["kind"], str) and state["kind"] == cls.kind
        assert all(isinstance(state[k], np.ndarray) and state[k].dtype == np.float64 for k in ("shift", "scale"))
        loaded = Normalizer.from_state_dict(state)
        assert type(loaded) is cls
        np.testing.assert_array_equal(loaded.normalize(x), norm.normalize(x))
        assert type(cls.from_state_dict(state)) is cls
        as_json = json.loads(json.dumps(norm.json_state()))  # the JSON form: lists, bit-exact floats
        np.testing.assert_array_equal(Normalizer.from_state_dict(as_json).normalize(x), norm.normalize(x))
    with pytest.raises(ValueError, match=r"load it with Normalizer\.from_state_dict"):
        ZScoreNormalizer.from_state_dict(MinMaxNormalizer.fit(x).state_dict())
    with pytest.raises(ValueError, match="unknown normalizer kind 'robust'"):
        Normalizer.from_state_dict({"kind": "robust", "shift": np.zeros(5), "scale": np.ones(5)})
    with pytest.raises(ValueError, match=r"missing \['scale'\]"):
        Normalizer.from_state_dict({"kind": "zscore", "shift": np.zeros(5)})


def test_wrong_feature_dimension_names_expected_and_got():
    norm = MinMaxNormalizer.fit(_data())
    with pytest.raises(ValueError, match=r"expects feature dimension 5 .*got 4"):
        norm.normalize(np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match=r"expects feature dimension 5 .*got 6"):
        norm.unnormalize(torch.zeros(2, 3, 6))
    with pytest.raises(TypeError, match="numpy arrays or torch tensors"):
        norm.normalize([[0.0] * 5])


def test_fit_validates_its_input():
    with pytest.raises(ValueError, match=r"shape \(N, D\) with N >= 2"):
        ZScoreNormalizer.fit(np.zeros((1, 3)))
    with pytest.raises(ValueError, match=r"shape \(N, D\)"):
        MinMaxNormalizer.fit(np.zeros(5))
    with pytest.raises(ValueError, match="NaN or Inf"):
        MinMaxNormalizer.fit(np.array([[0.0, np.nan], [1.0, 2.0]]))
    with pytest.raises(ValueError, match="skip index 7 is out of range for D=3"):
        MinMaxNormalizer.fit(np.zeros((4, 3)), skip=(7,))
    with pytest.raises(ValueError, match="eps must be positive"):
        ZScoreNormalizer.fit(np.zeros((4, 3)), eps=0.0)
    # fitting on a tensor equals fitting on the same numpy data
    x = _data(100)
    np.testing.assert_array_equal(MinMaxNormalizer.fit(torch.as_tensor(x)).scale, MinMaxNormalizer.fit(x).scale)
