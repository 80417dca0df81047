"""`streamrank bench retrieval`: the MicRec paper's Table 2 on MovieLens, over several seeds.

Trains FM, YoutubeDNN, the ICAN-like base and the MicRec variants (fea, fea+sess, final = fea+sem+sess)
on the leave-last-out retrieval protocol, evaluates HIT@50/100/200/500 and item coverage on the test
users by exact search over the whole corpus, and writes <out>/retrieval-<dataset>.md and .json
with paired t-tests (per test user, hits averaged over seeds) against the base.

    python -m streamrank.bench.retrieval --dataset ml-1m --seeds 3 --out docs/benchmarks  # the full benchmark
    python -m streamrank.bench.retrieval --quick                       # CI smoke run (ML-100K)
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from streamrank.bench import movielens_cli as cli
from streamrank.bench.claims import ALPHA, claim, claims_lines
from streamrank.bench.parts import Part, PartStore, config_tag, default_root, fit_id, run_resumable
from streamrank.data.retrieval_protocol import RetrievalProtocol, retrieval_protocol
from streamrank.data.titles import ENCODER, genre_neighbours, nearest_neighbours, title_embeddings
from streamrank.features import ItemSide, Tensorizer
from streamrank.models.retrieval import DISPLAY_NAMES, build_retrieval_model, make_config
from streamrank.train.cooc_sampling import NeighbourSampler, session_cooccurrence
from streamrank.train.metrics import paired_test
from streamrank.train.offline import set_seed
from streamrank.train.retrieval import (
    RetrievalTrainConfig,
    encode_corpus,
    evaluate_model,
    evaluate_popularity,
    fit_retrieval,
)
from streamrank.train.retrieval_eval import KS
from streamrank.train.retrieval_losses import CLSamplers

MODELS = ("fm", "youtube_dnn", "base", "fea", "fea_sess", "micrec")
# The paper's Table 2 (Video-636M; private data: compare orderings and gaps, not values).
PAPER = [("FM", 0.1731, 0.2487, 0.3219, 0.4495), ("YoutubeDNN", 0.1779, 0.2576, 0.3375, 0.4719),
         ("ICAN (base)", 0.1872, 0.2627, 0.3563, 0.4873), ("MicRec (fea)", 0.1967, 0.2752, 0.3671, 0.5065),
         ("MicRec (fea+sess)", 0.2033, 0.2751, 0.3764, 0.5134), ("MicRec (final)", 0.2047, 0.2831, 0.3825, 0.5209)]


def build_samplers(p: RetrievalProtocol, args: argparse.Namespace, need: set[str]) -> tuple[CLSamplers, dict]:
    """The semantic (title embeddings, else genres) and session (co-occurrence) item graphs the runs need."""
    info: dict = {}
    samplers = CLSamplers()
    c = p.corpus
    if "sem" in need:
        emb = None
        if args.sem_source == "title":
            t0 = time.perf_counter()
            titles = [p_item.title if (p_item := cli.load(args).items.get(i)) else i for i in c.item_ids]
            emb = title_embeddings(args.dataset_label, titles)
            info["title_seconds"] = round(time.perf_counter() - t0, 1)
        if emb is not None:
            table, info["sem_source"] = nearest_neighbours(emb, args.sem_topk), f"title ({ENCODER})"
        else:
            table, info["sem_source"] = genre_neighbours(c.item_tags, args.sem_topk), "genre (Jaccard)"
        samplers.semantic = NeighbourSampler.from_table(table)
        cli.log(f"semantic neighbours: {info['sem_source']}, top {args.sem_topk}")
    if "sess" in need:
        t0 = time.perf_counter()
        cooc = session_cooccurrence(p.training_sequences())
        samplers.session = NeighbourSampler.from_cooc(cooc, {i: k for k, i in enumerate(c.item_ids)}, p.n_items)
        deg = samplers.session.degree(np.arange(p.n_items))
        info.update(cooc_seconds=round(time.perf_counter() - t0, 1), cooc_pairs=len(samplers.session.indices),
                    cooc_median_degree=float(np.median(deg)), cooc_items_without=int((deg == 0).sum()))
        cli.log(f"co-occurrence (1 h window): {info['cooc_pairs']:,} directed pairs, median degree "
            f"{info['cooc_median_degree']:.0f} of {p.n_items} items, in {info['cooc_seconds']} s")
    return samplers, info


def run(args: argparse.Namespace) -> dict:
    """Every model over every seed; returns the JSON-ready result (per-user hits only as p-values)."""
    p = retrieval_protocol(cli.load(args))
    if args.max_train_examples and len(p.train) > args.max_train_examples:
        keep = np.sort(np.random.default_rng(0).choice(len(p.train), args.max_train_examples, replace=False))
        p.train = p.train.subset(keep)
    tz = Tensorizer(p.make_spec(args.max_behaviours))
    cli.log(f"{args.dataset_label}: {p.stats}")
    sizes = {"emb_dim": args.dim, "dim": args.dim, "max_behaviours": args.max_behaviours,
             "n_negatives": args.negatives, "sem_source": args.sem_source, "sem_topk": args.sem_topk,
             **args.overrides}
    need = {t for m in args.models for t in make_config(m).cl_tasks}
    samplers, sampler_info = build_samplers(p, args, need)
    pop = evaluate_popularity(p, p.test)
    runs: dict[str, dict] = {"popularity": {"seeds": [pop.summary()], "fits": []}}
    hits: dict[str, list[dict[int, np.ndarray]]] = {"popularity": [pop.hits]}
    cli.log(f"popularity: {_fmt(pop.summary())}")
    corpus = encode_corpus(p, tz)
    store = PartStore(args.parts or default_root(args.out, "retrieval", args.dataset_label, args.quick),
                      fit_settings(args, sizes), cap_key="epochs")
    args.part_store = store  # the workers' fits keep their epoch checkpoints where it says
    jobs = [(name, seed) for name in args.models for seed in args.seed_list]
    # forked workers inherit the protocol, samplers and corpus built above (copy-on-write)
    parts = run_resumable(jobs, store, partial(_fit_job, world=(args, p, tz, sizes, samplers, corpus)),
                          args.workers, args.threads, args.device, partial(_fit_id, sizes=sizes), progress=False)
    for (name, _), part in zip(jobs, parts, strict=True):
        run_ = runs.setdefault(name, {"seeds": [], "fits": []})
        run_["seeds"].append(part.meta["summary"])
        run_["fits"].append(part.meta["fit"])
        hits.setdefault(name, []).append({k: part.arrays[f"hit@{k}"] for k in KS})
    pvalues = _pvalues(hits, args.reference)
    return {"stats": p.stats, "samplers": sampler_info, "runs": runs, "pvalues": pvalues,
            "claims": micrec_claims(pvalues, args.reference),
            "model_config": {m: make_config(m, **sizes).to_dict() for m in args.models}}


def fit_settings(args: argparse.Namespace, sizes: dict) -> dict:
    """The settings that change a fit's result: stored parts are reused only under equal ones."""
    keys = ("dataset_label", "quick", "epochs", "steps_per_epoch", "patience", "lr", "batch_size",
            "max_train_examples")
    return {k: getattr(args, k) for k in keys} | {"sizes": sizes}


def _fit_id(job: tuple[str, int], sizes: dict) -> str:
    """A (model, seed) fit's part id, with a digest of the model's configuration."""
    return fit_id(job[0], f"seed{job[1]}", config_tag(make_config(job[0], **sizes).to_dict()))


def _fit_job(job: tuple[str, int], world: tuple) -> Part:
    """`_fit_one` for a (model, seed) job, in a worker process."""
    args, p, tz, sizes, samplers, corpus = world
    return _fit_one(job[0], job[1], args, p, tz, sizes, samplers, corpus)


def _fit_one(name: str, seed: int, args: argparse.Namespace, p: RetrievalProtocol, tz: Tensorizer, sizes: dict,
             samplers: CLSamplers, corpus: ItemSide) -> Part:
    """Trains one (model, seed) and evaluates it on the test users; its part (summary, fit record, hits)."""
    set_seed(seed)
    model = build_retrieval_model(name, tz.spec, **sizes)
    cfg = RetrievalTrainConfig(lr=args.lr, batch_size=args.batch_size, max_epochs=args.epochs,
                               patience=args.patience, seed=seed, device=args.device,
                               progress=not args.no_progress, max_steps_per_epoch=args.steps_per_epoch,
                               checkpoint=str(args.part_store.checkpoint(_fit_id((name, seed), sizes))))
    fit = fit_retrieval(model, p, tz, cfg, samplers,
                        on_epoch=lambda r: cli.log(f"{name} seed {seed} epoch {r['epoch']}: valid {_fmt(r, 'valid_')}"))
    res = evaluate_model(model, p, tz, p.test, corpus.to(model.device))
    cli.log(f"{name} seed {seed}: test {_fmt(res.summary())} ({fit.seconds:.0f} s)")
    info = {"seed": seed, **fit.convergence(), "best_valid": fit.best_valid, "max_epochs": args.epochs,
            "params": model.describe()["params"], "history": fit.history}
    return Part({"summary": res.summary(), "fit": info}, {f"hit@{k}": np.asarray(res.hits[k]) for k in KS},
                fit.stopped_at())


def _fmt(m: dict, prefix: str = "") -> str:
    return ", ".join(f"{k[len(prefix):]} {v:.4f}" for k, v in m.items()
                     if k.startswith(prefix) and ("hit@" in k or k.endswith("coverage@500")))


def _pvalues(hits: dict[str, list[dict[int, np.ndarray]]], reference: str) -> dict:
    """Paired t-test over test users (per-user hits averaged over seeds) of each model against `reference`."""
    if reference not in hits:
        return {}
    ref = {k: np.mean([h[k] for h in hits[reference]], 0) for k in KS}
    out = {}
    for name, per_seed in hits.items():
        if name == reference:
            continue
        mine = {k: np.mean([h[k] for h in per_seed], 0) for k in KS}
        out[name] = {f"hit@{k}": dict(zip(("diff", "p"), paired_test(mine[k], ref[k]), strict=True)) for k in KS}
    return out


def micrec_claims(pvalues: dict, reference: str) -> list[dict]:
    """The MicRec paper's claim, MicRec (final) > base on HIT@50 and HIT@500, marked holds / does not hold
    (paired t-test over test users against the base, as in `_pvalues`); empty unless the base is the reference."""
    if reference != "base" or "micrec" not in pvalues:
        return []
    return [claim(f"MicRec (final) > base on HIT@{k}", t["diff"], t["p"])
            for k in (50, 500) if (t := pvalues["micrec"].get(f"hit@{k}")) is not None]


# ------------------------------------------------------------------------------------------ report
def _ms(values: list[float]) -> str:
    vals = [v for v in values if math.isfinite(v)]
    if not vals:
        return "n/a"
    return f"{np.mean(vals):.4f}" if len(vals) == 1 else f"{np.mean(vals):.4f} ± {np.std(vals, ddof=1):.4f}"


def _epochs(fit: dict) -> str:
    flag = "" if fit.get("converged") else " **not converged**"
    return f"{fit.get('epochs_run', fit['epochs'])} ({fit['best_epoch']}){flag}"


def _p(d: dict | None) -> str:
    if not d or not math.isfinite(d["p"]):
        return "-"
    return f"{d['diff']:+.4f} ({d['p']:.1e})"


def render(r: dict) -> str:
    """The benchmark's markdown page from its result dict."""
    s, st, ref = r["settings"], r["stats"], r["settings"]["reference"]
    head = ["model", *(f"HIT@{k}" for k in KS), "coverage@50", "coverage@500",
            *(f"Δ HIT@{k} vs base (p)" for k in (50, 500))]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, run_ in r["runs"].items():
        seeds, pv = run_["seeds"], r["pvalues"].get(name, {})
        cells = [DISPLAY_NAMES.get(name, name), *(_ms([x[f"hit@{k}"] for x in seeds]) for k in KS),
                 _ms([x["coverage@50"] for x in seeds]), _ms([x["coverage@500"] for x in seeds]),
                 *(_p(pv.get(f"hit@{k}")) for k in (50, 500))]
        lines.append("| " + " | ".join(cells) + " |")
    fits = ["| model | params | epochs run (best) per seed | train seconds per seed |", "|---|---|---|---|"]
    for name, run_ in r["runs"].items():
        if run_["fits"]:
            f0 = run_["fits"][0]
            fits.append(f"| {DISPLAY_NAMES.get(name, name)} | {f0['params']:,} | "
                        f"{', '.join(_epochs(f) for f in run_['fits'])} | "
                        f"{', '.join(str(f['seconds']) for f in run_['fits'])} |")
    paper = ["| model | HIT@50 | HIT@100 | HIT@200 | HIT@500 |", "|---|---|---|---|---|",
             *(f"| {m} | {a} | {b} | {c} | {d} |" for m, a, b, c, d in PAPER)]
    samp = r["samplers"]
    return "\n".join([
        f"# Retrieval benchmark: {r['dataset']}{' (quick)' if r['quick'] else ''}", "",
        f"Command: `{r['command']}`  ",
        f"Date: {dt.date.today()}; machine: {r['machine']['device']}, {r['machine'].get('workers', 1)} fit(s) in "
        f"parallel x {r['machine']['threads']} torch thread(s), "
        f"torch {r['machine']['torch']}; wall time {r['wall_seconds']} s. Seeds {s['seed_list']}; values are "
        "mean ± std over seeds. Δ and p: paired t-test over test users (per-user hit averaged over seeds) "
        f"against {DISPLAY_NAMES.get(ref, ref)}.", "",
        "## Protocol", "",
        f"Leave-last-out per user (chronological, stable tie-break): the last rating is the test target, the one "
        f"before it the validation target (early stopping), earlier ratings are training targets with their "
        f"earlier ratings as history. {st['users']:,} test users, {st['items']:,} corpus items, "
        f"{st['train_examples']:,} training examples. HIT@K: the target is in the top K of an exact search over "
        "the whole corpus, excluding the items the user rated before. Coverage@K: share of corpus items in at "
        "least one test user's top K.", "",
        "## Table 2 layout", "", *lines, "",
        f"Semantic CL positives: {samp.get('sem_source', 'n/a')}, top {s['sem_topk']}. Session CL: one-hour "
        f"co-occurrence from the stream worker's rule on training interactions: {samp.get('cooc_pairs', 0):,} "
        f"directed pairs, median item degree {samp.get('cooc_median_degree', 0):.0f}.", "",
        *(["## The paper's claims on these fits", "", *claims_lines(r["claims"]), "",
            f"A claim holds when the difference is positive with p < {ALPHA}.", ""] if r.get("claims") else []),
        "## The paper's Table 2 (Video-636M, private): compare orderings and gaps, not values", "", *paper, "",
        "## Settings", "",
        f"Adam lr {s['lr']}, batch {s['batch_size']}, {s['negatives']} uniformly random negatives per step "
        f"(shared by the batch), up to {s['epochs']} epochs of "
        f"{s['steps_per_epoch'] or 'all'} steps, early stopping on validation mean HIT (patience {s['patience']}); "
        f"behaviours ≤ {s['max_behaviours']}, embedding and vector size {s['dim']}.", "", *fits, ""])


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    a = argparse.ArgumentParser(prog="streamrank bench retrieval", description=__doc__.split("\n")[0])
    cli.add_common(a, quick_help="CI mode: ML-100K, 1 seed, base and popularity only", data_seed=False)
    a.add_argument("--models", default=",".join(MODELS), help="rows of the table, in order")
    a.add_argument("--reference", default="base", help="the row p-values are computed against")
    a.add_argument("--epochs", type=int, default=40, help="at most this many epochs (early stopping ends sooner)")
    a.add_argument("--steps-per-epoch", type=int, default=250,
                   help="steps per epoch, i.e. between validations (0 = a pass over all rows)")
    a.add_argument("--patience", type=int, default=3)
    a.add_argument("--lr", type=float, default=3e-3)
    a.add_argument("--batch-size", type=int, default=1024)
    a.add_argument("--negatives", type=int, default=1024, help="random negatives per step (sampled softmax)")
    a.add_argument("--dim", type=int, default=64)
    a.add_argument("--max-behaviours", type=int, default=20)
    a.add_argument("--sem-source", default="title", choices=("title", "genre"))
    a.add_argument("--sem-topk", type=int, default=10)
    a.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a RetrievalConfig field for every model (e.g. cl_temperature=0.2); repeatable")
    a.add_argument("--max-train-examples", type=int, default=0, help="subsample training rows (0 = all)")
    a.add_argument("--threads", type=int, default=1, help="torch threads per fit (1 is fastest on a 2-core box)")
    a.add_argument("--workers", type=int, default=1, help="fits run in parallel, one process each (CPU only)")
    a.add_argument("--parts", type=Path, default=None,
                   help="where each fit's result is kept, so a rerun resumes (default <out>/parts/retrieval-<dataset>)")
    args = a.parse_args(argv)
    if args.quick:  # the CI run's settings, where the command line does not say otherwise
        quick = {"seeds": 1, "epochs": 1, "batch_size": 256, "negatives": 512, "lr": 3e-3, "steps_per_epoch": 380,
                 "models": "base"}
        for name, value in quick.items():
            if getattr(args, name) == a.get_default(name):
                setattr(args, name, value)
    args.models = cli.split_models(args.models, MODELS, "retrieval models")
    args.overrides = cli.parse_overrides(args.set)
    cli.check_counts(args, ("seeds", "epochs", "batch_size", "negatives", "dim", "max_behaviours", "sem_topk",
                            "workers"),
                 ("steps_per_epoch", "max_train_examples", "threads"))
    args.steps_per_epoch = args.steps_per_epoch or None
    return cli.finish(args)


def main(argv: list[str] | None = None, prog: str = "streamrank bench retrieval") -> int:
    """Entry point of `streamrank bench retrieval`; returns the process exit code."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    result = cli.result_head(args, " ".join([prog, *argv]), workers=args.workers)
    result.update(run(args))
    result["wall_seconds"] = round(time.perf_counter() - t0, 1)
    stem = cli.write_result(args, "retrieval", result, render)
    cli.log(f"wrote {stem}.md and .json in {result['wall_seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(prog="python -m streamrank.bench.retrieval"))
