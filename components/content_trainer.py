"""The TFX Trainer, with two more inputs: the ContentEmbedder's per-item embeddings and the raw examples.

The standard Trainer's inputs are fixed; this component extends TrainerSpec
with an `item_embeddings` channel and an optional `raw_examples` channel (the
ExampleGen output: run_fn chooses the served item-graph weights on its
validation split, with the evaluator's seen-item exclusion) and hands their
locations to run_fn as `custom_config[ITEM_EMBEDDINGS_URI_KEY]` and
`custom_config[RAW_EXAMPLES_URI_KEY]`. Everything else is the stock GenericExecutor.
"""

from typing import Optional

from tfx import types
from tfx.components.trainer import executor as trainer_executor
from tfx.dsl.components.base import base_component, executor_spec
from tfx.proto import trainer_pb2
from tfx.types import artifact_utils, component_spec, standard_artifacts, standard_component_specs
from tfx.utils import json_utils

from towers.contract import ITEM_EMBEDDINGS_URI_KEY, RAW_EXAMPLES_URI_KEY

ITEM_EMBEDDINGS_KEY = "item_embeddings"
RAW_EXAMPLES_KEY = "raw_examples"


class ContentTrainerSpec(standard_component_specs.TrainerSpec):
    INPUTS = {
        **standard_component_specs.TrainerSpec.INPUTS,
        ITEM_EMBEDDINGS_KEY: component_spec.ChannelParameter(type=standard_artifacts.Examples),
        RAW_EXAMPLES_KEY: component_spec.ChannelParameter(type=standard_artifacts.Examples, optional=True),
    }


class ContentTrainerExecutor(trainer_executor.GenericExecutor):
    def _GetFnArgs(self, input_dict, output_dict, exec_properties):
        fn_args = super()._GetFnArgs(input_dict, output_dict, exec_properties)
        uri = artifact_utils.get_single_uri(input_dict[ITEM_EMBEDDINGS_KEY])
        fn_args.custom_config = {**(fn_args.custom_config or {}), ITEM_EMBEDDINGS_URI_KEY: uri}
        if input_dict.get(RAW_EXAMPLES_KEY):
            fn_args.custom_config[RAW_EXAMPLES_URI_KEY] = artifact_utils.get_single_uri(input_dict[RAW_EXAMPLES_KEY])
        return fn_args


class Trainer(base_component.BaseComponent):
    """tfx.components.Trainer (run_fn form) + `item_embeddings` (one embedding record per item).

    Args:
      examples, transform_graph, schema, train_args, eval_args, run_fn,
      custom_config, base_model: as for tfx.components.Trainer.
      item_embeddings: ContentEmbedder output channel.
      raw_examples: ExampleGen output channel (optional).
    """

    SPEC_CLASS = ContentTrainerSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(ContentTrainerExecutor)

    def __init__(
        self,
        examples: types.BaseChannel,
        transform_graph: types.BaseChannel,
        item_embeddings: types.BaseChannel,
        run_fn: str,
        schema: Optional[types.BaseChannel] = None,
        train_args: Optional[trainer_pb2.TrainArgs] = None,
        eval_args: Optional[trainer_pb2.EvalArgs] = None,
        custom_config: Optional[dict] = None,
        base_model: Optional[types.BaseChannel] = None,
        raw_examples: Optional[types.BaseChannel] = None,
    ):
        super().__init__(
            spec=ContentTrainerSpec(
                examples=examples,
                transform_graph=transform_graph,
                schema=schema,
                base_model=base_model,
                item_embeddings=item_embeddings,
                raw_examples=raw_examples,
                train_args=train_args or trainer_pb2.TrainArgs(),
                eval_args=eval_args or trainer_pb2.EvalArgs(),
                run_fn=run_fn,
                custom_config=json_utils.dumps(custom_config or {}),
                model=types.Channel(type=standard_artifacts.Model),
                model_run=types.Channel(type=standard_artifacts.ModelRun),
            )
        )
