"""The `item_encoder` model: the candidate tower on serialized items (`embed_candidates`), to embed new items."""

from __future__ import annotations

import tensorflow as tf

from towers import features as F
from towers.contract import EMBEDDINGS_OUTPUT, EXAMPLES_INPUT, MODALITY_WEIGHTS_OUTPUT
from towers.tables import string_list


class ItemEncoder(tf.Module):
    """The candidate tower on raw item features + content embeddings.

    Args:
      tft_layer: `TFTransformOutput.transform_features_layer()`.
      candidate_tower: maps transformed item features (+ content embeddings) to [batch, dim].
      item_spec: the raw feature spec of the item features the dataset has.
      content_dims: content modality -> the size of its embedding.

    Attributes:
      content_modalities: string variable [M]: whose content embeddings embed_candidates reads
        (app.add_items encodes new items with those encoders).
    """

    def __init__(self, tft_layer, candidate_tower, item_spec: dict, content_dims: dict[str, int]):
        super().__init__()
        self.tft_layer = tft_layer
        self.candidate_tower = candidate_tower
        self._item_spec = item_spec
        # An item without a content embedding gets zeros: the tower treats that modality as missing.
        self._content_spec = {
            F.CONTENT_EMBEDDINGS[m]: tf.io.FixedLenFeature([dim], tf.float32, default_value=[0.0] * dim) for m, dim in content_dims.items()
        }
        if getattr(candidate_tower, "text_encoder", None) is not None:  # fine-tuned text: the tower reads the text itself
            self._content_spec[F.ITEM_TEXT] = tf.io.FixedLenFeature([], tf.string, default_value="")
        self.content_modalities = string_list(content_dims, "content_modalities")

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)])
    def embed_candidates(self, examples):
        """Serialized item tf.Examples [batch] -> `embeddings` [batch, dim], `modality_weights` [batch, M]
        (order: `candidate_tower.modalities`)."""
        raw = tf.io.parse_example(examples, {**self._item_spec, **self._content_spec})
        features = {**self.tft_layer({name: raw[name] for name in self._item_spec}), **{name: raw[name] for name in self._content_spec}}
        return {
            EMBEDDINGS_OUTPUT: self.candidate_tower(features),
            MODALITY_WEIGHTS_OUTPUT: self.candidate_tower.modality_weights(features),
        }
