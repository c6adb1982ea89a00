"""The auto/review policy contract between `evaluate` (writes it) and `tag` (reads it).

`policy.json` sits in the evaluation folder and, as an artifact, under `evaluation/` on the
model's MLflow run, so a registered model carries the bar its own evaluation chose.
"""

from __future__ import annotations

POLICY_SCHEMA_VERSION = 1
POLICY_FILE = "policy.json"
POLICY_ARTIFACT = f"evaluation/{POLICY_FILE}"  # path on the model's MLflow run
NEVER = 1.01  # a bar no probability reaches: that label always goes to review
