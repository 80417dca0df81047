"""The feature spec: which fields a ranking model sees, their vocabularies and the sequence layout.

One spec is built per model (fitted on training data, grown by the online trainer, frozen by the
scorer) and saved next to the model weights, so that training and serving encode identically.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streamrank.features.raw import RawExample
from streamrank.features.vocab import Vocab

# Categorical vocabularies every spec has. Target item and behaviour items share "item"; target and
# behaviour categories share "category" (one embedding table each, as in the paper's shared layer E).
BASE_VOCABS = ("item", "category", "brand", "shop", "query", "scenario", "user", "tag")

# The branch of every scenario a spec does not list (see FeatureSpec.scenarios).
OTHER_SCENARIO = "other"

# Behaviour types are a closed set (streamrank.v1.EventType 0..4): index = type + 2, PAD = 0, OOV = 1.
NUM_TYPE_ROWS = 7


def _log1p(x: np.ndarray) -> np.ndarray:
    return np.log1p(np.maximum(x, 0.0))


@dataclass(frozen=True)
class DenseInputs:
    """What a dense feature may read, one float64 column per field over N candidates: the candidates'
    counters and price (NaN when unknown), and their user's history length."""

    item_impressions: np.ndarray
    item_clicks: np.ndarray
    item_purchases: np.ndarray
    user_item_clicks: np.ndarray
    user_category_clicks: np.ndarray
    price: np.ndarray
    history_len: np.ndarray


def _ctr(d: DenseInputs) -> np.ndarray:
    imps = d.item_impressions
    return np.where(imps != 0, (d.item_clicks + 1.0) / (imps + 10.0), 0.0)


# Dense ("other") features: name -> vectorised function of the candidates' counters, price and history length.
DENSE_FEATURES: dict[str, Callable[[DenseInputs], np.ndarray]] = {
    "item_impressions": lambda d: _log1p(d.item_impressions),
    "item_clicks": lambda d: _log1p(d.item_clicks),
    "item_purchases": lambda d: _log1p(d.item_purchases),
    "item_ctr": _ctr,
    "user_item_clicks": lambda d: _log1p(d.user_item_clicks),
    "user_category_clicks": lambda d: _log1p(d.user_category_clicks),
    "price": lambda d: np.where(np.isnan(d.price), 0.0, _log1p(np.nan_to_num(d.price))),
    "price_missing": lambda d: np.isnan(d.price).astype(np.float64),
    "history_len": lambda d: _log1p(d.history_len),
}

DEFAULT_DENSE = ("item_impressions", "item_clicks", "item_purchases", "item_ctr", "user_item_clicks",
                 "user_category_clicks", "price", "price_missing", "history_len")


@dataclass
class FeatureSpec:
    """Fields, vocabularies and layout of a ranking model's input.

    max_seq_len: behaviours kept (the most recent ones); shorter sequences are right-padded and masked.
    user_fields / item_fields: names of extra categorical fields read from `RawExample.user_fields` and
        `ItemAttrs.fields`, each with its own vocabulary ("user.<name>", "item.<name>").
    max_tags: width of the multi-valued item tag field (0 disables it); extra tags are dropped.
    dense: names from DENSE_FEATURES, in order.
    use_user_id: whether the user id is an input (an "other" feature); off for cold-start settings.
    label: which of Labels' fields is the training target.
    scenarios: scenarios with a branch of their own in multi-scenario models (SAML, MMoE); branch 0 is
        the shared "other" branch that every other scenario (unknown, new or rare) is routed to.
    """

    max_seq_len: int = 50
    user_fields: tuple[str, ...] = ()
    item_fields: tuple[str, ...] = ()
    max_tags: int = 0
    dense: tuple[str, ...] = DEFAULT_DENSE
    use_user_id: bool = True
    label: str = "click"
    vocabs: dict[str, Vocab] = field(default_factory=dict)
    scenarios: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = [d for d in self.dense if d not in DENSE_FEATURES]
        if unknown:
            raise ValueError(f"unknown dense features {unknown}; known: {sorted(DENSE_FEATURES)}")
        if self.label not in ("click", "add_to_cart", "purchase"):
            raise ValueError(f"label must be click, add_to_cart or purchase, not {self.label!r}")
        self.scenarios = tuple(self.scenarios)
        if len(set(self.scenarios)) != len(self.scenarios) or OTHER_SCENARIO in self.scenarios:
            raise ValueError(f"scenarios must be distinct and not {OTHER_SCENARIO!r}: {list(self.scenarios)}")
        self._branch = {name: i + 1 for i, name in enumerate(self.scenarios)}
        names = [*BASE_VOCABS, *(f"user.{f}" for f in self.user_fields),
                 *(f"item.{f}" for f in self.item_fields)]
        for name in names:
            self.vocabs.setdefault(name, Vocab(name))

    @property
    def num_branches(self) -> int:
        """Branches of a multi-scenario model: one per listed scenario plus the shared "other" branch 0."""
        return len(self.scenarios) + 1

    def branch_of(self, scenario: str) -> int:
        """The branch a scenario is routed to: its own when listed, else 0 ("other")."""
        return self._branch.get(scenario, 0)

    def branch_names(self) -> list[str]:
        """Branch index -> scenario name ("other" first)."""
        return [OTHER_SCENARIO, *self.scenarios]

    def vocab_sizes(self) -> dict[str, int]:
        """Rows each embedding table needs now (grows with the vocabularies)."""
        return {name: len(v) for name, v in self.vocabs.items()}

    def fit(self, examples: Iterable[RawExample], min_count: int = 1) -> FeatureSpec:
        """Fill the vocabularies from training examples (targets and behaviours alike)."""
        toks: dict[str, list[str]] = {name: [] for name in self.vocabs}
        for ex in examples:
            toks["item"].append(ex.item_id)
            toks["item"].extend(ex.behaviors.item_ids)
            toks["category"].append(ex.item.category)
            toks["category"].extend(ex.behaviors.categories)
            toks["brand"].append(ex.item.brand)
            toks["shop"].append(ex.item.shop)
            toks["query"].append(ex.query)
            toks["scenario"].append(ex.scenario)
            toks["user"].append(ex.user_id)
            toks["tag"].extend(ex.item.tags)
            for f in self.user_fields:
                toks[f"user.{f}"].append(ex.user_fields.get(f, ""))
            for f in self.item_fields:
                toks[f"item.{f}"].append(ex.item.fields.get(f, ""))
        for name, ts in toks.items():
            self.vocabs[name].fit(ts, min_count=min_count if name in ("item", "user") else 1)
        return self

    def to_dict(self) -> dict:
        """JSON-serialisable state, vocabularies included."""
        return {
            "max_seq_len": self.max_seq_len,
            "user_fields": list(self.user_fields),
            "item_fields": list(self.item_fields),
            "max_tags": self.max_tags,
            "dense": list(self.dense),
            "use_user_id": self.use_user_id,
            "label": self.label,
            "scenarios": list(self.scenarios),
            "vocabs": {name: v.to_dict() for name, v in self.vocabs.items()},
        }

    @classmethod
    def from_dict(cls, d: dict) -> FeatureSpec:
        """Inverse of `to_dict`."""
        vocabs = {name: Vocab.from_dict(v) for name, v in d["vocabs"].items()}
        return cls(d["max_seq_len"], tuple(d["user_fields"]), tuple(d["item_fields"]), d["max_tags"],
                   tuple(d["dense"]), d["use_user_id"], d["label"], vocabs,
                   scenarios=tuple(d.get("scenarios", ())))

    def save(self, path: str | Path) -> None:
        """Write the spec as JSON (stored beside a model artefact)."""
        Path(path).write_text(json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: str | Path) -> FeatureSpec:
        """Read a spec written by `save`."""
        return cls.from_dict(json.loads(Path(path).read_text()))
