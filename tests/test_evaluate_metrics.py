"""Pure evaluation maths: hand-computed small cases, scikit-learn cross-checks, interval
coverage on simulated predictions, and the promotion gate's decisions."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from components.evaluate import core
from components.evaluate.gate import GateConfig, decide, decide_first
from components.evaluate.suspects import SuspectConfig, find_suspects

# Four images, three classes. Rows are probabilities; labels are the truth.
PROBS = np.array(
    [
        [0.7, 0.2, 0.1],  # right, margin 0.5
        [0.1, 0.5, 0.4],  # right, margin 0.1
        [0.6, 0.3, 0.1],  # wrong (truth 1), top-2 right
        [0.2, 0.35, 0.45],  # wrong (truth 0), not even top-2
    ]
)
LABELS = np.array([0, 1, 1, 0])


def test_top_k_by_hand() -> None:
    """Top-1 is 2/4, top-2 is 3/4, top-3 is everything."""
    assert core.top_k_accuracy(PROBS, LABELS, 1) == 0.5
    assert core.top_k_accuracy(PROBS, LABELS, 2) == 0.75
    assert core.top_k_accuracy(PROBS, LABELS, 3) == 1.0
    assert core.top_k_accuracy(PROBS, LABELS, 2) == skm.top_k_accuracy_score(
        LABELS, PROBS, k=2, labels=[0, 1, 2]
    )
    with pytest.raises(ValueError, match="empty"):
        core.top_k_accuracy(PROBS[:0], LABELS[:0])


def test_per_class_and_confusion_match_sklearn() -> None:
    """Per-class figures equal scikit-learn's on random predictions; a hand case too."""
    rows, averages = core.per_class_table(PROBS, LABELS, ["a", "b", "c"])
    # Class a: predicted for rows 0, 2 (right once): precision 1/2; truth rows 0, 3: recall 1/2.
    assert rows[0] == {"label": "a", "precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert rows[2]["support"] == 0 and rows[2]["precision"] == 0.0
    assert averages["micro"]["f1"] == pytest.approx(0.5)
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(5), size=300)
    labels = rng.integers(0, 5, size=300)
    rows, averages = core.per_class_table(probs, labels, list("vwxyz"))
    report = skm.classification_report(labels, probs.argmax(1), output_dict=True)
    for index, row in enumerate(rows):
        assert row["recall"] == pytest.approx(report[str(index)]["recall"])
        assert row["f1"] == pytest.approx(report[str(index)]["f1-score"])
    assert averages["macro"]["f1"] == pytest.approx(report["macro avg"]["f1-score"])
    matrix = core.confusion(PROBS, LABELS, 3)
    assert matrix.tolist() == [[1, 0, 1], [1, 1, 0], [0, 0, 0]]


def test_threshold_table_by_hand() -> None:
    """Keeping only confident predictions trades coverage for accuracy."""
    table = {row["threshold"]: row for row in core.threshold_table(PROBS, LABELS, "confidence")}
    assert table[0.0] == {"threshold": 0.0, "coverage": 1.0, "kept": 4, "accuracy": 0.5}
    assert table[0.5]["kept"] == 3 and table[0.5]["accuracy"] == pytest.approx(2 / 3)
    assert table[0.7] == {"threshold": 0.7, "coverage": 0.25, "kept": 1, "accuracy": 1.0}
    assert table[0.8]["kept"] == 0 and table[0.8]["accuracy"] is None
    margins = {row["threshold"]: row for row in core.threshold_table(PROBS, LABELS, "margin")}
    assert margins[0.2]["kept"] == 2 and margins[0.2]["accuracy"] == 0.5  # rows 0 and 2
    rows = core.threshold_table(PROBS, LABELS, "confidence")
    assert core.threshold_for_accuracy(rows, 0.9) == 0.7
    assert core.threshold_for_accuracy(rows, 0.5) == 0.0


def test_calibration_by_hand() -> None:
    """ECE is the count-weighted gap between confidence and accuracy per bin."""
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    labels = np.array([0, 1, 0, 0])
    result = core.calibration(probs, labels, n_bins=10)
    # Bin (0.8, 0.9]: conf 0.9, acc 0.5; bin (0.5, 0.6]: conf 0.6, acc 1.0.
    assert result.ece == pytest.approx(0.5 * 0.4 + 0.5 * 0.4)
    assert result.counts.sum() == 4


def test_wilson_interval_known_value_and_coverage() -> None:
    """8/10 gives the textbook Wilson interval; simulated 95% intervals cover the truth
    about 95% of the time."""
    interval = core.wilson_interval(8, 10)
    assert (interval.low, interval.high) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    rng = np.random.default_rng(0)
    true_accuracy, n, draws = 0.83, 200, 2000
    covered = 0
    for successes in rng.binomial(n, true_accuracy, size=draws):
        found = core.wilson_interval(int(successes), n)
        covered += found.low <= true_accuracy <= found.high
    assert 0.92 <= covered / draws <= 0.98, covered / draws


def test_paired_test_by_hand() -> None:
    """McNemar's exact test counts only the images where the models disagree."""
    candidate = np.array([True] * 12 + [False] * 2 + [True] * 20)
    champion = np.array([False] * 12 + [True] * 2 + [True] * 20)
    test = core.paired_test(candidate, champion)
    assert (test.candidate_only, test.champion_only) == (12, 2)
    assert test.p_value == pytest.approx(0.01294, abs=1e-4)  # 2 * P(X <= 2), X ~ B(14, 1/2)
    assert test.difference == pytest.approx(10 / 34)


def _outcomes(rng: np.random.Generator, labels: np.ndarray, recall: list[float]) -> np.ndarray:
    return rng.random(len(labels)) < np.asarray(recall)[labels]


def test_gate_promotes_only_a_real_improvement() -> None:
    """Better -> promoted; worse or tie -> not; a class collapse blocks; first model: floor."""
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1, 2], 300)
    names = ["room", "facade", "logo"]
    champion = _outcomes(rng, labels, [0.8, 0.8, 0.8])
    better = champion | _outcomes(rng, labels, [0.5, 0.5, 0.5])
    config = GateConfig()
    assert decide(better, champion, labels, names, config).promote
    worse = champion & _outcomes(rng, labels, [0.8, 0.8, 0.8])
    decision = decide(worse, champion, labels, names, config)
    assert not decision.promote and "not above the margin" in decision.reasons[0]
    tie = decide(champion.copy(), champion, labels, names, config)
    assert not tie.promote
    collapse = better.copy()
    collapse[labels == 2] = _outcomes(rng, labels[labels == 2], [0, 0, 0.3])
    collapse[labels != 2] = True  # overall better, but 'logo' recall collapses
    decision = decide(collapse, champion, labels, names, config)
    assert not decision.promote
    assert any("'logo'" in reason for reason in decision.reasons)
    assert decision.recall_drops["logo"] > 0.4
    small_gain = champion.copy()
    small_gain[np.flatnonzero(~champion)[:3]] = True  # +3 images: not significant
    assert not decide(small_gain, champion, labels, names, config).promote
    relaxed = GateConfig(max_p_value=1.0)
    assert decide(small_gain, champion, labels, names, relaxed).promote
    assert decide_first(champion, GateConfig(absolute_floor=0.7)).promote
    assert not decide_first(champion, GateConfig(absolute_floor=0.9)).promote


def test_first_model_must_beat_its_own_linear_probe() -> None:
    """Above the floor but no better than frozen features: refused, and the reason says so;
    one image better than the probe passes; beat_probe=False turns the rule off."""
    correct = np.array([True] * 70 + [False] * 30)
    config = GateConfig(absolute_floor=0.5)
    refused = decide_first(correct, config, probe_top1=0.70)
    assert not refused.promote and refused.probe_top1 == 0.70
    assert "does not beat its own linear probe 0.7000" in refused.reasons[0]
    assert not decide_first(correct, config, probe_top1=0.75).promote
    passed = decide_first(correct, config, probe_top1=0.69)
    assert passed.promote and "beats its linear probe" in passed.reasons[0]
    off = decide_first(correct, GateConfig(absolute_floor=0.5, beat_probe=False), probe_top1=0.9)
    assert off.promote and off.probe_top1 == 0.9 and "rule off" in off.reasons[0]
    assert decide_first(correct, config, probe_top1=None).promote  # probe not measurable
    perfect = np.ones(50, dtype=bool)
    assert decide_first(perfect, config, probe_top1=1.0).promote  # nothing left to beat


def test_suspects_need_model_and_neighbours_to_disagree() -> None:
    """A confidently contradicted image among look-alikes of another label is a suspect; a
    contradicted image among its own label's look-alikes is not."""
    rng = np.random.default_rng(2)
    centres = np.array([[5.0, 0.0], [0.0, 5.0]])
    labels = np.repeat([0, 1], 20)
    embeddings = centres[labels] + rng.normal(0, 0.3, size=(40, 2))
    probabilities = np.eye(2)[labels] * 0.9 + 0.05
    labels[3] = 1  # mislabelled: sits among class 0, model says 0
    probabilities[25] = [0.95, 0.05]  # a model mistake on a well-labelled class-1 image
    rows = find_suspects(embeddings, probabilities, labels, ["winter", "summer"])
    assert [row["index"] for row in rows] == [3]
    assert rows[0]["label"] == "summer" and rows[0]["neighbour_label"] == "winter"
    strict = SuspectConfig(min_confidence=0.99)
    assert find_suspects(embeddings, probabilities, labels, ["w", "s"], strict) == []


def test_metric_keys_stay_within_mlflow_limits() -> None:
    """A 250-character label once crashed evaluate after all its compute; keys are now cut
    to 250 with a digest, distinct for distinct labels, and odd characters replaced."""
    from components.evaluate.run import metric_key

    long_a, long_b = "a" * 250 + "x", "a" * 250 + "y"
    assert len(metric_key(f"test_recall.{long_a}")) == 250
    assert metric_key(f"test_recall.{long_a}") != metric_key(f"test_recall.{long_b}")
    assert metric_key("test_recall.café:1") == "test_recall.caf__1"
    assert metric_key("test_top1") == "test_top1"


@pytest.mark.parametrize("ran_as", ["bf16", "f32"])
def test_precision_cost_by_hand(ran_as: str) -> None:
    """The reduced-precision figures on the four images, and the wording when OpenVINO
    kept f32 on a CPU without bf16 (the outputs must not pass f32 off as bf16)."""
    from components.evaluate.cli import precision_line
    from components.evaluate.scoring import Predictions, ReducedScorer, precision_cost

    lowered = np.array(
        [
            [0.7, 0.2, 0.1],  # as in f32: right
            [0.1, 0.4, 0.5],  # now wrong (2), truth still in the top 2
            [0.3, 0.6, 0.1],  # now right (1)
            [0.3, 0.25, 0.45],  # still wrong (2), but truth 0 is now in the top 2
        ]
    )
    found = Predictions(PROBS, LABELS, np.zeros((4, 1)), ["a", "b", "c", "d"], {}, lowered)
    scorer = ReducedScorer("bf16", ran_as, "exported here", lambda batch: batch)
    cost = precision_cost(found, scorer, 2)
    assert cost["top1"]["value"] == 0.5 and cost["top1_difference"] == 0.0  # 2 right either way
    assert cost["top1_agreement"] == 0.5  # images 1 and 2 changed their first guess
    assert cost["top2"]["value"] == 1.0 and cost["top2_difference"] == pytest.approx(0.25)
    assert cost["max_abs_dp"] == pytest.approx(0.3)
    line = precision_line(cost, "test", 2)
    assert line.startswith("test in bf16") and "top-1 agreement 0.5000" in line
    assert cost["fell_back"] == (ran_as == "f32")
    assert ("(ran f32)" in line) == cost["fell_back"] == ("no bf16 support" in cost["note"])
    with pytest.raises(ValueError, match="do not cover"):
        precision_cost(Predictions(PROBS, LABELS, np.zeros((4, 1)), [], {}, None), scorer, 2)
