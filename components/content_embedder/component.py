"""ContentEmbedder component: runs the content encoders over the catalog with Beam RunInference."""

import json

from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.types import channel_utils, standard_artifacts

from components.content_embedder import executor, spec


class ContentEmbedder(base_beam_component.BaseBeamComponent):
    """Embeds every catalog item once (not once per interaction) with pretrained encoders.

    Args:
      catalog: channel of catalog Examples (one tf.Example per item).
      encoder_handles: modality -> encoder handle, e.g. {"text": "/path/or/tfhub/handle"}.
    """

    SPEC_CLASS = spec.ContentEmbedderSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(self, catalog, encoder_handles: dict[str, str]):
        item_embeddings = channel_utils.as_channel([standard_artifacts.Examples()])
        super().__init__(
            spec=spec.ContentEmbedderSpec(
                catalog=catalog,
                encoder_handles=json.dumps(encoder_handles, sort_keys=True),
                item_embeddings=item_embeddings,
            )
        )
