"""RetrievalEvaluator component: retrieval metrics of the trained model, and the blessing the Pusher reads."""

from typing import Optional

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import channel_utils, standard_artifacts

from components.retrieval_evaluator import executor, spec


class RetrievalEvaluator(base_component.BaseComponent):
    """Scores retrieval (and retrieve-then-rank) on the eval split, overall and per slice, and blesses or not.

    The model is blessed when every floor holds, it does not regress beyond the
    allowed margin against `baseline_model` (the last model this component
    blessed), the eval data is complete, and `tfma_blessing` (the TFMA
    Evaluator's verdict on the ranking model), when given, is blessed too. The
    pattern is the bqml-scann IndexEvaluator's: metrics + a standard ModelBlessing.

    Args:
      examples: ExampleGen output with `train`, `validation` and `eval` splits (raw tf.Examples).
      model: Trainer output (the serving SavedModel, see towers.exporter).
      thresholds: executor.Thresholds.
      baseline_model: last blessed model (Resolver with LatestBlessedModelStrategy).
      tfma_blessing: the TFMA Evaluator's blessing of the same model.
      baselines: the Baselines component's output (simple recommenders scored on the same
        events): the model is compared with the best of them, per event and per user.
      min_recall_at_100: overrides thresholds.min_recall_at_100 (a float or a RuntimeParameter).
    """

    SPEC_CLASS = spec.RetrievalEvaluatorSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(
        self,
        examples: types.BaseChannel,
        model: types.BaseChannel,
        thresholds: executor.Thresholds,
        baseline_model: Optional[types.BaseChannel] = None,
        tfma_blessing: Optional[types.BaseChannel] = None,
        baselines: Optional[types.BaseChannel] = None,
        min_recall_at_100=None,
    ):
        super().__init__(
            spec=spec.RetrievalEvaluatorSpec(
                examples=examples,
                model=model,
                baseline_model=baseline_model,
                tfma_blessing=tfma_blessing,
                baselines=baselines,
                thresholds=thresholds.to_json(),
                min_recall_at_100=min_recall_at_100,
                evaluation=channel_utils.as_channel([standard_artifacts.ModelEvaluation()]),
                blessing=channel_utils.as_channel([standard_artifacts.ModelBlessing()]),
            )
        )
