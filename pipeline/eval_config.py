"""TFMA configuration for the ranking model (the retrieval gate is components/retrieval_evaluator).

TFMA runs the exported `rank_examples` signature on the eval split (held-out
interactions), with the `evaluation_features` signature as its preprocessing
function: that adds the `liked` label and the slices (item popularity, cold vs
warm, modalities, user activity) computed from the model's own training data.
Metrics:

- like (P(rating >= liked_rating | interaction)): AUC, calibration (mean
  prediction / mean label), mean label and prediction, and NDCG@10 per user
  (query_key = user id, gain = rating: how well the ranker orders each user's
  held-out items);
- predicted rating: RMSE against the rating.
The engagement head (interaction vs not) needs non-interactions to score; the
RetrievalEvaluator measures it through the `recommend` lists.

Blessing: overall like-AUC above a floor, and no drop beyond a tolerance
against the last blessed model (slices are reported, not gated: some are small).
"""

from __future__ import annotations

import tensorflow_model_analysis as tfma

from towers import contract
from towers import features as F
from towers.ranking import LIKE_OUTPUT, RATING_OUTPUT

NDCG_K = 10
GATED_METRIC = "auc"


def build(min_auc: float, max_auc_regression: float, slice_features: tuple[str, ...] = ()) -> tfma.EvalConfig:
    """EvalConfig for the ranking model.

    Args:
      min_auc: blessing floor on the like AUC.
      max_auc_regression: allowed AUC drop versus the last blessed model.
      slice_features: raw eval features to slice by too (e.g. gender), one at a time.
    """
    gate = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={"value": min_auc}),
        change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER, absolute={"value": -max_auc_regression}
        ),
    )
    like = [
        # Gated on the overall slice only: small slices are reported, not gated.
        tfma.MetricConfig(
            class_name="AUC",
            config='{"name": "auc"}',
            per_slice_thresholds=[tfma.PerSliceMetricThreshold(slicing_specs=[tfma.SlicingSpec()], threshold=gate)],
        ),
        tfma.MetricConfig(class_name="Calibration"),
        tfma.MetricConfig(class_name="MeanLabel"),
        tfma.MetricConfig(class_name="MeanPrediction"),
        tfma.MetricConfig(class_name="ExampleCount"),
    ]
    return tfma.EvalConfig(
        model_specs=[
            tfma.ModelSpec(
                signature_name=contract.RANK_EXAMPLES_SIGNATURE,
                model_type=tfma.TF_GENERIC,
                preprocessing_function_names=[contract.EVALUATION_FEATURES_SIGNATURE],
                label_keys={LIKE_OUTPUT: F.LIKED, RATING_OUTPUT: F.RATING},
            )
        ],
        slicing_specs=[tfma.SlicingSpec()]
        + [tfma.SlicingSpec(feature_keys=[name]) for name in F.EVAL_SLICE_FEATURES + tuple(slice_features)],
        metrics_specs=[
            tfma.MetricsSpec(output_names=[LIKE_OUTPUT], metrics=like),
            tfma.MetricsSpec(
                output_names=[LIKE_OUTPUT],
                query_key=F.USER_ID,
                metrics=[tfma.MetricConfig(class_name="NDCG", config=f'{{"gain_key": "{F.RATING}", "top_k_list": [{NDCG_K}]}}')],
            ),
            tfma.MetricsSpec(output_names=[RATING_OUTPUT], metrics=[tfma.MetricConfig(class_name="RootMeanSquaredError")]),
        ],
    )
