"""When the RetrievalEvaluator blesses a model (plain values: the CLI and the pipeline config read the defaults)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass


@dataclass(frozen=True)
class Thresholds:
    """When the RetrievalEvaluator blesses a model.

    Attributes:
      min_recall_at_100: floor on retrieval Recall@100.
      min_recall_at_10: floor on retrieval Recall@10.
      max_regression: allowed drop of retrieval Recall@100 (absolute) versus
        the baseline (last blessed) model on the same eval data.
      require_beat_baseline: the check "the served recommend beats the best
        simple baseline on Recall@10" blocks the blessing (default: a warning).
    """

    min_recall_at_100: float = 0.05
    min_recall_at_10: float = 0.0
    max_regression: float = 0.02
    require_beat_baseline: bool = False

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Thresholds:
        return cls(**json.loads(text))
