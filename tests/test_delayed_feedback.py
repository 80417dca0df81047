"""The trainer on a fake_negative stream: FNW/FNC against their formulas, what is learned from each
emission, and prequential scores on final labels (no broker: OnlineLearner and the loss directly)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamrank.config import Settings
from streamrank.features import FeatureSpec, Tensorizer
from streamrank.models.factory import build_model
from streamrank.serve.models import LoadedRanker, smoke_context
from streamrank.train.label_policy import PendingScores, route
from streamrank.train.learner import OnlineLearner
from streamrank.train.losses import fnc_probability, fnw_weights, ranking_loss
from streamrank.v1 import features_pb2
from tests.synthetic_samples import make_samples

FN = features_pb2.LABEL_POLICY_FAKE_NEGATIVE
E_IMP, E_POS, E_CLOSED = (features_pb2.EMISSION_IMPRESSION, features_pb2.EMISSION_POSITIVE,
                          features_pb2.EMISSION_WINDOW_CLOSED)


def _emit(sample: features_pb2.TrainingSample, emission: int) -> features_pb2.TrainingSample:
    out = features_pb2.TrainingSample()
    out.CopyFrom(sample)
    out.label_policy = FN  # type: ignore[assignment]
    out.emission = emission  # type: ignore[assignment]
    if emission == E_IMP:
        out.ClearField("labels")
    return out


def _fake_negative_stream(n: int, seed: int = 0) -> tuple[list, list, list]:
    """(provisional negatives, positives, window-closed emissions) of n impressions, as a worker emits them."""
    samples = make_samples(n, seed=seed)
    return ([_emit(s, E_IMP) for s in samples], [_emit(s, E_POS) for s in samples if s.labels.click],
            [_emit(s, E_CLOSED) for s in samples])


def test_fnw_loss_and_gradient_match_the_formulas() -> None:
    logits = torch.tensor([-2.0, -0.3, 0.0, 0.7, 1.5, 3.0], requires_grad=True)
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 0.0])
    rows = torch.tensor([True, True, True, True, False, False])
    loss = ranking_loss(logits, labels, rows)
    loss.backward()
    p = torch.sigmoid(logits.detach())
    w = torch.where(labels > 0.5, 1 + p, (1 - p) * (1 + p))  # Ktena et al.: p/b on each class
    w = torch.where(rows, w, torch.ones_like(w))  # rows outside the policy: plain log loss
    expected_loss = -(w * (labels * torch.log(p) + (1 - labels) * torch.log(1 - p))).mean()
    assert float(loss.detach()) == pytest.approx(float(expected_loss), rel=1e-6)
    # the weights are constants: d/dz of -w [y log s(z) + (1-y) log(1-s(z))] = w (s(z) - y), over the batch
    assert logits.grad is not None
    assert torch.allclose(logits.grad, w * (p - labels) / len(labels), atol=1e-7)
    assert torch.allclose(fnw_weights(logits, labels)[[0, 1]], torch.stack([1 + p[0], (1 - p[1]) * (1 + p[1])]))
    plain = ranking_loss(logits.detach(), labels)
    assert float(ranking_loss(logits.detach(), labels, torch.zeros(6, dtype=torch.bool))) == pytest.approx(float(plain))


def test_fnc_probability_inverts_the_fake_negative_bias() -> None:
    b = torch.tensor([0.0, 0.2, 1 / 3, 0.5, 0.8])
    assert torch.allclose(fnc_probability(b), torch.tensor([0.0, 0.25, 0.5, 1.0, 1.0]))
    p = torch.tensor([0.05, 0.3, 0.9])
    assert torch.allclose(fnc_probability(p / (1 + p)), p, atol=1e-6), "b = p/(1+p) maps back to p"


def test_route_learns_negatives_and_positives_of_the_models_label_once() -> None:
    imps, positives, finals = _fake_negative_stream(50)
    batch = imps[:5] + positives[:2] + finals[:3]
    learn, keys, held, skipped = route(batch, "fnw", "click")
    assert learn == imps[:5] + positives[:2] and held == finals[:3] and skipped == 0
    assert keys[5] == positives[0].sample_id + "\x1f+click" and keys[0] == imps[0].sample_id
    learn, _, held, skipped = route(batch, "fnw", "purchase")  # a click is not this model's positive
    assert learn == imps[:5] and skipped == 2
    learn, keys, held, skipped = route(batch, "window", "click")  # as if the worker ran the window policy
    assert learn == finals[:3] and held == [] and skipped == 7 and keys == [s.sample_id for s in finals[:3]]
    window_stream = make_samples(4)
    assert route(window_stream, "fnw", "click")[0] == window_stream


@pytest.mark.parametrize("pool", [0, 5000])
def test_predictions_are_scored_on_final_labels_when_the_window_closes(tmp_path, pool: int) -> None:
    """With or without a shuffle pool (which predicts on arrival and learns later)."""
    settings = Settings(data_dir=str(tmp_path), train_shuffle_pool=pool)
    imps, positives, finals = _fake_negative_stream(400, seed=3)
    learner = OnlineLearner(settings, "dnn", seed=1)
    first = learner.learn(imps + positives)
    assert first.learned + learner.drain() == len(imps) + len(positives) and learner.window.seen == 0
    assert first.predictions is not None and len(first.predictions[0]) == 0, "nothing final yet"
    again = learner.learn(positives)
    assert again.learned == 0 and again.duplicates == len(positives), "a re-sent positive is a duplicate"
    state = learner.state()
    resumed = OnlineLearner.from_state(settings, state)  # the waiting predictions survive a restart
    closed = resumed.learn(finals)
    assert closed.learned == 0 and resumed.window.seen == len(finals) and len(resumed.pending) == 0
    assert closed.predictions is not None
    ids, _, labels, probs = closed.predictions
    assert ids == [s.sample_id for s in finals]
    assert labels.tolist() == [float(s.labels.click) for s in finals], "scored against the final labels"
    # the probabilities scored are the ones predicted on the provisional negatives, before any learning:
    # a learner with the same initial weights, predicting the same impressions first
    twin = OnlineLearner(settings, "dnn", seed=1)
    plain = twin.learn([_as_window(s) for s in imps])
    assert plain.predictions is not None
    assert probs == pytest.approx(plain.predictions[3], abs=1e-6)


def _as_window(sample: features_pb2.TrainingSample) -> features_pb2.TrainingSample:
    out = features_pb2.TrainingSample()
    out.CopyFrom(sample)
    out.ClearField("label_policy")
    out.ClearField("emission")
    return out


def test_fnw_weights_the_fake_negative_rows_and_fnc_calibrates_the_scores(tmp_path) -> None:
    imps, positives, finals = _fake_negative_stream(300, seed=4)
    fnw = OnlineLearner(Settings(data_dir=str(tmp_path)), "dnn", seed=1)
    prepared = fnw.prepare(imps + positives)
    assert prepared.batch is not None and prepared.batch.fnw_rows is not None
    assert bool(prepared.batch.fnw_rows.all())
    fnc = OnlineLearner(Settings(data_dir=str(tmp_path), train_fake_negative="fnc"), "dnn", seed=1)
    prepared = fnc.prepare(imps + positives)
    assert prepared.batch is not None and prepared.batch.fnw_rows is None, "FNC learns by plain log loss"
    fnc.apply(prepared)
    raw = OnlineLearner(Settings(data_dir=str(tmp_path), train_fake_negative="none"), "dnn", seed=1)
    raw.learn(imps + positives)
    got = fnc.learn(finals).predictions
    plain = raw.learn(finals).predictions
    assert got is not None and plain is not None
    assert got[3] == pytest.approx(fnc_probability(torch.from_numpy(plain[3])).numpy(), abs=1e-6)
    assert fnc.fake_negative_learned == len(imps) + len(positives)


def test_window_mode_learns_only_the_closed_emissions(tmp_path) -> None:
    imps, positives, finals = _fake_negative_stream(200, seed=5)
    learner = OnlineLearner(Settings(data_dir=str(tmp_path), train_fake_negative="window"), "dnn")
    report = learner.learn(imps + positives + finals)
    assert report.learned + learner.drain() == len(finals) and learner.window.seen == len(finals)
    assert learner.not_learned == len(imps) + len(positives)


def test_pending_scores_are_bounded_and_first_prediction_wins() -> None:
    pending = PendingScores(3)
    pending.put(["a", "b"], np.array([0.1, 0.2], dtype=np.float32))
    pending.put(["a", "c", "d"], np.array([0.9, 0.3, 0.4], dtype=np.float32))
    assert len(pending) == 3 and pending.dropped == 1  # "a" was the oldest
    probs, found = pending.pop(["x", "b", "d", "a"])
    assert found == [1, 2] and probs.tolist() == pytest.approx([0.2, 0.4])
    restored = PendingScores.from_state(3, pending.state())
    assert restored.pop(["c"])[0].tolist() == pytest.approx([0.3]) and restored.dropped == 1


def test_the_scorer_applies_fnc_calibration_of_a_version() -> None:
    torch.manual_seed(0)
    model = build_model("dnn", FeatureSpec()).eval()
    plain = LoadedRanker("m", 1, "dnn", model, Tensorizer(model.spec), "x")
    calibrated = LoadedRanker("m", 1, "dnn", model, Tensorizer(model.spec), "x", calibration="fnc")
    b = plain.score(*smoke_context())
    assert calibrated.score(*smoke_context()) == pytest.approx(np.minimum(b / (1 - b), 1.0), rel=1e-5)


def test_the_delayed_feedback_bench_scores_every_mode_on_the_same_impressions(tmp_path) -> None:
    from streamrank.bench.delayed_feedback import evaluate, run_mode

    imps, positives, finals = _fake_negative_stream(4000, seed=6)
    # the worker's order: batches of impressions with their clicks, the window-closed emissions later
    stream = [s for k in range(0, 4000, 500) for s in imps[k:k + 500] + [
        p for p in positives if k <= int(p.sample_id[1:]) < k + 500]] + finals
    settings = Settings(data_dir=str(tmp_path), train_batch_size=256, train_shuffle_pool=500)
    rows = {mode: run_mode(settings, "dnn", stream, mode, seed=0) for mode in ("window", "fnw", "fnc")}
    assert rows["window"]["learned"] == len(finals)
    assert rows["fnw"]["learned"] == len(imps) + len(positives)
    result = evaluate(rows)
    assert result["scored"] == len(finals) and result["held_out"] >= len(finals) // 10
    assert 0.6 < result["fnw"]["auc"] <= 1 and "vs_window" in result["fnw"] and "vs_window" not in result["window"]
    assert result["fnc"]["vs_window"]["ci_low"] <= result["fnc"]["vs_window"]["difference"] <= \
        result["fnc"]["vs_window"]["ci_high"]
