"""ContentEmbedder: catalog Examples in, one content-embedding record per item out."""

from tfx.types import component_spec, standard_artifacts

CATALOG_KEY = "catalog"
ITEM_EMBEDDINGS_KEY = "item_embeddings"
ENCODER_HANDLES_KEY = "encoder_handles"


class ContentEmbedderSpec(component_spec.ComponentSpec):
    """encoder_handles: JSON object modality -> encoder handle (local path or TF-Hub/Kaggle handle)."""

    PARAMETERS = {ENCODER_HANDLES_KEY: component_spec.ExecutionParameter(type=str)}
    INPUTS = {CATALOG_KEY: component_spec.ChannelParameter(type=standard_artifacts.Examples)}
    OUTPUTS = {ITEM_EMBEDDINGS_KEY: component_spec.ChannelParameter(type=standard_artifacts.Examples)}
