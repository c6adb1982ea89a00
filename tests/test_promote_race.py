"""Promotion as compare-and-set: a decision made against one champion cannot move an alias
that another promotion has moved since."""

from __future__ import annotations

import uuid

import pytest

from tests.test_evaluate import LABELS, good_model, noisy_dataset, register, tiny_tagger

__all__ = ["good_model", "noisy_dataset"]  # module fixtures shared with test_evaluate


def test_a_stale_decision_cannot_move_the_alias(noisy_dataset: str, good_model,
                                                tracking_env: str) -> None:  # fmt: skip
    """Two candidates judged against champion v1; the first to move wins; the second is
    refused (it was never compared with the new champion) and the alias stays put."""
    import mlflow

    from components.evaluate.gate import GateConfig
    from components.evaluate.promote import AliasMoved, judge, move_alias, promote

    client = mlflow.MlflowClient()
    name = f"race-{uuid.uuid4().hex[:6]}"
    first = register(tiny_tagger(len(LABELS), seed=1), name, list(LABELS))
    assert promote(first, noisy_dataset, config=GateConfig(absolute_floor=0.0)).promote
    second = register(good_model, name, list(LABELS))
    third = register(good_model, name, list(LABELS))
    assert judge(second, noisy_dataset).promote and judge(third, noisy_dataset).promote
    move_alias(third)
    with pytest.raises(AliasMoved, match=r"points at version 3, but .* compared with 1"):
        move_alias(second)
    assert client.get_model_version_by_alias(name, "champion").version == "3"
    assert "gallerytag.promoted_to" not in client.get_model_version(name, "2").tags
    with pytest.raises(ValueError, match="has not passed the promotion gate"):
        move_alias(register(good_model, name, list(LABELS)))
