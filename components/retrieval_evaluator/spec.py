"""RetrievalEvaluator: eval Examples + model (+ last blessed model, + TFMA's blessing) in; metrics and a ModelBlessing out."""

from tfx.types import component_spec, standard_artifacts

EXAMPLES_KEY = "examples"
MODEL_KEY = "model"
BASELINE_MODEL_KEY = "baseline_model"
TFMA_BLESSING_KEY = "tfma_blessing"
BASELINES_KEY = "baselines"  # the Baselines component's output: simple recommenders on the same events
EVALUATION_KEY = "evaluation"
BLESSING_KEY = "blessing"
THRESHOLDS_KEY = "thresholds"
MIN_RECALL_KEY = "min_recall_at_100"  # overrides the thresholds' floor when set (a Kubeflow runtime parameter)


class RetrievalEvaluatorSpec(component_spec.ComponentSpec):
    """thresholds: JSON of executor.Thresholds fields (floors and the allowed regression)."""

    PARAMETERS = {
        THRESHOLDS_KEY: component_spec.ExecutionParameter(type=str),
        MIN_RECALL_KEY: component_spec.ExecutionParameter(type=float, optional=True),
    }
    INPUTS = {
        EXAMPLES_KEY: component_spec.ChannelParameter(type=standard_artifacts.Examples),
        MODEL_KEY: component_spec.ChannelParameter(type=standard_artifacts.Model),
        BASELINE_MODEL_KEY: component_spec.ChannelParameter(type=standard_artifacts.Model, optional=True),
        TFMA_BLESSING_KEY: component_spec.ChannelParameter(type=standard_artifacts.ModelBlessing, optional=True),
        BASELINES_KEY: component_spec.ChannelParameter(type=standard_artifacts.ModelEvaluation, optional=True),
    }
    OUTPUTS = {
        EVALUATION_KEY: component_spec.ChannelParameter(type=standard_artifacts.ModelEvaluation),
        BLESSING_KEY: component_spec.ChannelParameter(type=standard_artifacts.ModelBlessing),
    }
