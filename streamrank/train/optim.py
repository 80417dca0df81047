"""The trainers' optimizer: row-wise state for embedding tables, AdamW for the dense layers.

Embedding tables (`GrowableEmbedding`) get sparse gradients and a row-wise optimizer that updates only the
rows a batch looked up, the way production trainers do (TorchRec's fused row-wise optimizers, Monolith's
per-key state):
- "adam": lazy Adam. Each row keeps its own first and second moments *and its own step count*,
  so a row's bias correction counts the steps that row took part in. AdamW's decoupled weight decay is
  applied lazily: when a row is updated it first gets the decay of every step since its last update (what
  dense AdamW would have applied to it meanwhile), so idle rows cost nothing; the forward passes in between
  see the row without the owed decay. A row touched at every step follows torch.optim.AdamW exactly.
- "adagrad" (the default, on the measurements in docs/online-training.md): row-wise Adagrad (TorchRec's
  ROWWISE_ADAGRAD): one accumulator per row, the mean of the squared gradient over the row; one float per
  row instead of Adam's 2 x dim. The same lazy weight decay.
The state is keyed by the table's module path and stored per row, so it survives what an online trainer does
to tables: growth (state is padded along with the table's capacity; the Parameter may be replaced), recycled
rows (`reset_rows` zeroes their state; `FeatureEmbedder.sync` calls it), checkpoints (`state_dict` holds the
used rows only) and restores. The dense layers never change shape and keep torch's AdamW.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from streamrank.models.layers import GrowableEmbedding

RowOptimizer = Literal["adam", "adagrad"]


def embedding_tables(model: nn.Module) -> dict[str, GrowableEmbedding]:
    """Every embedding table of `model` by module path."""
    return {name: m for name, m in model.named_modules() if isinstance(m, GrowableEmbedding)}


class RowWiseOptimizer:
    """Row-wise Adam or Adagrad over a model's embedding tables (see the module docstring)."""

    def __init__(self, tables: dict[str, GrowableEmbedding], kind: RowOptimizer = "adagrad", lr: float = 0.2,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        if kind not in ("adam", "adagrad"):
            raise ValueError(f"row optimizer must be 'adam' or 'adagrad', not {kind!r}")
        self.tables, self.kind, self.lr, self.betas, self.eps = tables, kind, lr, betas, eps
        self.weight_decay = weight_decay
        self._names = {id(t): n for n, t in tables.items()}
        self.state: dict[str, dict[str, Tensor]] = {}
        self.steps = 0  # completed step() calls: the clock of the lazily applied weight decay
        for table in tables.values():
            table.sparse = True

    # -- state --------------------------------------------------------------------------------------
    def _fresh(self, rows: int, dim: int, device: torch.device) -> dict[str, Tensor]:
        # "since": the step from which a row's weight decay is owed (its last update, or when it was new)
        since = torch.full((rows,), float(self.steps), device=device)
        if self.kind == "adam":
            return {"exp_avg": torch.zeros(rows, dim, device=device),
                    "exp_avg_sq": torch.zeros(rows, dim, device=device), "step": torch.zeros(rows, device=device),
                    "since": since}
        return {"sum": torch.zeros(rows, device=device), "since": since}

    def _state_of(self, name: str, table: GrowableEmbedding) -> dict[str, Tensor]:
        """The table's state, padded with zeros to its capacity (tables grow between steps)."""
        w = table.weight
        st = self.state.get(name)
        if st is None:
            st = self.state[name] = self._fresh(table.capacity, table.dim, w.device)
        else:
            have = next(iter(st.values())).shape[0]
            if have < table.capacity:
                pad = self._fresh(table.capacity - have, table.dim, w.device)
                st = self.state[name] = {k: torch.cat([v, pad[k]]) for k, v in st.items()}
        return st

    def reset_rows(self, table: GrowableEmbedding, rows: Tensor) -> None:
        """Zero the state of `rows` (rows re-initialised for a new id start like new rows)."""
        name = self._names.get(id(table))
        if name is None or name not in self.state:
            return
        st = self._state_of(name, table)
        for key, v in st.items():
            v.index_fill_(0, rows.to(v.device), float(self.steps) if key == "since" else 0.0)

    def state_dict(self) -> dict[str, Any]:
        """Per table, the state of its used rows (CPU tensors), plus the hyper-parameters."""
        out = {}
        for name, st in self.state.items():
            used = self.tables[name].num if name in self.tables else next(iter(st.values())).shape[0]
            out[name] = {k: v[:used].detach().cpu().clone() for k, v in st.items()}
        return {"kind": self.kind, "steps": self.steps, "tables": out}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of `state_dict`; tables are matched by name, and padded to their capacity on first use."""
        if state.get("kind") != self.kind:
            raise ValueError(f"row optimizer state is {state.get('kind')!r}, this optimizer is {self.kind!r}")
        self.state = {}
        self.steps = int(state.get("steps", 0))
        for name, st in state["tables"].items():
            table = self.tables.get(name)
            if table is None:
                continue
            dev = table.weight.device
            self.state[name] = {k: v.to(dev).clone() for k, v in st.items()}

    # -- update -------------------------------------------------------------------------------------
    def zero_grad(self) -> None:
        """Drop the tables' gradients."""
        for table in self.tables.values():
            table.weight.grad = None

    def grads(self) -> list[Tensor]:
        """The tables' gradient values (sparse values or dense tensors), for finiteness checks."""
        out = []
        for table in self.tables.values():
            g = table.weight.grad
            if g is not None:
                out.append(g._values() if g.is_sparse else g)
        return out

    @torch.no_grad()
    def step(self) -> None:
        """Update the rows each table's gradient touches (padding row 0 never)."""
        for name, table in self.tables.items():
            g = table.weight.grad
            if g is None:
                continue
            # a table switched back to dense gradients: its rows with a non-zero gradient
            g = (g if g.is_sparse else g.to_sparse(1)).coalesce()
            rows, values = g.indices()[0], g.values()
            keep = rows > 0
            rows, values = rows[keep], values[keep].to(torch.float32)
            if len(rows):
                self._update(self._state_of(name, table), table.weight, rows, values)
        self.steps += 1

    def _update(self, st: dict[str, Tensor], w: Tensor, rows: Tensor, g: Tensor) -> None:
        lr = self.lr
        p = w.index_select(0, rows)
        if self.weight_decay:
            # AdamW's decoupled decay, owed for every step since the row's last update, applied now: the
            # row ends where dense AdamW's decay alone would have put it, without touching idle rows.
            now = self.steps + 1  # this step's number
            owed = now - st["since"].index_select(0, rows)
            p.mul_(torch.pow(1 - lr * self.weight_decay, owed).unsqueeze(1))
            st["since"].index_fill_(0, rows, float(now))
        if self.kind == "adagrad":
            acc = st["sum"].index_select(0, rows) + g.pow(2).mean(1)
            st["sum"].index_copy_(0, rows, acc)
            p.addcdiv_(g, acc.sqrt().add_(self.eps).unsqueeze(1), value=-lr)
        else:
            b1, b2 = self.betas
            step = st["step"].index_select(0, rows) + 1
            m = st["exp_avg"].index_select(0, rows).lerp_(g, 1 - b1)
            v = st["exp_avg_sq"].index_select(0, rows).mul_(b2).addcmul_(g, g, value=1 - b2)
            st["step"].index_copy_(0, rows, step)
            st["exp_avg"].index_copy_(0, rows, m)
            st["exp_avg_sq"].index_copy_(0, rows, v)
            bc1 = (1 - b1 ** step).unsqueeze(1)
            bc2_sqrt = (1 - b2 ** step).sqrt().unsqueeze(1)
            denom = (v.sqrt() / bc2_sqrt).add_(self.eps)
            p.addcdiv_(m, denom * bc1, value=-lr)
        w.index_copy_(0, rows, p.to(w.dtype))


class ModelOptimizer:
    """What a trainer steps: `RowWiseOptimizer` for the embedding tables, AdamW for every other parameter.

    The dense AdamW is built once: dense parameters never change shape, and the tables, which do, are not
    in it. So nothing is rebuilt when vocabularies grow.
    """

    def __init__(self, model: nn.Module, lr: float, weight_decay: float = 0.0, row_optimizer: RowOptimizer = "adagrad",
                 row_lr: float | None = None, row_weight_decay: float | None = None) -> None:
        tables = embedding_tables(model)
        table_params = {id(t.weight) for t in tables.values()}
        self.dense_params = [p for p in model.parameters() if id(p) not in table_params]
        # (a model of tables only, e.g. a bare FeatureEmbedder, still gets a valid dense optimizer)
        self.dense = torch.optim.AdamW(self.dense_params or [nn.Parameter(torch.zeros(0))], lr=lr,
                                       weight_decay=weight_decay)
        self.rows = RowWiseOptimizer(tables, row_optimizer, lr if row_lr is None else row_lr,
                                     weight_decay=weight_decay if row_weight_decay is None else row_weight_decay)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop every gradient."""
        self.dense.zero_grad(set_to_none=set_to_none)
        self.rows.zero_grad()

    def grads(self) -> list[Tensor]:
        """Every gradient of the last backward pass (sparse ones as their values)."""
        return [p.grad for p in self.dense_params if p.grad is not None] + self.rows.grads()

    def step(self) -> None:
        """One update: AdamW on the dense layers, the row-wise rule on the rows the batch touched."""
        self.dense.step()
        self.rows.step()

    def reset_rows(self, table: GrowableEmbedding, rows: Tensor) -> None:
        """Restart the state of re-initialised table rows (see `GrowableEmbedding.reset_rows`)."""
        self.rows.reset_rows(table, rows)

    def state_dict(self) -> dict[str, Any]:
        """Both optimizers' state (the checkpoint's "optimizer")."""
        return {"dense": self.dense.state_dict(), "rows": self.rows.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of `state_dict`."""
        self.dense.load_state_dict(state["dense"])
        self.rows.load_state_dict(state["rows"])
