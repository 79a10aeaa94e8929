"""``SynthER``: fit a transition diffusion model on RL data and sample synthetic transitions from it.

Lu, Ball, Teh & Parker-Holder (2023), "Synthetic Experience Replay" (arXiv 2303.06614).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import nn
from tqdm.auto import tqdm

from dyaug.data.coerce import ActionBounds, env_id_of, mix_synthetic, to_transitions
from dyaug.data.coerce import action_bounds as infer_action_bounds
from dyaug.data.columns import ColumnCodec, ColumnTransform, ConstantColumns
from dyaug.data.transitions import Transitions
from dyaug.device import maybe_compiled, precision_timings, resolve_device
from dyaug.diffusion.edm import EDMDenoiser, edm_loss
from dyaug.diffusion.ema import EMA
from dyaug.diffusion.settings import EDM_SAMPLING_FIELDS, check_sampling_overrides
from dyaug.diffusion.training import train
from dyaug.distributed import data_parallel
from dyaug.generators import GeneratorBase, checkpointed, fit_identity
from dyaug.persistence import load_model, save_model, write_directory
from dyaug.synther.config import SynthERConfig, resolve_config
from dyaug.synther.labels import Labeller
from dyaug.synther.rows import DataRange, RowLayout
from dyaug.validation import check_int

CHECKPOINT_KIND = "synther"
MAIN_FILE = "synther.safetensors"


@dataclasses.dataclass(frozen=True)
class SampleStats:
    """What the last :meth:`SynthER.sample` call did: ``generated`` rows, ``rejected`` of them as outliers,
    ``outside_by_column`` (D,) rows outside the data range per row column (a row may count in several),
    ``seconds`` of wall time."""

    generated: int
    rejected: int
    outside_by_column: np.ndarray
    seconds: float

    @property
    def kept(self) -> int:
        return self.generated - self.rejected


@dataclasses.dataclass(frozen=True)
class FittedModel:
    """A trained generator: the EMA network F, the row codec (constant columns, transforms, z-score), and what
    post-processing needs."""

    network: nn.Module
    codec: ColumnCodec
    layout: RowLayout
    action_bounds: ActionBounds
    data_range: DataRange
    training_data: dict[str, Any]
    labeller: Labeller | None = None


class SynthER(GeneratorBase):
    """Synthetic Experience Replay (Lu et al. 2023): an unconditional EDM model of transitions.

    Rows x = [s, a, r, s', terminal] (s' − s in place of s' with ``residual``) are z-scored per column,
    x̃ = (x − μ)/(max(σ, floor) + 1e-5), except the terminal flag, which stays 0/1; constant columns are left
    out of x̃ and copied back, and ``transform`` reshapes sparse or heavy-tailed columns first (see
    :class:`~dyaug.data.columns.ColumnCodec`). An EDM denoiser (see :class:`SynthERConfig`) is trained on x̃
    and its EMA weights generate new rows, which are decoded and post-processed (terminal thresholded at 0.5,
    actions clipped to the action bounds; see :meth:`sample`).

    >>> gen = SynthER(preset="cpu").fit(minari_dataset)          # or Transitions, a d3rlpy/SB3 buffer
    >>> synthetic = gen.sample(100_000)                          # Transitions
    >>> buffer = gen.augment(d3rlpy_buffer, 100_000, real_ratio=0.5)
    >>> synthetic.to_minari("me/hopper-synthetic-v0", "Hopper-v5", synthetic=True, generator=gen.provenance())

    :param preset: ``"tiny"`` (tests), ``"cpu"`` (minutes on 2 cores), ``"cpu-v1"`` (``"cpu"`` with its former
        Heun sampler) or ``"paper"`` (the paper's settings).
    :param device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda:1"``, ...
    :param seed: seeds the network's initialisation, training and sampling: the same seed on the same data
        gives the same samples (on the CPU).
    :param overrides: fields of :class:`SynthERConfig` replacing the preset's (``TypeError`` for others).
    """

    config: SynthERConfig
    _model: FittedModel | None

    def __init__(self, preset: str = "cpu", device: str | torch.device = "auto", seed: int = 0, **overrides: Any):
        super().__init__(resolve_config(preset, overrides), preset, device, seed)
        self.last_sample_stats: SampleStats | None = None

    # ----------------------------------------------------------------------------------------- fitting
    def fit(
        self,
        data: Any,
        *,
        action_bounds: tuple[ArrayLike, ArrayLike] | None = None,
        env_id: str | None = None,
        progress: bool = True,
        callback: Callable[[SynthER, int], None] | None = None,
        checkpoint: str | Path | None = None,
        checkpoint_every: int = 1000,
    ) -> SynthER:
        """Train a fresh model on ``data`` (see :func:`dyaug.data.coerce.to_transitions` for what is accepted).

        Also records, for :meth:`sample`: the action bounds, ``action_bounds=(low, high)`` when given (e.g.
        ``env.action_space.low, env.action_space.high`` for plain ``Transitions``), else the data's Box action
        space where it has one (Minari, SB3) and the data's min/max otherwise (see
        :func:`dyaug.data.coerce.action_bounds`); and each row column's min/max (for ``reject_outside``).
        ``data`` is never modified. With ``labels="models"`` the single-step models are fitted too; terminations
        follow the known rule of ``env_id`` (default: the environment a Minari dataset records) or a learned
        classifier. ``callback(self, step)`` runs after every 100 training steps with the generator sampling
        from the EMA weights of that step (to follow fidelity during training); the label models are fitted after
        the diffusion model, so ``labels="models"`` generators get no callback.

        With ``checkpoint`` (a file path) the diffusion model's training state is written there atomically every
        ``checkpoint_every`` steps and at the end, and a fit that finds the file resumes from it: on the CPU the
        weights equal an uninterrupted fit's. It resumes only the same data (:meth:`Transitions.fingerprint`),
        training settings (sampling ones may change), seed and training precision, else ``ValueError`` naming what
        differs (with ``train_precision="auto"``, pin the precision the checkpoint names to resume where "auto"
        chooses the other). The file stays after the fit: a later fit with it trains nothing; delete it to start
        over. The label models are refitted (minutes). Returns ``self``.
        """
        transitions = to_transitions(data)
        bounds = (
            infer_action_bounds(data, transitions)
            if action_bounds is None
            else ActionBounds(np.asarray(action_bounds[0]), np.asarray(action_bounds[1]), source="given")
        )
        if bounds.low.shape != (transitions.act_dim,):
            raise ValueError(
                f"action_bounds have {bounds.low.shape[0]} dimensions but the actions {transitions.act_dim}; "
                "pass (low, high) of the action space the data comes from."
            )
        config = self.config
        joint = config.labels == "joint"
        layout = RowLayout(transitions.obs_dim, transitions.act_dim, residual=config.residual, joint=joint)
        rows = layout.encode(transitions)
        codec = ColumnCodec.fit(
            rows,
            skip=[] if layout.terminal_column is None else [layout.terminal_column],
            transform=config.transform,
            transform_columns=config.transform_columns,
        )
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(self.seed)
            network = self.config.network(codec.model_dim).to(self.device)
        denoiser = EDMDenoiser(  # under torchrun: DistributedDataParallel, gradients averaged over the ranks
            maybe_compiled(data_parallel(network), config.compile), config.schedule(), precision=config.train_precision
        )
        train_config = self.config.train_config(len(transitions))
        assert train_config.ema_decay is not None  # SynthERConfig.ema_decay is a float
        ema = EMA(network, train_config.ema_decay, train_config.ema_every, train_config.ema_warmup)

        def model_of(ema_network: nn.Module, labeller: Labeller | None = None) -> FittedModel:
            return FittedModel(
                network=ema_network,
                codec=codec,
                layout=layout,
                action_bounds=bounds,
                data_range=DataRange.of(rows, layout),
                training_data={
                    "id": getattr(data, "id", None),
                    "n_transitions": len(transitions),
                    "obs_dim": transitions.obs_dim,
                    "act_dim": transitions.act_dim,
                    "env_id": env_id if env_id is not None else env_id_of(data),
                },
                labeller=labeller,
            )

        def on_log(step: int) -> None:
            if callback is not None and joint:
                self._model = model_of(ema.module)
                callback(self, step)

        result = train(
            lambda batch: edm_loss(denoiser, batch),
            network,
            torch.as_tensor(codec.encode(rows), dtype=torch.float32, device=self.device),
            checkpointed(train_config, checkpoint, checkpoint_every),
            seed=self.seed,
            ema=ema,
            progress=progress,
            desc="SynthER fit",
            checkpoint_path=checkpoint,
            identity=fit_identity(
                config.to_dict(), transitions, denoiser.precision, untrained=(*EDM_SAMPLING_FIELDS, "label_models")
            ),
            callback=on_log,
        )
        labeller = None
        if not joint:
            labeller = Labeller.fit(
                transitions,
                env_id if env_id is not None else env_id_of(data),
                config.label_models,
                seed=self.seed,
                device=self.device,
                progress=progress,
            )
        self._installed(model_of(ema.module, labeller))
        self.training_losses = list(result.losses)
        return self

    # ---------------------------------------------------------------------------------------- sampling
    def sample(
        self,
        n: int,
        *,
        batch_size: int | None = None,
        progress: bool = True,
        reject_outside: float | None = None,
        seed: int | None = None,
    ) -> Transitions:
        """Generate ``n`` rows and return them as float32 :class:`Transitions` with ``timeouts = 0``.

        Rows are drawn ``batch_size`` (default ``config.sample_batch_size``) at a time on the model's device,
        with one host copy per batch. Post-processing, chosen deliberately (the official code does neither of
        the first two):

        - terminal = 1[x_terminal > 0.5];
        - actions clipped to the action bounds recorded by :meth:`fit` (``model.action_bounds``);
        - ``reject_outside=k`` drops every row with a column outside
          [min − k (max − min), max + k (max − min)] of the training data (judged on the raw generated row,
          before clipping; see :class:`~dyaug.synther.rows.DataRange`), so fewer than ``n`` rows may come
          back. ``last_sample_stats`` counts what was generated and rejected.

        With ``labels="models"`` the rows are (s, a) pairs, labelled by the single-step models (the rejection
        judges the pair).

        Randomness: ``seed`` when given, else the generator's seed and the number of earlier ``sample`` calls
        since fitting or loading, so successive calls differ and a loaded model repeats the sequence of the
        model that was saved. Same seed and ``batch_size``, same samples on the CPU.
        """
        model = self.model
        check_int("n", n, hint="how many transitions to generate")
        batch_size = self.config.sample_batch_size if batch_size is None else batch_size
        check_int("batch_size", batch_size)
        seed = self._call_seed(seed)
        start = time.perf_counter()
        rows = self._generate_rows(int(n), int(batch_size), seed, progress)
        outside = np.zeros_like(rows, dtype=bool)
        if reject_outside is not None:
            outside = model.data_range.outside(rows, reject_outside)
        rejected = outside.any(axis=1)
        self.last_sample_stats = SampleStats(
            generated=n,
            rejected=int(rejected.sum()),
            outside_by_column=outside.sum(axis=0),
            seconds=time.perf_counter() - start,
        )
        return self.decode(rows[~rejected], seed=seed)

    def decode(self, rows: np.ndarray, *, seed: int = 0) -> Transitions:
        """Transitions from ``(n, D)`` un-normalised generated rows (``model.codec.decode`` of the sampler's
        output): joint rows split by the layout; with ``labels="models"`` the (s, a) pairs labelled by the
        single-step models, their randomness from ``seed``. Actions are clipped to ``model.action_bounds``."""
        model = self.model
        if model.labeller is None:
            return model.layout.decode(rows, model.action_bounds)
        o = model.layout.obs_dim
        actions = np.clip(rows[:, o:], model.action_bounds.low, model.action_bounds.high).astype(np.float32)
        return model.labeller.label(
            np.ascontiguousarray(rows[:, :o]), actions, seed=seed, batch_size=self.config.sample_batch_size
        )

    @torch.no_grad()
    def _generate_rows(self, n: int, batch_size: int, seed: int, progress: bool) -> np.ndarray:
        """``(n, D)`` un-normalised float32 rows, ``batch_size`` at a time."""
        model, config = self.model, self.config
        schedule, sampler = config.schedule(), config.sampler()
        denoiser = EDMDenoiser(self._sampling_network(), schedule, precision=config.sample_precision)
        generator = torch.Generator(self.device).manual_seed(seed)
        parts = []
        with tqdm(total=n, desc="SynthER sample", unit="transition", disable=not progress) as bar:
            for start in range(0, n, batch_size):
                size = min(batch_size, n - start)
                x = sampler.sample(
                    denoiser, schedule, (size, model.codec.model_dim), generator=generator, device=self.device
                )
                parts.append(model.codec.decode(x.cpu().numpy()))
                bar.update(size)
        return np.concatenate(parts)

    def _sampling_network(self) -> nn.Module:
        """The EMA network, compiled once per fitted model when the config asks for it."""
        network = self.model.network
        cache = self.__dict__.setdefault("_compiled", {})
        if id(network) not in cache:
            cache.clear()
            cache[id(network)] = maybe_compiled(network, self.config.compile)
        return cache[id(network)]

    def augment(self, buffer: Any, n: int, real_ratio: float = 0.5, **sample_options: Any) -> Any:
        """``SyntheticReplayBuffer(buffer, self.sample(n), real_ratio=real_ratio)`` of d3rlpy's integration (by
        :func:`dyaug.data.coerce.mix_synthetic`): a d3rlpy buffer whose batches mix ``buffer``'s real transitions
        with ``n`` synthetic ones (``real_ratio=0``: synthetic only, the paper's offline setting).
        ``sample_options`` go to :meth:`sample`.
        """
        return mix_synthetic(buffer, self.sample(n, **sample_options), real_ratio)

    def provenance(self) -> dict[str, Any]:
        model = self.model
        return {
            **super().provenance(),
            "action_bounds_source": model.action_bounds.source,
            "precision": precision_timings(),
            "constant_columns": int(model.codec.constant.mask.sum()),
            "transformed_columns": int(model.codec.transform.mask.sum()),
        }

    # ------------------------------------------------------------------------------------ checkpoints
    def save(self, path: str | Path) -> Path:
        """Write one atomic safetensors file (no pickle): EMA weights, config, row codec, dimensions, action bounds,
        data range, seed and training record. With ``labels="models"`` ``path`` becomes a directory holding that
        file (``synther.safetensors``) and the single-step models, replaced as a whole
        (:func:`dyaug.persistence.write_directory`). :meth:`load` restores either exactly."""
        model = self.model
        fields: dict[str, Any] = dict(
            modules={"network": model.network},
            config=self.config.to_dict(),
            codec=model.codec.state(),
            preset=self.preset,
            seed=self.seed,
            obs_dim=model.layout.obs_dim,
            act_dim=model.layout.act_dim,
            action_low=model.action_bounds.low.tolist(),
            action_high=model.action_bounds.high.tolist(),
            action_bounds_source=model.action_bounds.source,
            data_low=model.data_range.low.tolist(),
            data_high=model.data_range.high.tolist(),
            data_checked=model.data_range.checked.tolist(),
            training_data=model.training_data,
            training_losses=self.training_losses,
        )
        labeller = model.labeller
        if labeller is None:
            return save_model(path, CHECKPOINT_KIND, **fields)

        def write(directory: Path) -> None:
            save_model(directory / MAIN_FILE, CHECKPOINT_KIND, **fields, labeller=labeller.save(directory))

        return write_directory(path, write, marker=MAIN_FILE, kind="SynthER")

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "auto", **sampling: Any) -> SynthER:
        """A generator saved by :meth:`save` (a file, or a directory for ``labels="models"``), on ``device``;
        ``ValueError`` for a file of another kind.

        ``sampling`` replaces settings that do not change the trained network
        (:data:`~dyaug.diffusion.settings.EDM_SAMPLING_FIELDS`), e.g. ``SynthER.load(path,
        solver="dpmpp_2m_sde", sampler_steps=32)``; other fields raise ``ValueError``.
        """
        check_sampling_overrides("SynthER", sampling, EDM_SAMPLING_FIELDS)
        device, path = resolve_device(device), Path(path)
        checkpoint = load_model(path / MAIN_FILE if path.is_dir() else path, CHECKPOINT_KIND, device=device)
        meta = checkpoint.meta
        generator = cls(preset=meta["preset"], device=device, seed=meta["seed"], **{**checkpoint.config, **sampling})
        config = generator.config
        layout = RowLayout(meta["obs_dim"], meta["act_dim"], residual=config.residual, joint=config.labels == "joint")
        if "codec" in meta:
            codec = ColumnCodec.from_state(meta["codec"])
        else:  # files written before constant columns and transforms: the normalizer was the whole codec
            none = np.zeros(layout.dim, bool)
            codec = ColumnCodec(
                ConstantColumns(none, np.zeros(layout.dim)),
                ColumnTransform(none, None),
                checkpoint.normalizer,
                () if layout.terminal_column is None else (layout.terminal_column,),
            )
        network = generator.config.network(codec.model_dim).to(device)
        network.load_state_dict(checkpoint.states["network"])
        training_data = {"env_id": None, **meta["training_data"], "obs_dim": layout.obs_dim, "act_dim": layout.act_dim}
        generator._installed(
            FittedModel(
                network=network.eval().requires_grad_(False),
                codec=codec,
                layout=layout,
                action_bounds=ActionBounds(meta["action_low"], meta["action_high"], meta["action_bounds_source"]),
                data_range=DataRange(meta["data_low"], meta["data_high"], meta["data_checked"]),
                training_data=training_data,
                labeller=Labeller.load(path, meta["labeller"], device) if "labeller" in meta else None,
            )
        )
        generator.training_losses = list(meta["training_losses"])
        return generator
