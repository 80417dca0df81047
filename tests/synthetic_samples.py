"""TrainingSamples with a learnable signal, for trainer tests: users click items of their favourite categories."""

from __future__ import annotations

import numpy as np

from streamrank.v1 import events_pb2, features_pb2

T0 = 1_700_000_000_000


def make_samples(n: int, seed: int = 0, users: int = 200, items: int = 400, categories: int = 8,
                 start: int = 0, random_labels: bool = False, t0: int = T0,
                 scenarios: tuple[str, ...] = ("web",)) -> list[features_pb2.TrainingSample]:
    """n samples; clicks are likely on "good" items (every 4th) and on the user's two favourite categories.

    P(click) = 0.1, + 0.55 for a good item, + 0.25 for a favourite category. The behaviour sequence holds
    earlier clicks of the user's favourite categories, so models that relate the history to the target
    (DIN, AW-MoE) can learn the second part. `random_labels` draws labels with no relation to anything
    (a broken label join upstream: no model can predict them). With several `scenarios`, user u lives in
    scenario u % len(scenarios), and in scenario k the "good" items are those with item % 4 == k % 4, so
    what makes an item good differs by scenario (what multi-scenario models are for).
    """
    rng = np.random.default_rng(seed)
    fav = {u: rng.choice(categories, size=2, replace=False) for u in range(users)}
    out = []
    for i in range(start, start + n):
        u = int(rng.integers(users))
        item = int(rng.integers(items))
        cat = item % categories
        k = u % len(scenarios)
        p_click = 0.1 + (0.55 if item % 4 == k % 4 else 0.0) + (0.25 if cat in fav[u] else 0.0)
        label = bool(rng.random() < (0.3 if random_labels else p_click))
        hist = [int(x) for x in rng.integers(items, size=12) if x % categories in fav[u]][:8]
        s = features_pb2.TrainingSample(
            sample_id=f"s{i}", user_id=f"u{u}", item_id=f"i{item}", request_id=f"r{i}",
            impression_ts_ms=t0 + i * 1000, scenario=scenarios[k],
        )
        s.labels.click = label
        s.item.category = f"c{cat}"
        s.behaviors.item_ids.extend(f"i{h}" for h in hist)
        s.behaviors.categories.extend(f"c{h % categories}" for h in hist)
        s.behaviors.types.extend([events_pb2.CLICK] * len(hist))
        s.behaviors.ts_ms.extend(t0 + i * 1000 - 1000 * (k + 1) for k in range(len(hist)))
        out.append(s)
    return out
