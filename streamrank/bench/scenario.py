"""`streamrank bench scenario`: the SAML paper's tables on MovieLens with the user's age bucket as scenario.

Protocol: RecBole's ML-1M context-aware split (ratings of 3 dropped, label = rating >= 4, random 8:1:1),
every example tagged with its user's scenario ("age:<bucket>", 7 scenarios, as the stream names them).
Runs Table II (Wide&Deep, DeepFM, DCN, DIN, MMoE, BST, SAML; AUC, log-loss, RelaImpr against BST),
Table III (per-scenario AUC of BST trained on each scenario alone, BST on all, SAML) and Table IV (SAML
ablations) over several seeds, each (model, seed) a separate process (`--workers`), and writes
<out>/scenario-<dataset>.md and .json. Significance: DeLong's test of each seed's AUC against the
same seed's BST, on the same test rows.

    python -m streamrank.bench.scenario --dataset ml-1m --seeds 3 --out docs/benchmarks  # the full benchmark
    python -m streamrank.bench.scenario --quick                          # CI smoke run (ML-100K)
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from streamrank.bench import movielens_cli as cli
from streamrank.bench.parts import Part, PartStore, config_tag, default_root, fit_id, run_resumable
from streamrank.bench.scenario_claims import claims, seed_mean_tests
from streamrank.bench.scenario_report import render
from streamrank.data.protocols import ExampleSet, recbole_protocol
from streamrank.features import Tensorizer
from streamrank.models.factory import PRESETS, build_model, is_scenario_preset, model_config
from streamrank.models.scenario import ScenarioModel
from streamrank.train.metrics import auc, delong_test, log_loss
from streamrank.train.offline import TrainConfig, fit, predict, set_seed
from streamrank.train.tensor_data import TensorDataset

MAIN = ("wide_deep", "deepfm", "dcn", "din", "mmoe", "bst", "saml")
ABLATION = ("saml", "saml_no_gate", "saml_no_aux", "saml_no_gate_mutual")
REFERENCE = "bst"
INDIVIDUAL = "bst"  # the model trained per scenario for Table III
SIZES = {"emb_dim": 12, "scenario_emb_dim": 4, "hidden": (128, 64), "heads": 4}
QUICK_SIZES = {"emb_dim": 8, "scenario_emb_dim": 4, "hidden": (32, 16), "heads": 4}
DIN_SIZES = {"emb_dim": 12, "hidden_dim": 32}


@dataclass(frozen=True)
class Job:
    """One model fit: preset, seed, and the scenario index it is restricted to (-1 = all scenarios)."""

    model: str
    seed: int
    scenario: int = -1


# The protocol and spec are built once in the parent and inherited by forked workers (copy-on-write).
_WORLD: dict = {}


def _build_world(args: argparse.Namespace) -> dict:
    ml = cli.load(args)
    p = recbole_protocol(ml, seed=args.data_seed, max_hist=args.max_seq_len)
    scenarios = p.assign_scenarios(ml, args.scenario_field)
    if args.max_train_examples and len(p.train) > args.max_train_examples:
        p.train = p.train.subset(cli.sample_rows(len(p.train), args.max_train_examples, args.data_seed))
    codes = {name: p.scenario_codes(split, scenarios) for name, split in
             (("train", p.train), ("valid", p.valid), ("test", p.test))}
    # one spec (and its tensorised splits, made once before the fits fork) with scenario branches, one without
    specs = {routed: p.make_spec(args.max_seq_len, 1, scenarios=scenarios if routed else ())
             for routed in (True, False)}
    tensors = {routed: {name: TensorDataset.build(split, Tensorizer(spec)) for name, split in
                        (("train", p.train), ("valid", p.valid), ("test", p.test))}
               for routed, spec in specs.items()}
    return {"protocol": p, "scenarios": scenarios, "codes": codes, "specs": specs, "tensors": tensors}


def _split(data: dict[str, TensorDataset], codes: dict[str, np.ndarray],
           job: Job) -> tuple[TensorDataset, TensorDataset, TensorDataset]:
    if job.scenario < 0:
        return data["train"], data["valid"], data["test"]
    return tuple(data[n].subset(codes[n] == job.scenario)  # type: ignore[return-value]
                 for n in ("train", "valid", "test"))


def _sizes(model: str, args: argparse.Namespace) -> dict:
    """The size overrides of a preset in this benchmark."""
    return (QUICK_SIZES if args.quick else SIZES) if is_scenario_preset(model) else DIN_SIZES


def _fit_id(job: Job, args: argparse.Namespace) -> str:
    """A fit's part id: model, seed, scenario and a digest of its model configuration."""
    return fit_id(job.model, f"seed{job.seed}", f"scenario{job.scenario}",
                  config_tag(model_config(job.model, **_sizes(job.model, args))))


def run_job(job: Job, args: argparse.Namespace) -> Part:
    """Trains one (model, seed[, scenario]); its part holds the fit record and the test predictions."""
    torch.set_num_threads(args.threads_per_worker)
    routed = is_scenario_preset(job.model)
    spec, codes = _WORLD["specs"][routed], _WORLD["codes"]
    train, valid, test = _split(_WORLD["tensors"][routed], codes, job)
    tz = Tensorizer(spec)
    set_seed(job.seed)
    model = build_model(job.model, spec, **_sizes(job.model, args))
    cfg = TrainConfig(lr=args.lr, batch_size=args.batch_size, max_epochs=args.epochs, patience=args.patience,
                      seed=job.seed, valid_metric="auc", progress=False, device=args.device,
                      **cli.table_config(args),
                      checkpoint=str(args.part_store.checkpoint(_fit_id(job, args))))
    res = fit(model, tz, train, valid, cfg, on_epoch=partial(cli.log_epoch, f"{job.model}/{job.seed}/{job.scenario}"))
    probs = predict(model, tz, test, device=next(model.parameters()).device)
    info = {"model": job.model, "seed": job.seed, "scenario": job.scenario, **res.convergence(),
            "max_epochs": args.epochs, "best_valid_auc": res.best_valid, "train_rows": len(train),
            "params": model.describe()["params"]}
    alpha = model.branches.last_alpha if isinstance(model, ScenarioModel) and model.branches else None
    if alpha is not None:  # the mutual units' gate coefficients on the last test batch (the paper's Fig. 3)
        info["mean_alpha_last_batch"] = float(alpha.mean())
    return Part({"info": info}, {"probs": np.asarray(probs, dtype=np.float32)}, res.stopped_at())


def fit_settings(args: argparse.Namespace) -> dict:
    """The settings that change a fit's result: stored parts are reused only under equal ones."""
    keys = ("dataset_label", "data_seed", "quick", "scenario_field", "epochs", "patience", "lr", "batch_size",
            "max_seq_len", "max_train_examples")
    return ({k: getattr(args, k) for k in keys} | {"sizes": QUICK_SIZES if args.quick else SIZES, "din": DIN_SIZES}
            | cli.table_settings(args))


def _jobs(args: argparse.Namespace, n_scenarios: int) -> list[Job]:
    models = list(dict.fromkeys([*args.models, *([] if args.no_ablation else ABLATION)]))
    jobs = [Job(m, s) for m in models for s in args.seed_list]
    if not args.no_individual:
        jobs += [Job(INDIVIDUAL, s, k) for s in args.seed_list for k in range(n_scenarios)]
    # longest first, so the pool does not end on one slow fit
    slow = {"saml": 0, "saml_no_gate": 0, "saml_no_aux": 0, "mmoe": 1, "saml_no_gate_mutual": 1, "bst": 2}
    return sorted(jobs, key=lambda j: (j.scenario >= 0, slow.get(j.model, 3)))


def _scores(results: list[dict], test: ExampleSet, codes: np.ndarray, scenarios: tuple[str, ...]) -> dict:
    """Per (model, seed): AUC and log-loss overall and per scenario; DeLong p against the reference."""
    y = test.labels
    full = {(r["job"].model, r["job"].seed): r["probs"] for r in results if r["job"].scenario < 0}
    out: dict[str, dict] = {}
    for (model, seed), probs in sorted(full.items()):
        row = {"auc": auc(probs, y), "logloss": log_loss(probs, y), "scenarios": {}}
        ref = full.get((REFERENCE, seed))
        if ref is not None and model != REFERENCE:
            row["delong_vs_ref"] = delong_test(y, probs, ref)
        for k, name in enumerate(scenarios):
            m = codes == k
            cell = {"auc": auc(probs[m], y[m])}
            if ref is not None and model != REFERENCE:
                cell["delong_vs_ref"] = delong_test(y[m], probs[m], ref[m])
            row["scenarios"][name] = cell
        out.setdefault(model, {})[str(seed)] = row
    indiv: dict[str, dict] = {}
    for r in results:
        job = r["job"]
        if job.scenario >= 0:
            m = codes == job.scenario
            indiv.setdefault(scenarios[job.scenario], {})[str(job.seed)] = {"auc": auc(r["probs"], y[m])}
    tests = seed_mean_tests(full, y, codes, scenarios)
    return {"models": out, "individual": indiv, "saml_vs_bst_seed_mean": tests, "claims": claims(tests)}


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    a = argparse.ArgumentParser(prog="streamrank bench scenario", description=__doc__.split("\n")[0])
    cli.add_common(a, quick_help="CI mode: ML-100K, 1 seed, 1 epoch, small models")
    a.add_argument("--scenario-field", default="auto",
                   help="auto (MovieLens: the user's age; an event log: its events' own scenario), or a user field")
    a.add_argument("--models", default=",".join(MAIN), help="Table II rows, in order")
    a.add_argument("--no-ablation", action="store_true", help="skip Table IV")
    a.add_argument("--no-individual", action="store_true", help="skip BST trained per scenario (Table III)")
    a.add_argument("--epochs", type=int, default=10)
    a.add_argument("--patience", type=int, default=2)
    a.add_argument("--lr", type=float, default=1e-3)
    a.add_argument("--batch-size", type=int, default=512)
    a.add_argument("--max-seq-len", type=int, default=20)
    a.add_argument("--max-train-examples", type=int, default=0, help="subsample training rows (0 = all)")
    cli.add_table_optimizer(a)
    a.add_argument("--workers", type=int, default=2, help="fits run in parallel, one process each")
    a.add_argument("--threads-per-worker", type=int, default=1)
    a.add_argument("--parts", type=Path, default=None,
                   help="where each fit's result is kept, so a rerun resumes (default <out>/parts/scenario-<dataset>)")
    args = a.parse_args(argv)
    if args.quick:
        args.seeds, args.epochs, args.batch_size = 1, 1, 256
        args.max_train_examples = args.max_train_examples or 20_000
    cli.check_counts(args, ("seeds", "epochs", "batch_size", "max_seq_len", "workers", "threads_per_worker"))
    args.models = cli.split_models(args.models, PRESETS)
    if REFERENCE not in args.models:
        raise SystemExit(f"--models must include {REFERENCE}: RelaImpr and the p-values are measured against it")
    cli.finish(args)
    if args.scenario_field == "auto":  # named in the report and the JSON as what it is
        args.scenario_field = "scenario" if cli.is_path(args.dataset) else "age"
    return args


def main(argv: list[str] | None = None, prog: str = "streamrank bench scenario") -> int:
    """Entry point of `streamrank bench scenario`; returns the process exit code."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        _WORLD.update(_build_world(args))
    except ValueError as exc:  # a log this protocol cannot use (one label class)
        raise SystemExit(f"--dataset {args.dataset}: {exc}") from exc
    p, scenarios, codes = _WORLD["protocol"], _WORLD["scenarios"], _WORLD["codes"]
    jobs = _jobs(args, len(scenarios))
    root = args.parts or default_root(args.out, "scenario", cli.parts_label(args), args.quick)
    store = PartStore(root, fit_settings(args), cap_key="epochs")
    args.part_store = store  # the workers' fits keep their epoch checkpoints where it says
    parts = run_resumable(jobs, store, partial(run_job, args=args), args.workers, args.threads_per_worker,
                          args.device, partial(_fit_id, args=args),
                          progress=not args.no_progress)
    results = [{"job": j, "probs": part.arrays["probs"], "info": part.meta["info"]}
               for j, part in zip(jobs, parts, strict=True)]
    sizes = {"scenario": QUICK_SIZES if args.quick else SIZES, "din": DIN_SIZES}
    result = {**cli.result_head(args, " ".join([prog, *argv]), workers=args.workers,
                                threads_per_worker=args.threads_per_worker), "model_sizes": sizes,
              "protocol": {**p.stats, "scenarios": list(scenarios),
                           "test_rows": {s: int((codes["test"] == k).sum()) for k, s in enumerate(scenarios)},
                           "train_rows": {s: int((codes["train"] == k).sum()) for k, s in enumerate(scenarios)},
                           "test_positive_rate": {s: float(p.test.labels[codes["test"] == k].mean())
                                                  for k, s in enumerate(scenarios)}},
              "fits": [r["info"] for r in results],
              **_scores(results, p.test, codes["test"], scenarios)}
    result["wall_seconds"] = round(time.perf_counter() - t0, 1)
    stem = cli.write_result(args, "scenario", result, render)
    print(stem.with_suffix(".md").read_text())
    print(f"wrote {stem}.md and .json in {result['wall_seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(prog="python -m streamrank.bench.scenario"))
