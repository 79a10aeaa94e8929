"""2-D toys for the diffusion actors: SRPO's β sweep on six behaviour distributions, and Diffusion-QL beside a
Gaussian policy on a multimodal bandit.

1. SRPO (Chen et al., arXiv 2310.07297, appendix A). For each behaviour distribution (8gaussians, swissroll,
   checkerboard, 2spirals, rings, moons; no state; drawn in about [-1, 1]² and scaled by ``SCALE`` = 4, the usual
   scale of these toys, at which their modes stay apart under the VP-SDE's unit noise up to t ≈ 0.3) fit the
   VP-SDE behaviour model ε_ψ(a_t, t) (an LN-ResNet, :class:`dyaug.diffusion.networks.LNResNet`) on samples; then,
   for every target a_tar of a grid and every β of the sweep, optimise one free point a (started at a_tar) with
   SRPO's gradient (:func:`dyaug.actors.srpo_actor_loss`: ε baseline, t ~ U(0.02, 0.98)) against
   Q(a) = −‖a − a_tar‖², for each weighting ω(t) of ``weightings``: "score" α_t/σ_t (SRPO's first release),
   "uniform" 1, "sigma2" σ_t² (the paper's locomotion default). Small β: the points stay on the behaviour's
   support (mode seeking); large β: they reach their targets. A point is *inside the support* when it lies within
   ``support_radius`` (0.2 = 0.05 x SCALE) of the nearest of ``support_samples`` (20,000) fresh behaviour samples;
   the same test is applied to samples of the fitted model (its fidelity). Issue target: >= 95 % inside at the
   smallest β.
2. Diffusion-QL (Wang, Hunt & Zhou, arXiv 2208.06193) on a bandit: behaviour actions from four Gaussian modes
   (std 0.08) at (±0.6, ±0.6), reward r(a) = Σ_k w_k exp(−‖a − m_k‖² / (2 · 0.1²)) with the best mode at (0.6,
   0.6) (w = 1) and the others at w = 0.5. Diffusion-QL (the paper's 5-step chain, :func:`dyaug.actors.dql_actor_loss`)
   beside a Gaussian policy N(μ, diag σ²) trained on the same objective (−log-likelihood of the data as its BC
   term, plus η times the same normalised Q term through a reparameterised sample), both with η = 0 (pure BC) and
   η = ``--eta``; Q is the known reward (no learnt critic), so only the policy class differs. Reported: fraction of
   sampled actions within ``NEAR`` = 0.3 (a quarter of the mode spacing) of a mode and of the best mode, and their
   mean reward. The 5-step sampler itself spreads samples: with the exact ε of the behaviour mixture its samples lie
   0.32 from the nearest mode on average (34 % within 0.2), so BC cannot be sharper than that.

Prints a markdown report and writes ``actor_toys_srpo_<ω>.png`` and ``actor_toys_bandit.png``. Usage::

    python benchmarks/actor_toys.py            # 5 to 10 minutes on one CPU core
    python benchmarks/actor_toys.py --quick    # smoke test (short fits: the numbers mean little), under 2 minutes
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from common import machine
from torch import Tensor, nn

from dyaug.actors import DiffusionPolicy, dql_actor_loss, srpo_actor_loss
from dyaug.actors.batch import TransitionBatch
from dyaug.diffusion.networks import LNResNet
from dyaug.diffusion.training import TrainConfig, train
from dyaug.diffusion.vp import VPSDE


# ------------------------------------------------------------------------------------------- behaviour toys
def eight_gaussians(n: int, rng: np.random.Generator) -> np.ndarray:
    angle = rng.integers(0, 8, n) * (np.pi / 4)
    return 0.8 * np.stack([np.cos(angle), np.sin(angle)], 1) + 0.05 * rng.normal(size=(n, 2))


def swissroll(n: int, rng: np.random.Generator) -> np.ndarray:
    t = 1.5 * np.pi * (1 + 2 * rng.random(n))
    return np.stack([t * np.cos(t), t * np.sin(t)], 1) / 15.0 + 0.02 * rng.normal(size=(n, 2))


def checkerboard(n: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform on the 8 dark squares of a 4 x 4 board over [-0.9, 0.9]²."""
    column = rng.integers(0, 4, n)
    row = 2 * rng.integers(0, 2, n) + column % 2  # column + row is even: a dark square
    return (np.stack([column, row], 1) + rng.random((n, 2))) * 0.45 - 0.9


def two_spirals(n: int, rng: np.random.Generator) -> np.ndarray:
    turn = np.sqrt(rng.random(n)) * 3 * np.pi
    arm = np.where(rng.random(n) < 0.5, 1.0, -1.0)[:, None]
    points = arm * np.stack([-np.cos(turn) * turn, np.sin(turn) * turn], 1) / (3 * np.pi)
    return 0.95 * points + 0.02 * rng.normal(size=(n, 2))


def rings(n: int, rng: np.random.Generator) -> np.ndarray:
    radius = rng.integers(1, 5, n) * 0.225
    angle = rng.random(n) * 2 * np.pi
    return radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], 1) + 0.02 * rng.normal(size=(n, 2))


def moons(n: int, rng: np.random.Generator) -> np.ndarray:
    t = rng.random(n) * np.pi
    upper = rng.random(n) < 0.5
    x = np.where(upper, np.cos(t), 1 - np.cos(t)) - 0.5
    y = np.where(upper, np.sin(t), 0.5 - np.sin(t)) - 0.25
    return np.stack([x, y], 1) / 1.6 + 0.03 * rng.normal(size=(n, 2))


SCALE = 4.0  # the toys are drawn in about [-1, 1]² and used at this scale

TOYS: dict[str, Callable[[int, np.random.Generator], np.ndarray]] = {
    "8gaussians": eight_gaussians,
    "swissroll": swissroll,
    "checkerboard": checkerboard,
    "2spirals": two_spirals,
    "rings": rings,
    "moons": moons,
}


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    datasets: tuple[str, ...] = tuple(TOYS)
    behavior_samples: int = 20_000  # training samples per distribution
    behavior_hidden: int = 64  # LN-ResNet width (the paper's 256 is too slow for ~10 min on one core)
    behavior_blocks: int = 2
    behavior_steps: int = 5_000
    behavior_batch: int = 256
    behavior_lr: float = 2e-3
    betas: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)
    weightings: tuple[str, ...] = ("score", "uniform", "sigma2")
    grid: int = 7  # targets on a grid x grid lattice over SCALE * [-0.9, 0.9]²
    srpo_iterations: int = 1_000
    srpo_lr: float = 0.05  # Adam, cosine-decayed to 0
    support_samples: int = 20_000
    support_radius: float = 0.05 * SCALE
    model_samples: int = 2_000
    bandit_steps: int = 3_000
    bandit_hidden: int = 128
    bandit_lr: float = 1e-3
    eta: float = 1.0
    seed: int = 0
    threads: int = 1

    @classmethod
    def quick(cls, **changes: object) -> ToyConfig:
        short = {"behavior_steps": 300, "srpo_iterations": 200, "bandit_steps": 300, "support_samples": 5_000}
        return cls(**{**short, **changes})


# --------------------------------------------------------------------------------------------------- SRPO
def fit_behavior(samples: np.ndarray, config: ToyConfig, seed: int) -> nn.Module:
    """ε_ψ(a_t, t) fitted by E‖ε_ψ(α_t a + σ_t z, t) − z‖² (AdamW, cosine decay to 0, no EMA as SRPO); eval mode."""
    torch.manual_seed(seed)
    net = LNResNet(2, 0, hidden=config.behavior_hidden, blocks=config.behavior_blocks, dropout=0.0)
    sde = VPSDE()
    settings = TrainConfig(
        steps=config.behavior_steps, batch_size=config.behavior_batch, lr=config.behavior_lr, ema_decay=None
    )
    data = torch.as_tensor(samples, dtype=torch.float32)
    train(lambda a: sde.loss(net, a), net, data, settings, seed=seed, progress=False)
    return net.eval()


def srpo_points(behavior: nn.Module, targets: Tensor, weighting: str, config: ToyConfig, seed: int) -> Tensor:
    """Free points a (one per β and target, started at the targets) after ``srpo_iterations`` Adam steps on SRPO's
    surrogate loss; shaped ``(len(betas), n_targets, 2)``.

    The β of each point is folded into its Q, Q_i(a) = −β_i ‖a − a_tar,i‖², so one call of
    :func:`dyaug.actors.srpo_actor_loss` with β = 1 optimises the whole sweep: its β g_q term equals β_i ∇_a Q.
    """
    generator = torch.Generator().manual_seed(seed)
    betas = torch.tensor(config.betas, dtype=torch.float32).repeat_interleave(len(targets))
    goals = targets.repeat(len(config.betas), 1)
    points = nn.Parameter(goals.clone())
    optimizer = torch.optim.Adam([points], lr=config.srpo_lr)
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.srpo_iterations)
    sde = VPSDE()

    def q(_: object, actions: Tensor) -> Tensor:
        return -betas * (actions - goals).square().sum(-1)

    for _ in range(config.srpo_iterations):
        loss = srpo_actor_loss(points, None, behavior, q, sde, 1.0, weighting=weighting, generator=generator)
        optimizer.zero_grad()
        loss.actor_loss.backward()
        optimizer.step()
        decay.step()
    return points.detach().view(len(config.betas), len(targets), 2)


def inside_support(points: Tensor, reference: Tensor, radius: float) -> Tensor:
    """Whether each point lies within ``radius`` of the nearest reference sample."""
    return torch.cdist(points, reference).amin(1) <= radius


def srpo_toys(config: ToyConfig) -> tuple[list[list[str]], dict]:
    axis = SCALE * torch.linspace(-0.9, 0.9, config.grid)
    targets = torch.cartesian_prod(axis, axis)
    rows, figure = [], {}
    for index, name in enumerate(config.datasets):
        rng = np.random.default_rng(config.seed + index)
        samples = SCALE * TOYS[name](config.behavior_samples, rng)
        reference = torch.as_tensor(SCALE * TOYS[name](config.support_samples, rng), dtype=torch.float32)
        start = time.perf_counter()
        behavior = fit_behavior(samples, config, config.seed + index)
        fit_s = time.perf_counter() - start
        with torch.no_grad():
            generator = torch.Generator().manual_seed(config.seed)
            model = VPSDE().sample(behavior, (config.model_samples, 2), n_steps=50, generator=generator)
        model_inside = inside_support(model, reference, config.support_radius).float().mean().item()
        for weighting in config.weightings:
            start = time.perf_counter()
            points = srpo_points(behavior, targets, weighting, config, config.seed + index)
            inside = [inside_support(p, reference, config.support_radius).float().mean().item() for p in points]
            distance = [(p - targets).norm(dim=1).mean().item() for p in points]
            cells = [f"{100 * i:.0f} % / {d:.2f}" for i, d in zip(inside, distance, strict=True)]
            seconds = f"{fit_s:.0f} + {time.perf_counter() - start:.0f}"
            rows.append([name, weighting, f"{100 * model_inside:.0f} %", *cells, seconds])
            figure[(name, weighting)] = (samples[:3000], model.numpy(), points.numpy(), targets.numpy())
            print(f"{name} {weighting}: inside {[round(100 * i) for i in inside]} %", file=sys.stderr, flush=True)
    return rows, figure


def plot_srpo(path: Path, figure: dict, weighting: str, config: ToyConfig) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = {name: value for (name, w), value in figure.items() if w == weighting}
    columns = 1 + len(config.betas)
    fig, axes = plt.subplots(len(panels), columns, figsize=(2.2 * columns, 2.2 * len(panels)), squeeze=False)
    for row, (name, (samples, model, points, targets)) in enumerate(panels.items()):
        axes[row, 0].scatter(*model.T, s=1, color="C0")
        axes[row, 0].set_ylabel(name)
        for column, (beta, final) in enumerate(zip(config.betas, points, strict=True), start=1):
            ax = axes[row, column]
            ax.scatter(*samples.T, s=1, color="0.8")
            ax.plot(np.stack([targets[:, 0], final[:, 0]]), np.stack([targets[:, 1], final[:, 1]]), color="C1", lw=0.5)
            ax.scatter(*targets.T, s=4, marker="x", color="0.4")
            ax.scatter(*final.T, s=6, color="C3", zorder=3)
            if row == 0:
                ax.set_title(f"β = {beta:g}", fontsize=9)
        if row == 0:
            axes[row, 0].set_title("model samples", fontsize=9)
    limit = 1.2 * SCALE
    for ax in axes.flat:
        ax.set(xlim=(-limit, limit), ylim=(-limit, limit), xticks=[], yticks=[], aspect="equal")
    fig.suptitle(f"SRPO, ω(t) {weighting}: targets (x) -> optimised points (red), behaviour grey", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------- the bandit
MODES = torch.tensor([[0.6, 0.6], [-0.6, 0.6], [-0.6, -0.6], [0.6, -0.6]])
WEIGHTS = torch.tensor([1.0, 0.5, 0.5, 0.5])
NEAR = 0.3


def bandit_reward(actions: Tensor) -> Tensor:
    """r(a) = Σ_k w_k exp(−‖a − m_k‖² / (2 · 0.1²))."""
    return (WEIGHTS * torch.exp(-torch.cdist(actions, MODES).square() / (2 * 0.1**2))).sum(-1)


class GaussianPolicy(nn.Module):
    """A state-less N(μ, diag σ²) with a reparameterised ``forward`` (for the Q term) and ``bc_loss`` = −log p(a)."""

    def __init__(self) -> None:
        super().__init__()
        self.mean = nn.Parameter(torch.zeros(2))
        self.log_std = nn.Parameter(torch.zeros(2))

    def forward(self, observations: Tensor, generator: torch.Generator | None = None) -> Tensor:
        noise = torch.randn(observations.shape[0], 2, generator=generator)
        return self.mean + self.log_std.exp() * noise

    def bc_loss(self, observations: Tensor, actions: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return -torch.distributions.Normal(self.mean, self.log_std.exp()).log_prob(actions).sum(-1).mean()


def reward_critic(observations: Tensor, actions: Tensor) -> Tensor:
    """The bandit's Q, known exactly: its reward, as both heads of a twin critic (``(2, B)``)."""
    return bandit_reward(actions).expand(2, -1)


def train_bandit_policy(policy: nn.Module, data: Tensor, eta: float, config: ToyConfig) -> None:
    """``bandit_steps`` Adam steps (batch 256) on Diffusion-QL's actor loss L_BC + η L_Q
    (:func:`dyaug.actors.dql_actor_loss`) with the exact Q = r, so the comparison isolates the policy class (a
    learnt critic would add its own errors off the data's support)."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.Adam(policy.parameters(), lr=config.bandit_lr)
    zeros, ones = torch.zeros(256, 1), torch.ones(256)
    for _ in range(config.bandit_steps):
        actions = data[torch.randint(len(data), (256,), generator=generator)]
        batch = TransitionBatch(zeros, actions, bandit_reward(actions), zeros, ones, 0.99 * ones)
        loss = dql_actor_loss(policy, reward_critic, batch, eta).actor_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def bandit(config: ToyConfig) -> tuple[list[list[str]], dict]:
    rng = np.random.default_rng(config.seed)
    mode = rng.integers(0, 4, 10_000)
    data = (MODES[mode] + 0.08 * torch.as_tensor(rng.normal(size=(10_000, 2)), dtype=torch.float32)).float()
    policies: dict[str, Callable[[], nn.Module]] = {
        "Gaussian": GaussianPolicy,
        "Diffusion-QL": lambda: DiffusionPolicy(1, 2, hidden=config.bandit_hidden),
    }
    rows, figure = [], {}
    for eta in (0.0, config.eta):
        for name, make in policies.items():
            torch.manual_seed(config.seed)
            policy = make()
            start = time.perf_counter()
            train_bandit_policy(policy, data, eta, config)
            with torch.no_grad():
                actions = policy(torch.zeros(2000, 1), generator=torch.Generator().manual_seed(config.seed + 1))
            distance = torch.cdist(actions, MODES)
            near = (distance.amin(1) <= NEAR).float().mean().item()
            best = (distance[:, 0] <= NEAR).float().mean().item()
            reward = bandit_reward(actions).mean().item()
            seconds = time.perf_counter() - start
            rows.append(
                [name, f"{eta:g}", f"{100 * near:.0f} %", f"{100 * best:.0f} %", f"{reward:.3f}", f"{seconds:.0f}"]
            )
            figure[(name, eta)] = actions.numpy()
    distance = torch.cdist(data, MODES)
    near, best = ((d <= NEAR).float().mean().item() for d in (distance.amin(1), distance[:, 0]))
    rows.append(
        ["behaviour data", "-", f"{100 * near:.0f} %", f"{100 * best:.0f} %", f"{bandit_reward(data).mean():.3f}", ""]
    )
    return rows, {"data": data.numpy(), "policies": figure}


def plot_bandit(path: Path, figure: dict, config: ToyConfig) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = torch.linspace(-1.1, 1.1, 200)
    xx, yy = torch.meshgrid(grid, grid, indexing="xy")
    reward = bandit_reward(torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)).view(200, 200)
    fig, axes = plt.subplots(2, 2, figsize=(6.4, 6.4), squeeze=False)
    for ax, ((name, eta), actions) in zip(axes.flat, figure["policies"].items(), strict=True):
        ax.contour(xx, yy, reward, levels=6, colors="0.7", linewidths=0.6)
        ax.scatter(*figure["data"][:2000].T, s=1, color="0.85")
        ax.scatter(*actions[:1000].T, s=2, color="C3")
        ax.set_title(f"{name}, η = {eta:g}", fontsize=9)
        ax.set(xlim=(-1.1, 1.1), ylim=(-1.1, 1.1), xticks=[], yticks=[], aspect="equal")
    fig.suptitle("Bandit: reward contours, behaviour (grey), policy samples (red); best mode top right", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------------ main
def main(config: ToyConfig, out: Path) -> None:
    torch.set_num_threads(config.threads)
    out.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now().isoformat(timespec="seconds")
    start = time.perf_counter()
    srpo_rows, srpo_figure = srpo_toys(config)
    bandit_rows, bandit_figure = bandit(config)
    for weighting in config.weightings:
        plot_srpo(out / f"actor_toys_srpo_{weighting}.png", srpo_figure, weighting, config)
    plot_bandit(out / "actor_toys_bandit.png", bandit_figure, config)

    print(f"## Diffusion-actor toys ({started})\n")
    print(f"- machine: {machine()}")
    print(f"- command: `python {' '.join(sys.argv)}`")
    print(f"- settings: {config}")
    total = time.perf_counter() - start
    print(f"- seed {config.seed} (distribution k uses seed {config.seed} + k); total {total:.0f} s\n")
    print(
        f"### SRPO β sweep\n\nBehaviour model: LN-ResNet {config.behavior_hidden} x {config.behavior_blocks} blocks, "
        f"{config.behavior_steps} steps at batch {config.behavior_batch} on {config.behavior_samples} samples. "
        f"{config.grid}² targets over [-{0.9 * SCALE:g}, {0.9 * SCALE:g}]², one free point each (started at its "
        f"target), {config.srpo_iterations} Adam steps, for each weighting ω(t). Cells: "
        f"share of points inside the support (within {config.support_radius} of the nearest of "
        f"{config.support_samples} behaviour samples) / mean distance to their targets. Target: >= 95 % inside at "
        f"β = {config.betas[0]:g}.\n"
    )
    header = ["distribution", "ω(t)", "model samples inside", *(f"β = {b:g}" for b in config.betas), "fit + SRPO s"]
    print("| " + " | ".join(header) + " |")
    print("|---|" + "---:|" * (len(header) - 1))
    for row in srpo_rows:
        print("| " + " | ".join(row) + " |")
    print(
        "\n### Diffusion-QL vs a Gaussian policy on a four-mode bandit\n\n"
        f"{config.bandit_steps} steps at batch 256 on 10,000 behaviour actions; 2,000 policy samples each. "
        f"Near a mode: within {NEAR} of a mode centre; Q = r exactly.\n"
    )
    print("| policy | η | near a mode | near the best mode | mean reward | s |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in bandit_rows:
        print("| " + " | ".join(row) + " |")
    pngs = [out / f"actor_toys_srpo_{w}.png" for w in config.weightings] + [out / "actor_toys_bandit.png"]
    print("\nPlots: " + ", ".join(f"`{p}`" for p in pngs))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", choices=list(TOYS), help="behaviour distributions (default: all)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--eta", type=float, help=f"Diffusion-QL's η on the bandit (default {ToyConfig.eta})")
    parser.add_argument("--support-radius", type=float, help=f"default {ToyConfig.support_radius:g}")
    parser.add_argument("--weightings", nargs="+", choices=["score", "uniform", "sigma2"], help="SRPO's ω(t) choices")
    parser.add_argument("--threads", type=int, help=f"torch threads (default {ToyConfig.threads})")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "runs" / "actor_toys")
    parser.add_argument("--quick", action="store_true", help="smoke test: short fits and optimisations")
    args = parser.parse_args()
    chosen = {
        k: v
        for k, v in (
            ("datasets", tuple(args.datasets) if args.datasets else None),
            ("seed", args.seed),
            ("eta", args.eta),
            ("support_radius", args.support_radius),
            ("weightings", tuple(args.weightings) if args.weightings else None),
            ("threads", args.threads),
        )
        if v is not None
    }
    config = ToyConfig.quick(**chosen) if args.quick else ToyConfig(**chosen)
    main(config, args.out.with_name(args.out.name + "_quick") if args.quick else args.out)
