"""Which auto/review policy a tagging run uses: bars set by hand, else the policy.json of
the model's own evaluation (an MLflow artifact of its run), else everything to review."""

from __future__ import annotations

import json

from components.common import storage
from components.common.policy_file import POLICY_ARTIFACT, POLICY_FILE
from components.common.tracking import TaggerSpec, run_json_artifact
from components.tag.policy import TagPolicy, policy_from_file, unevaluated_policy


def read_policy(where: str, tagger: TaggerSpec, tmp: str) -> dict | None:
    """policy.json of this very model: from its MLflow run ('model'; None when the model was
    never evaluated) or a file / evaluation folder."""
    if where == "model":
        return run_json_artifact(tagger.run_id, POLICY_ARTIFACT, tmp)
    path = where if where.endswith(".json") else storage.join(where, POLICY_FILE)
    if not storage.exists(path):
        raise ValueError(f"--thresholds-from: {path} does not exist")
    policy = json.loads(storage.read_text(path))
    if tagger.run_id and policy.get("run_id") not in (None, tagger.run_id):
        raise ValueError(
            f"--thresholds-from: {path} is the policy of run {policy.get('run_id')}, not of "
            f"{tagger.uri} (run {tagger.run_id}); its bars would not fit this model"
        )
    return policy


def manual_policy(
    min_score: float | None,
    min_margin: float | None,
    cutoffs: dict[str, float] | None = None,
    source: str = "command line",
) -> TagPolicy | None:
    """Bars set by hand (an unset one takes TagPolicy's default), or None when none is set."""
    if min_score is None and min_margin is None and not cutoffs:
        return None
    defaults = TagPolicy()
    return TagPolicy(
        defaults.min_score if min_score is None else min_score,
        defaults.min_margin if min_margin is None else min_margin,
        defaults.top_k,
        cutoffs or {},
        origin={"source": source},
    )


def choose_policy(
    tagger: TaggerSpec, manual: TagPolicy | None, thresholds_from: str = "model", tmp: str = "."
) -> TagPolicy:
    """Hand-set thresholds win; else the model's evaluation; else everything to review."""
    if manual is not None:
        return manual
    found = read_policy(thresholds_from, tagger, tmp)
    return policy_from_file(found) if found else unevaluated_policy()


def describe(policy: TagPolicy) -> str:
    """One line saying which policy a run uses and what it promises."""
    if policy.review_all:
        return f"tag: {policy.review_all}"
    origin = policy.origin
    if origin.get("source") != "evaluation":
        return f"tag: auto when top-1 >= {policy.min_score} and margin >= {policy.min_margin}"
    expected = origin["expected"]
    precision = expected.get("precision")
    promise = (
        f"expected precision {precision['value']:.3f} ({precision['low']:.3f}-"
        f"{precision['high']:.3f}) at coverage {expected['coverage']:.2f} on the evaluation"
        if precision
        else "no bar reached the target on the evaluation: all to review"
    )
    bars = ", ".join(
        f"{label} {'never' if bar > 1 else bar}" for label, bar in policy.label_min_scores.items()
    )
    return (
        f"tag: policy from the model's evaluation (target precision "
        f"{origin['target_precision']}): {promise}; auto bars: {bars}"
    )
