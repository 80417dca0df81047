"""Offline training of the ranking models: AdamW (row-wise for embedding tables, `train.optim`), early
stopping on a validation split, seeds, device.

Data comes as `ExampleSource`s (anything that produces `RawExample`s for index arrays), tensorised per
mini-batch through the one feature path, or as a `TensorisedSource` (`train.tensor_data.TensorDataset`:
the same tensors made once, so that an epoch is tensor work only). `train_step` is the unit the online trainer reuses.
"""

from __future__ import annotations

import copy
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from streamrank.features.batch import Batch
from streamrank.features.raw import RawExample
from streamrank.features.tensorize import Tensorizer
from streamrank.models.factory import Ranker
from streamrank.models.ranking.moe import RankingModel
from streamrank.models.scenario import ScenarioModel
from streamrank.train.fit_checkpoint import FitLoop, finish_fit, resume_fit, save_fit
from streamrank.train.losses import contrastive_loss, ranking_loss
from streamrank.train.metrics import evaluate
from streamrank.train.optim import ModelOptimizer, RowOptimizer

log = logging.getLogger(__name__)


def pick_device(prefer: str | None = None) -> torch.device:
    """CUDA when available (or `prefer` when given, e.g. "cpu"), else CPU: the one place that decides."""
    if prefer:
        return torch.device(prefer)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so that a run is reproducible."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


class ExampleSource(Protocol):
    """A data split: length, labels, optional session ids, and examples materialised on demand."""

    labels: np.ndarray
    sessions: np.ndarray | None

    def __len__(self) -> int:
        """Number of examples."""
        ...

    def examples(self, idx: Sequence[int] | np.ndarray) -> list[RawExample]:
        """The examples at positions `idx`, in that order."""
        ...


class TensorisedSource(ExampleSource, Protocol):
    """A split that hands out ready tensors (`streamrank.train.tensor_data.TensorDataset`)."""

    def batch(self, idx: Sequence[int] | np.ndarray, device: torch.device | str = "cpu") -> Batch:
        """Rows `idx` in the training layout."""
        ...

    def keys(self, idx: Sequence[int] | np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
        """Small integer user ids of rows `idx`."""
        ...


def encoded_batch(source: ExampleSource, tensorizer: Tensorizer, idx: np.ndarray,
                  device: torch.device) -> tuple[Batch, torch.Tensor]:
    """Rows `idx` of a split as a device batch with its user keys: gathered from a tensorised split, or
    tensorised now (frozen vocabularies) from the examples of any other."""
    if hasattr(source, "batch") and hasattr(source, "keys"):
        return source.batch(idx, device), source.keys(idx, device)  # type: ignore[attr-defined]
    examples = source.examples(idx)
    return tensorizer.encode(examples).to(device), _user_keys(examples, device)


@dataclass
class ListSource:
    """An `ExampleSource` over a list of ready examples (tests, small data, the online trainer)."""

    items: list[RawExample]
    sessions: np.ndarray | None = None
    label: str = "click"
    labels: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.labels = np.array([float(getattr(e.labels, self.label)) for e in self.items], dtype=np.float32)

    def __len__(self) -> int:
        return len(self.items)

    def examples(self, idx: Sequence[int] | np.ndarray) -> list[RawExample]:
        """The examples at `idx`."""
        return [self.items[int(i)] for i in idx]


@dataclass
class TrainConfig:
    """Optimisation settings. Paper (Sec. IV-D): AdamW, lr 1e-4, batch 1024."""

    lr: float = 1e-4
    weight_decay: float = 1e-2
    batch_size: int = 1024
    max_epochs: int = 10
    patience: int = 2
    seed: int = 0
    eval_batch_size: int = 4096
    valid_metric: str = "session_auc"
    device: str | None = None
    progress: bool = True
    max_steps_per_epoch: int | None = None
    shuffle: bool = True  # False: each epoch in the split's own order (e.g. stream order)
    row_optimizer: RowOptimizer = "adagrad"  # embedding tables: row-wise "adagrad" or "adam" (train.optim)
    row_lr: float | None = 0.2  # their learning rate (None: lr); docs/online-training.md, "The optimizer"
    checkpoint: str | None = None  # a file for epoch checkpoints: a killed fit resumes there (fit_checkpoint)

    def to_dict(self) -> dict:
        """Plain dict for reports."""
        return asdict(self)


@dataclass
class FitResult:
    """What `fit` did: best epoch and validation value, per-epoch history, wall time."""

    best_epoch: int
    best_valid: float
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    valid_metric: str = ""
    stopped_early: bool = False  # early stopping ended the fit (not its epoch cap)

    def stopped_at(self) -> int | None:
        """The epochs run when early stopping ended the fit; None when its epoch cap did (`bench.parts`)."""
        return len(self.history) if self.stopped_early else None

    def convergence(self) -> dict:
        """What a benchmark records about how the fit ended: best epoch and epochs run (both counted from 1),
        `converged` = early stopping ended it after its best epoch (a best epoch that is the last means more
        epochs might still have helped), the validation curve, and the training time."""
        epochs_run, best, key = len(self.history), self.best_epoch + 1, f"valid_{self.valid_metric}"
        curve = [round(float(h[key]), 5) for h in self.history if key in h]
        return {"best_epoch": best, "epochs_run": epochs_run, "epochs": epochs_run,
                "converged": 0 < best < epochs_run, "stopped_early": self.stopped_early, "valid_curve": curve,
                "seconds": round(self.seconds, 1)}


@dataclass
class EarlyStopping:
    """Remembers the best validation value and its weights; says when `patience` epochs went by without one."""

    patience: int
    best_value: float = -float("inf")
    best_epoch: int = -1
    bad: int = 0
    best_state: dict | None = None

    def update(self, epoch: int, value: float, model: torch.nn.Module) -> bool:
        """Records an epoch's validation value; returns whether training should stop."""
        if value > self.best_value:
            self.best_value, self.best_epoch, self.bad = value, epoch, 0
            self.best_state = copy.deepcopy(model.state_dict())
        else:
            self.bad += 1
        return self.bad >= self.patience

    def restore(self, model: torch.nn.Module) -> None:
        """Puts the best weights back into the model (nothing when no epoch was validated)."""
        if self.best_state is not None:
            model.load_state_dict(self.best_state)


def _user_keys(examples: Sequence[RawExample], device: torch.device) -> torch.Tensor:
    """Small integer ids of the examples' users (to keep same-user rows out of CL negatives)."""
    ids: dict[str, int] = {}
    return torch.tensor([ids.setdefault(e.user_id, len(ids)) for e in examples], device=device)


class Optimizer(Protocol):
    """What `train_step` steps: a torch optimizer, or `ModelOptimizer` (row-wise tables + AdamW)."""

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop every gradient."""
        ...

    def step(self) -> None:
        """One update."""
        ...


def _gradients(model: torch.nn.Module, optimizer: Optimizer) -> list[torch.Tensor]:
    """Every gradient of the last backward pass; sparse table gradients as their values."""
    grads = getattr(optimizer, "grads", None)
    if callable(grads):
        return grads()
    return [p.grad._values() if p.grad.is_sparse else p.grad for p in model.parameters() if p.grad is not None]


def train_step(model: Ranker, batch: Batch, optimizer: Optimizer, user_keys: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> dict[str, float]:
    """One optimisation step on an encoded mini-batch; returns the losses (see `train_step_with_output`)."""
    return train_step_with_output(model, batch, optimizer, user_keys, generator)[0]


def train_step_with_output(model: Ranker, batch: Batch, optimizer: Optimizer,
                           user_keys: torch.Tensor | None = None,
                           generator: torch.Generator | None = None) -> tuple[dict[str, float], torch.Tensor]:
    """One optimisation step on an encoded mini-batch (labels set; candidates may share user rows).

    Returns the losses and the batch's logits from the step's own forward pass, detached: computed with the
    weights before the update, so for a model without train/eval differences (`train_eval_identical`) they
    are the test-then-train prediction and no second forward is needed.
    Loss: BCE (FNW-weighted on `batch.fnw_rows`), plus the auxiliary head's BCE (weight aux_weight) when the
    model has one (SAML), plus lambda * L_cl when the model's config enables contrastive learning;
    `user_keys` (N,), one per candidate, identify users so that CL negatives come from other users (default:
    the encoded user ids). A batch whose loss or gradients are not finite is skipped before the optimizer
    step (logs carry "skipped_non_finite"), so the weights never see it.
    """
    assert batch.labels is not None
    model.train()
    out = model(batch)
    logits = out.logits.detach()
    loss_rank = ranking_loss(out.logits, batch.labels, batch.fnw_rows)
    loss = loss_rank
    logs = {"loss_rank": float(loss_rank.detach())}
    if isinstance(model, ScenarioModel) and out.aux_logits is not None:  # SAML's auxiliary network: own BCE
        loss_aux = ranking_loss(out.aux_logits, batch.labels, batch.fnw_rows)
        loss = loss + model.cfg.aux_weight * loss_aux
        logs["loss_aux"] = float(loss_aux.detach())
    if isinstance(model, RankingModel) and model.cfg.cl_weight > 0 and out.gate is not None:
        keys = batch.users.user.index_select(0, batch.owner) if user_keys is None else user_keys
        loss_cl = contrastive_loss(model, batch, out.gate, keys, generator, out.gate_hidden)
        loss = loss + model.cfg.cl_weight * loss_cl
        logs["loss_cl"] = float(loss_cl.detach())
    optimizer.zero_grad(set_to_none=True)
    if not torch.isfinite(loss):
        # A non-finite loss must not reach the weights: skip the batch (the online trainer counts it).
        logs["skipped_non_finite"] = 1.0
        return logs, logits
    loss.backward()
    grads = _gradients(model, optimizer)
    if grads and not bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()):
        optimizer.zero_grad(set_to_none=True)
        logs["skipped_non_finite"] = 1.0
        return logs, logits
    optimizer.step()
    return logs, logits


@torch.no_grad()
def predict(model: Ranker, tensorizer: Tensorizer, source: ExampleSource, batch_size: int = 4096,
            device: torch.device | None = None, progress: bool = False, desc: str = "predict") -> np.ndarray:
    """Probabilities for every example of `source`, in order (frozen vocabularies: unseen ids -> OOV)."""
    device = device or pick_device()
    model.eval()
    out = np.empty(len(source), dtype=np.float32)
    starts = range(0, len(source), batch_size)
    for s in tqdm(starts, desc=desc, disable=not progress, leave=False):
        idx = np.arange(s, min(s + batch_size, len(source)))
        batch = encoded_batch(source, tensorizer, idx, device)[0]
        out[idx] = torch.sigmoid(model(batch).logits).float().cpu().numpy()
    return out


def evaluate_source(model: Ranker, tensorizer: Tensorizer, source: ExampleSource,
                    cfg: TrainConfig, device: torch.device, desc: str = "eval") -> dict[str, float]:
    """Metrics of the model on a split (session metrics when the split has sessions)."""
    probs = predict(model, tensorizer, source, cfg.eval_batch_size, device, cfg.progress, desc)
    return evaluate(probs, source.labels, source.sessions)


def fit(model: Ranker, tensorizer: Tensorizer, train: ExampleSource, valid: ExampleSource | None,
        cfg: TrainConfig, on_epoch: Callable[[dict], None] | None = None) -> FitResult:
    """Train with AdamW; after each epoch evaluate `valid` and keep the best weights (early stopping).

    The model is left holding the best weights. Without a validation split it trains `max_epochs`.
    """
    device = pick_device(cfg.device)
    model.to(device)
    set_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator(device=device)
    gen.manual_seed(cfg.seed)
    optimizer = ModelOptimizer(model, cfg.lr, cfg.weight_decay, cfg.row_optimizer, cfg.row_lr)
    stopper = EarlyStopping(cfg.patience)
    loop = FitLoop(model, optimizer, stopper, rng, gen)
    result = FitResult(best_epoch=-1, best_valid=float("nan"), valid_metric=cfg.valid_metric)
    first, result.history, done_s = resume_fit(cfg.checkpoint, cfg.max_epochs, device, loop)
    stop = stopper.bad >= stopper.patience and first > 0
    t0 = time.perf_counter() - done_s  # a resumed fit counts the time of the epochs it had done
    for epoch in range(first, cfg.max_epochs):
        order = rng.permutation(len(train)) if cfg.shuffle else np.arange(len(train))
        starts = list(range(0, len(order), cfg.batch_size))[: cfg.max_steps_per_epoch]
        bar = tqdm(starts, desc=f"epoch {epoch}", disable=not cfg.progress, leave=False)
        sums: dict[str, float] = {}
        for s in bar:
            batch, keys = encoded_batch(train, tensorizer, order[s:s + cfg.batch_size], device)
            logs = train_step(model, batch, optimizer, keys, gen)
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + v
            bar.set_postfix(loss=f"{logs['loss_rank']:.4f}")
        record = {"epoch": epoch, **{k: v / max(len(starts), 1) for k, v in sums.items()},
                  "seconds": time.perf_counter() - t0}
        if valid is not None:
            metrics = evaluate_source(model, tensorizer, valid, cfg, device, desc="valid")
            record.update({f"valid_{k}": v for k, v in metrics.items()})
            stop = stopper.update(epoch, metrics[cfg.valid_metric], model)
        result.history.append(record)
        if cfg.checkpoint:
            save_fit(cfg.checkpoint, epoch, loop, result.history, time.perf_counter() - t0)
        if on_epoch is not None:
            on_epoch(record)
        if stop:
            break
    stopper.restore(model)
    result.stopped_early = stop and valid is not None
    finish_fit(cfg.checkpoint, result.stopped_early or valid is None)
    result.best_epoch = stopper.best_epoch if valid is not None else cfg.max_epochs - 1
    result.best_valid = stopper.best_value if valid is not None else float("nan")
    result.seconds = time.perf_counter() - t0
    return result
