"""The promotion gate, pure: given how a candidate and the current champion did on the same
test images, decide whether the candidate may take the `champion` alias, and say why."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from components.evaluate.config import GateConfig
from components.evaluate.core import paired_test, wilson_interval


@dataclass(frozen=True)
class Decision:
    """What the gate decided, with the figures it decided on (written as JSON)."""

    promote: bool
    reasons: list[str]
    candidate_top1: float
    champion_top1: float | None
    p_value: float | None = None
    recall_drops: dict[str, float] = field(default_factory=dict)
    probe_top1: float | None = None  # the linear probe's top-1 on the same images, if measured

    def as_dict(self) -> dict:
        """For the decision file and MLflow tags."""
        return asdict(self)


def per_class_recall(
    correct: np.ndarray, labels: np.ndarray, names: list[str]
) -> dict[str, tuple[float | None, int]]:
    """Recall per class name, with the number of test images it rests on."""
    recalls = {}
    for index, name in enumerate(names):
        mine = labels == index
        recalls[name] = (float(correct[mine].mean()) if mine.any() else None, int(mine.sum()))
    return recalls


def decide_first(
    candidate_correct: np.ndarray, config: GateConfig, probe_top1: float | None = None
) -> Decision:
    """No champion yet: promote when the candidate's top-1 reaches the absolute floor and
    beats its own linear probe (a fine-tune no better than frozen features is not a win)."""
    top1 = wilson_interval(int(candidate_correct.sum()), len(candidate_correct)).value
    blockers = []
    if top1 < config.absolute_floor:
        blockers.append(
            f"no champion yet; top-1 {top1:.4f} is below the floor {config.absolute_floor}"
        )
    # A perfect score cannot be beaten; anything less must be strictly above the probe.
    if config.beat_probe and probe_top1 is not None and top1 <= probe_top1 and top1 < 1.0:
        blockers.append(
            f"top-1 {top1:.4f} does not beat its own linear probe {probe_top1:.4f} (logistic "
            "regression on the frozen backbone's features, same test images): fine-tuning "
            "added nothing; train longer, unfreeze more blocks or add images"
        )
    if blockers:
        return Decision(False, blockers, top1, None, probe_top1=probe_top1)
    reason = f"no champion yet; top-1 {top1:.4f} >= floor {config.absolute_floor}"
    if probe_top1 is not None and config.beat_probe:
        reason += f" and beats its linear probe {probe_top1:.4f} ({top1 - probe_top1:+.4f})"
    elif probe_top1 is not None:
        reason += f"; linear probe {probe_top1:.4f} ({top1 - probe_top1:+.4f}, rule off)"
    return Decision(True, [reason], top1, None, probe_top1=probe_top1)


def decide(
    candidate_correct: np.ndarray,
    champion_correct: np.ndarray,
    labels: np.ndarray,
    names: list[str],
    config: GateConfig,
) -> Decision:
    """Candidate vs champion on the same images: margin, paired test and per-class recall."""
    test = paired_test(candidate_correct, champion_correct)
    candidate_top1 = float(candidate_correct.mean())
    champion_top1 = float(champion_correct.mean())
    blockers = []
    if test.difference <= config.min_improvement:
        blockers.append(
            f"top-1 gain {test.difference:+.4f} is not above the margin {config.min_improvement}"
        )
    if test.p_value > config.max_p_value:
        blockers.append(
            f"gain not significant: McNemar p={test.p_value:.3g} > {config.max_p_value} "
            f"({test.candidate_only} images only the candidate gets right, "
            f"{test.champion_only} only the champion)"
        )
    candidate_recall = per_class_recall(candidate_correct, labels, names)
    champion_recall = per_class_recall(champion_correct, labels, names)
    drops = {}
    for name in names:
        (new, support), (old, _) = candidate_recall[name], champion_recall[name]
        if support < config.min_class_support or new is None:
            continue
        drops[name] = round(old - new, 6)
        if old - new > config.max_recall_drop:
            blockers.append(
                f"recall of '{name}' drops {old:.3f} -> {new:.3f} "
                f"(more than {config.max_recall_drop})"
            )
    if blockers:
        return Decision(False, blockers, candidate_top1, champion_top1, test.p_value, drops)
    reason = (
        f"top-1 {champion_top1:.4f} -> {candidate_top1:.4f} ({test.difference:+.4f}, "
        f"McNemar p={test.p_value:.3g}); no class recall drops more than {config.max_recall_drop}"
    )
    return Decision(True, [reason], candidate_top1, champion_top1, test.p_value, drops)
