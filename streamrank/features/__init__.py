"""The one feature path: raw examples and requests -> model tensors (offline, online and serving)."""

from streamrank.features.batch import Batch, ItemSide, UserSide
from streamrank.features.raw import (
    ADD_TO_CART,
    CLICK,
    IMPRESSION,
    PURCHASE,
    Behaviors,
    Candidate,
    Counts,
    ItemAttrs,
    Labels,
    RawExample,
    RequestContext,
)
from streamrank.features.spec import DEFAULT_DENSE, DENSE_FEATURES, FeatureSpec
from streamrank.features.tensorize import Tensorizer
from streamrank.features.vocab import OOV, PAD, Vocab

__all__ = [
    "ADD_TO_CART", "CLICK", "DEFAULT_DENSE", "DENSE_FEATURES", "IMPRESSION", "OOV", "PAD", "PURCHASE",
    "Batch", "Behaviors", "Candidate", "Counts", "FeatureSpec", "ItemAttrs", "ItemSide", "Labels",
    "RawExample", "RequestContext", "Tensorizer", "UserSide", "Vocab",
]
