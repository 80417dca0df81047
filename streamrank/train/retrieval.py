"""Offline training of the two-tower retrieval models on a `RetrievalProtocol`.

Adam (the paper's optimiser, lr 1e-3), mini-batches of (user history, target) rows in random order, the
matching negatives drawn uniformly from the corpus without the items the row's user clicked in training; the
user side of each batch goes through the one `Tensorizer`, the item side is the corpus encoded once
(row = item code). After each epoch the validation split is evaluated by exact search and the best
weights (mean HIT@{50,100,200,500} on validation) are kept: tuning never looks at the test split.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from streamrank.data.retrieval_protocol import RetrievalProtocol, TargetSet
from streamrank.features.batch import ItemSide
from streamrank.features.tensorize import Tensorizer
from streamrank.models.retrieval.model import TwoTowerModel
from streamrank.train.fit_checkpoint import FitLoop, finish_fit, resume_fit, save_fit
from streamrank.train.offline import EarlyStopping, FitResult, pick_device, set_seed
from streamrank.train.retrieval_eval import KS, RetrievalEval, evaluate_scores
from streamrank.train.retrieval_losses import ClickedItems, CLSamplers, StepInputs, step_losses
from streamrank.train.tensor_data import TensorContexts


@dataclass
class RetrievalTrainConfig:
    """Optimisation settings. Paper (Sec. 5.3): Adam, lr 1e-3, batch 4096."""

    lr: float = 1e-3
    batch_size: int = 4096
    max_epochs: int = 3
    patience: int = 1
    seed: int = 0
    device: str | None = None
    progress: bool = True
    max_steps_per_epoch: int | None = None
    eval_users: int = 0  # validation rows used for early stopping (0 = all)
    checkpoint: str | None = None  # a file for epoch checkpoints: a killed fit resumes there (fit_checkpoint)

    def to_dict(self) -> dict:
        """Plain dict for reports."""
        return asdict(self)


# What `fit_retrieval` did: best epoch, its validation value, per-epoch history, wall time (as `fit`'s).
RetrievalFit = FitResult


def encode_corpus(proto: RetrievalProtocol, tz: Tensorizer) -> ItemSide:
    """The item side of every corpus item, row = item code (frozen vocabularies)."""
    cands = proto.candidates()
    return tz.encode_candidates(cands, [0] * len(cands), grow=False)


def split_contexts(model: TwoTowerModel, proto: RetrievalProtocol, tz: Tensorizer, split: TargetSet) -> TensorContexts:
    """The user side of a split for this model's behaviour length, tensorised once (frozen vocabularies)."""
    maxb = model.cfg.max_behaviours
    return TensorContexts.build(lambda rows: tz.encode_contexts(proto.contexts(split, rows, maxb), grow=False),
                                len(split))


@torch.no_grad()
def evaluate_model(model: TwoTowerModel, proto: RetrievalProtocol, tz: Tensorizer, split: TargetSet,
                   corpus: ItemSide, ks: tuple[int, ...] = KS, contexts: TensorContexts | None = None
                   ) -> RetrievalEval:
    """HIT@K / coverage@K of the model on a split by exact search over the whole corpus (`contexts`: the
    split's user side tensorised already, as `split_contexts` makes it)."""
    model.eval()
    dev = model.device
    items = model.item_vectors(corpus.to(dev))
    contexts = contexts or split_contexts(model, proto, tz, split)
    chunks = [np.arange(s, min(s + 4096, len(split))) for s in range(0, len(split), 4096)]
    users = torch.cat([model.user_vectors(contexts.rows(rows, dev)) for rows in chunks])
    return evaluate_scores(lambda rows: users[torch.from_numpy(rows).to(dev)] @ items.T, split.item, proto.n_items,
                           proto.seen_items(split), ks)


def evaluate_popularity(proto: RetrievalProtocol, split: TargetSet, ks: tuple[int, ...] = KS) -> RetrievalEval:
    """The popularity baseline: every user gets the most popular training items they have not rated."""
    pop = torch.from_numpy(proto.item_popularity).float()
    return evaluate_scores(lambda rows: pop.expand(len(rows), -1), split.item, proto.n_items,
                           proto.seen_items(split), ks)


def fit_retrieval(model: TwoTowerModel, proto: RetrievalProtocol, tz: Tensorizer, cfg: RetrievalTrainConfig,
                  samplers: CLSamplers | None = None, train: TargetSet | None = None,
                  on_epoch: Callable[[dict], None] | None = None) -> RetrievalFit:
    """Train with Adam, early stopping on validation; the model is left holding the best weights."""
    device = pick_device(cfg.device)
    set_seed(cfg.seed)
    model.to(device)
    samplers = samplers or CLSamplers()
    train = train or proto.train
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator(device=device)
    gen.manual_seed(cfg.seed)
    corpus = encode_corpus(proto, tz).to(device)
    valid = proto.valid
    if cfg.eval_users and cfg.eval_users < len(valid):
        valid = valid.subset(np.sort(np.random.default_rng(0).choice(len(valid), cfg.eval_users, replace=False)))
    train_users, valid_users = split_contexts(model, proto, tz, train), split_contexts(model, proto, tz, valid)
    # the paper's matching negatives are random items the user did not click (Eq. 7): training clicks only
    clicked = ClickedItems(train.user, train.item, proto.n_items) if model.cfg.mask_clicked else None
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    stopper = EarlyStopping(cfg.patience)
    loop = FitLoop(model, optimizer, stopper, rng, gen)
    result = RetrievalFit(best_epoch=-1, best_valid=float("nan"), valid_metric="mean_hit")
    first, result.history, done_s = resume_fit(cfg.checkpoint, cfg.max_epochs, device, loop)
    stop = stopper.bad >= stopper.patience and first > 0
    t0 = time.perf_counter() - done_s  # a resumed fit counts the time of the epochs it had done
    for epoch in range(first, cfg.max_epochs):
        model.train()
        order = rng.permutation(len(train))
        starts = list(range(0, len(order), cfg.batch_size))[: cfg.max_steps_per_epoch]
        bar = tqdm(starts, desc=f"epoch {epoch}", disable=not cfg.progress, leave=False)
        sums: dict[str, float] = {}
        for s in bar:
            rows = order[s:s + cfg.batch_size]
            users = train_users.rows(rows)
            pool = rng.integers(0, proto.n_items, model.cfg.n_negatives)
            seen = clicked.mask(train.user[rows], pool) if clicked is not None else None
            losses = step_losses(model, corpus, StepInputs(users, train.item[rows], pool, seen), samplers, rng, gen)
            optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
            optimizer.step()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            bar.set_postfix(loss=f"{float(losses['match'].detach()):.3f}")
        record = {"epoch": epoch, **{f"loss_{k}": v / max(len(starts), 1) for k, v in sums.items()}}
        metrics = evaluate_model(model, proto, tz, valid, corpus, contexts=valid_users)
        value = metrics.mean_hit()
        record.update({f"valid_{k}": v for k, v in metrics.summary().items()}, valid_mean_hit=value)
        record["seconds"] = round(time.perf_counter() - t0, 1)
        stop = stopper.update(epoch, value, model)
        result.history.append(record)
        if cfg.checkpoint:
            save_fit(cfg.checkpoint, epoch, loop, result.history, time.perf_counter() - t0)
        if on_epoch is not None:
            on_epoch(record)
        if stop:
            break
    stopper.restore(model)
    result.stopped_early = stop
    finish_fit(cfg.checkpoint, stop)
    model.eval()
    result.best_epoch, result.best_valid = stopper.best_epoch, stopper.best_value
    result.seconds = time.perf_counter() - t0
    return result
