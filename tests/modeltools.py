"""Helpers shared by the ranking-model tests: random examples and the padding-invariance check."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace

import torch

from streamrank.features import Batch, Behaviors, Counts, FeatureSpec, ItemAttrs, Labels, RawExample


def random_behaviours(rng: random.Random, n: int) -> Behaviors:
    """n clicks/purchases of items i0..i39 in categories c0..c4."""
    return Behaviors([f"i{rng.randrange(40)}" for _ in range(n)], [rng.choice([2, 4]) for _ in range(n)],
                     list(range(n)), [f"c{rng.randrange(5)}" for _ in range(n)])


def random_examples(n: int, seed: int = 0, max_beh: int = 14, scenarios: tuple[str, ...] = ("",)
                    ) -> list[RawExample]:
    """n labelled examples of 7 users over 40 items, with histories of 0..max_beh behaviours; example k is
    in scenario scenarios[k % len(scenarios)]."""
    rng = random.Random(seed)
    out = []
    for k in range(n):
        item = rng.randrange(40)
        out.append(RawExample(
            f"u{k % 7}", f"i{item}", random_behaviours(rng, rng.randrange(max_beh + 1)),
            ItemAttrs(f"c{item % 5}", tags=[f"t{item % 3}"], fields={"year": str(1990 + item % 4)}),
            query=f"q{k % 3}", scenario=scenarios[k % len(scenarios)], counts=Counts(item_clicks=item),
            labels=Labels(click=rng.random() < 0.5), user_fields={"age": str(18 + k % 3)}))
    return out


def assert_padding_never_changes_a_score(model: Callable[[Batch], object], spec: FeatureSpec, batch: Batch,
                                         extra: int = 7) -> None:
    """Garbage ids under the padding mask, and `extra` padded positions appended, leave every logit as is."""
    ref = model(batch).logits  # type: ignore[attr-defined]
    u = batch.users
    gen = torch.Generator().manual_seed(1)
    rows = {"hist_item": len(spec.vocabs["item"]), "hist_cat": len(spec.vocabs["category"]), "hist_type": 7}

    def junk(shape: tuple[int, int], field: str) -> torch.Tensor:
        return torch.randint(1, rows[field], shape, generator=gen)

    scrambled = replace(u, **{f: torch.where(u.hist_mask, getattr(u, f), junk(u.hist_item.shape, f))
                              for f in rows})
    pad = (len(u), extra)
    longer = replace(scrambled, **{f: torch.cat([getattr(scrambled, f), junk(pad, f)], 1) for f in rows},
                     hist_mask=torch.cat([u.hist_mask, torch.zeros(pad, dtype=torch.bool)], 1))
    for users in (scrambled, longer):
        got = model(Batch(users, batch.items, batch.owner)).logits  # type: ignore[attr-defined]
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)
