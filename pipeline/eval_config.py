"""TFMA configuration for the retrieval model.

The exported `evaluate` signature returns per-example recall@K and ndcg@10 as
named outputs; TFMA averages them (MeanPrediction per output) overall and per
slice, and gates blessing on Recall@100: an absolute floor, and no regression
beyond a tolerance against the last blessed model.
"""
from __future__ import annotations

import tensorflow_model_analysis as tfma

from towers import exporter
from towers import features as F
from towers import metrics

GATED_METRIC = metrics.recall_name(100)
METRIC_CLASS = "MeanPrediction"


def build(min_recall_at_100: float, max_regression: float, slice_features: tuple[str, ...] = ()) -> tfma.EvalConfig:
    """EvalConfig with one MeanPrediction per metric output, thresholds on GATED_METRIC.

    Args:
      min_recall_at_100: absolute floor for blessing.
      max_regression: allowed drop of Recall@100 versus the last blessed model.
      slice_features: raw eval features to slice by, one at a time (besides overall).
    """
    gate = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={"value": min_recall_at_100}),
        change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER, absolute={"value": -max_regression}
        ),
    )
    metrics_specs = [
        tfma.MetricsSpec(
            output_names=[name],
            metrics=[tfma.MetricConfig(class_name=METRIC_CLASS, threshold=gate if name == GATED_METRIC else None)],
        )
        for name in metrics.METRIC_NAMES
    ]
    return tfma.EvalConfig(
        model_specs=[
            tfma.ModelSpec(
                signature_name=exporter.EVALUATE_SIGNATURE,
                model_type=tfma.TF_GENERIC,
                # The outputs are per-example metrics, not predictions of a label;
                # TFMA still needs a label column, so the rating stands in.
                label_keys={name: F.RATING for name in metrics.METRIC_NAMES},
                preprocessing_function_names=[],
            )
        ],
        slicing_specs=[tfma.SlicingSpec()] + [tfma.SlicingSpec(feature_keys=[name]) for name in slice_features],
        metrics_specs=metrics_specs,
    )
