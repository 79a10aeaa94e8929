"""Denoiser networks: paper parameter counts, the ``net(x, noise_level, cond)`` seam, embeddings, errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dyaug.diffusion.edm import EDMDenoiser, EDMSchedule
from dyaug.diffusion.networks import DQLMLP, LNResNet, ResidualMLP, TemporalUNet1d
from dyaug.diffusion.networks.embeddings import FourierFeatures, SinusoidalFeatures


def trainable(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


@pytest.mark.parametrize("width", [2048, 1024])
@pytest.mark.parametrize("dim", [27, 42])
def test_residual_mlp_parameter_count_matches_synther_formula(width: int, dim: int) -> None:
    with torch.device("meta"):
        net = ResidualMLP(dim, width=width, depth=6, dim_t=128, rff_dim=16)
    w, t = width, 128
    formula = 6 * (w * w + w) + (t * w + w) + (17 * t + t) + (t * t + t) + (dim * t + t) + (w * dim + dim)
    assert trainable(net) == formula
    # synther.md §2 table: 25.55M / 25.52M (W=2048), 6.50M / 6.48M (W=1024) for D=42 / D=27.
    table = {(2048, 42): 25.55e6, (2048, 27): 25.52e6, (1024, 42): 6.50e6, (1024, 27): 6.48e6}
    assert abs(formula - table[width, dim]) < 0.01e6


def test_temporal_unet_paper_size_is_about_58_8m_parameters() -> None:
    with torch.device("meta"):
        net = TemporalUNet1d(14, dim=128, dim_mults=(1, 4, 8))
    assert abs(trainable(net) - 58.8e6) < 0.1e6


def small_networks() -> dict[str, tuple[nn.Module, tuple[int, ...], int]]:
    """name -> (network, x shape, cond_dim), tiny sizes."""
    torch.manual_seed(0)
    return {
        "residual_mlp": (ResidualMLP(5, width=32, depth=2, dim_t=16, cond_dim=3), (4, 5), 3),
        "temporal_unet": (TemporalUNet1d(6, dim=32, dim_mults=(1, 2, 4), cond_dim=3), (4, 8, 6), 3),
        "ln_resnet": (LNResNet(5, 3, hidden=32, blocks=2), (4, 5), 3),
        "dql_mlp": (DQLMLP(5, 3, hidden=32), (4, 5), 3),
    }


NAMES = list(small_networks())


@pytest.mark.parametrize("name", NAMES)
def test_output_shape_noise_dependence_and_every_parameter_used(name: str) -> None:
    net, shape, cond_dim = small_networks()[name]
    net.eval()
    x, cond = torch.randn(shape), torch.randn(shape[0], cond_dim)
    t = torch.rand(shape[0])
    out = net(x, t, cond)
    assert out.shape == x.shape
    assert not torch.allclose(out, net(x, t + 1.0, cond)), "the noise level must change the output"
    assert not torch.allclose(out, net(x, t, cond + 1.0)), "cond must change the output"
    out.square().sum().backward()
    unused = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert unused == []


@pytest.mark.parametrize("name", NAMES)
def test_samples_do_not_interact_across_the_batch(name: str) -> None:
    net, shape, cond_dim = small_networks()[name]
    net.eval()
    x, cond, t = torch.randn(shape), torch.randn(shape[0], cond_dim), torch.rand(shape[0])
    batched = net(x, t, cond)
    single = torch.cat([net(x[i : i + 1], t[i : i + 1], cond[i : i + 1]) for i in range(shape[0])])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_zero_dim_noise_level_broadcasts_like_a_batch_of_equal_levels(name: str) -> None:
    net, shape, cond_dim = small_networks()[name]
    net.eval()
    x, cond = torch.randn(shape), torch.randn(shape[0], cond_dim)
    torch.testing.assert_close(net(x, torch.tensor(0.3), cond), net(x, torch.full((shape[0],), 0.3), cond))


@pytest.mark.parametrize("name", NAMES)
def test_cond_errors_name_the_problem(name: str) -> None:
    net, shape, cond_dim = small_networks()[name]
    x, t = torch.randn(shape), torch.rand(shape[0])
    with pytest.raises(ValueError, match=f"cond_dim={cond_dim}"):
        net(x, t)
    with pytest.raises(ValueError, match=rf"cond of shape \({shape[0]}, {cond_dim}\)"):
        net(x, t, torch.randn(shape[0], cond_dim + 1))
    with pytest.raises(ValueError, match="noise_level of shape"):
        net(x, t[:, None], torch.randn(shape[0], cond_dim))
    with pytest.raises(ValueError, match="x_dim"):
        net(torch.randn(*shape[:-1], shape[-1] + 1), t, torch.randn(shape[0], cond_dim))


def test_unconditional_network_rejects_cond() -> None:
    net = ResidualMLP(3, width=8, depth=1, dim_t=8)
    with pytest.raises(ValueError, match="cond_dim=0"):
        net(torch.randn(2, 3), torch.rand(2), torch.randn(2, 1))


def test_temporal_unet_needs_horizon_divisible_by_downsampling_factor() -> None:
    net = TemporalUNet1d(4, dim=8, dim_mults=(1, 2, 4))
    assert net(torch.randn(2, 12, 4), torch.rand(2)).shape == (2, 12, 4)
    with pytest.raises(ValueError, match="divisible by 4"):
        net(torch.randn(2, 10, 4), torch.rand(2))
    with pytest.raises(ValueError, match="GroupNorm"):
        TemporalUNet1d(4, dim=12, dim_mults=(1, 2))


def test_temporal_unet_convolves_over_time() -> None:
    """Changing one time step changes its neighbours' outputs (the kernel spans time, not channels)."""
    torch.manual_seed(0)
    net = TemporalUNet1d(3, dim=8, dim_mults=(1, 2)).eval()
    x, t = torch.randn(1, 16, 3), torch.rand(1)
    y = x.clone()
    y[0, 5] += 1.0
    changed = (net(x, t) - net(y, t)).abs().sum(-1)[0] > 1e-6
    assert changed[4] and changed[6]


def test_fourier_features_are_fixed_gaussian_frequencies() -> None:
    torch.manual_seed(0)
    features = FourierFeatures(4096, scale=30.0)
    assert list(features.parameters()) == [] and "freqs" in features.state_dict()
    assert features.freqs.std().item() == pytest.approx(30.0, rel=0.05)
    assert abs(features.freqs.mean().item()) < 3 * 30.0 / math.sqrt(4096)
    with_t = FourierFeatures(8, include_input=True)
    t = torch.tensor([0.0, 0.25, -1.5])
    out = with_t(t)
    assert out.shape == (3, 17)
    torch.testing.assert_close(out[:, 0], t)
    torch.testing.assert_close(out[:, 1:9], torch.sin(2 * math.pi * t[:, None] * with_t.freqs))
    torch.testing.assert_close(out[0], torch.cat([torch.zeros(9), torch.ones(8)]))


def test_sinusoidal_features_closed_form() -> None:
    t = torch.tensor([0.0, 1.0, 3.0])
    out = SinusoidalFeatures(4)(t)  # frequencies 1 and 1e-4
    want = torch.stack([t.sin(), (t * 1e-4).sin(), t.cos(), (t * 1e-4).cos()], dim=1)
    torch.testing.assert_close(out, want)
    with pytest.raises(ValueError, match="even dim"):
        SinusoidalFeatures(5)


def test_ln_resnet_dropout_only_in_train_mode() -> None:
    torch.manual_seed(0)
    net = LNResNet(2, 3, hidden=16, blocks=1, dropout=0.5)
    x, t, cond = torch.randn(8, 2), torch.rand(8), torch.randn(8, 3)
    assert not torch.equal(net(x, t, cond), net(x, t, cond))
    net.eval()
    assert torch.equal(net(x, t, cond), net(x, t, cond))


def test_bf16_edm_denoiser_stays_close_to_fp32() -> None:
    torch.manual_seed(0)
    net = ResidualMLP(6, width=64, depth=2, dim_t=16)
    schedule = EDMSchedule.synther()
    x, sigma = torch.randn(64, 6), torch.full((64,), 0.5)
    fp32 = EDMDenoiser(net, schedule, "fp32")(x, sigma)
    bf16 = EDMDenoiser(net, schedule, "bf16")(x, sigma)
    assert bf16.dtype == torch.float32
    assert 0 < (bf16 - fp32).abs().max().item() < 0.05 * fp32.abs().max().item()
