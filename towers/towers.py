"""Query and candidate towers: plain Keras models over transformed features.

Both take the dict `preprocessing_fn` emits and return [batch, embedding_dim]
L2-normalised embeddings. Embedding tables are sized from vocabulary sizes read
back from the Transform output (`vocab_sizes`), never hard-coded.
"""

from __future__ import annotations

import tensorflow as tf

from towers import features as F
from towers import warm_start
from towers.hparams import HParams


def id_embedding(vocab_sizes: dict[str, int], vocab: str, dim: int, name: str) -> tf.keras.layers.Embedding:
    """Table for ids in [0, size of `vocab` + OOV) as produced by compute_and_apply_vocabulary."""
    return warm_start.index_by(tf.keras.layers.Embedding(vocab_sizes[vocab] + F.NUM_OOV_BUCKETS, dim, name=name), vocab)


class MaskedMeanEmbedding(tf.keras.layers.Layer):
    """Padded token ids [batch, len] (0 = padding) -> mean of their embeddings [batch, dim].

    Out-of-vocabulary tokens (words or items unseen in training) are left out
    like padding: one shared OOV row would otherwise stand for every unknown
    word and pull new items towards whatever it learned.
    """

    def __init__(self, vocab_size: int, dim: int, vocab: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.dim, self.vocab = vocab_size, dim, vocab
        # +1 for the padding id 0 that preprocessing prepends to the vocabulary.
        self.embedding = tf.keras.layers.Embedding(vocab_size + F.NUM_OOV_BUCKETS + 1, dim)
        if vocab is not None:  # the vocabulary's name, for warm starts
            warm_start.index_by(self.embedding, vocab, offset=1)

    def call(self, ids: tf.Tensor) -> tf.Tensor:
        known = tf.logical_and(ids > 0, ids <= self.vocab_size)  # ids are vocabulary index + 1
        mask = tf.cast(known, tf.float32)[..., tf.newaxis]
        total = tf.reduce_sum(self.embedding(ids) * mask, axis=1)
        return total / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size, "dim": self.dim, "vocab": self.vocab}


class IdDropout(tf.keras.layers.Layer):
    """In training, replaces each id by the OOV bucket with probability `rate`.

    Users and items unseen in training all share the OOV row; without this
    its embedding is never trained and cold queries start from noise. With it,
    the OOV row learns the average user/item and the other features learn to
    carry cold-start cases.
    """

    def __init__(self, vocab_size: int, rate: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.oov_index, self.rate, self.seed = vocab_size, rate, seed

    def call(self, ids: tf.Tensor, training=None) -> tf.Tensor:
        if not training or self.rate <= 0:
            return ids
        drop = tf.random.uniform(tf.shape(ids), seed=self.seed) < self.rate
        return tf.where(drop, tf.cast(self.oov_index, ids.dtype), ids)

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.oov_index, "rate": self.rate, "seed": self.seed}


class HistoryContent(tf.keras.layers.Layer):
    """Padded history item ids [batch, len] (0 = padding) -> mean content embedding of those items [batch, D].

    `table` holds each training item's pretrained content embeddings (one row
    per item index, the OOV row zeros), fixed: the user's recent items say what
    content they like, in the same terms the candidate tower sees an item, so
    a taste learned for some items carries to every item with similar content.
    Unknown items (OOV) are left out like padding.
    """

    def __init__(self, table, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = int(table.shape[0]) - F.NUM_OOV_BUCKETS
        self.table = tf.Variable(tf.constant(table, tf.float32), trainable=False, name="history_content_table")

    def call(self, ids: tf.Tensor) -> tf.Tensor:
        known = tf.logical_and(ids > 0, ids <= self.vocab_size)  # ids are vocabulary index + 1
        rows = tf.gather(self.table, tf.where(known, ids - 1, 0))
        mask = tf.cast(known, tf.float32)[..., tf.newaxis]
        return tf.reduce_sum(rows * mask, axis=1) / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)


class HistorySequence(tf.keras.layers.Layer):
    """Padded history item ids [batch, len] (oldest first, 0 = padding) -> [batch, dim]: SASRec-style causal
    self-attention over the user's recent items, read at the most recent one.

    Each history item is its id embedding + its recency position (0 = the latest)
    + a projection of its content (the `content` table by item index, as
    HistoryContent), so the order of what the user did, not only its mean,
    reaches the query. Unknown items (OOV) are left out like padding: attention
    never reads them; an empty history gives zeros (the other query features
    carry the user then).
    """

    def __init__(self, vocab_size: int, dim: int, blocks: int, heads: int, content: tf.Variable | None = None, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.dim = vocab_size, dim
        self.item = warm_start.index_by(
            tf.keras.layers.Embedding(vocab_size + F.NUM_OOV_BUCKETS + 1, dim, name="item"), F.VOCAB_ITEM, offset=1
        )
        self.position = tf.keras.layers.Embedding(F.HISTORY_LENGTH, dim, name="recency_position")
        self.content = content
        self.content_projection = tf.keras.layers.Dense(dim, name="content_projection") if content is not None else None
        self.blocks = [
            (
                tf.keras.layers.MultiHeadAttention(heads, max(dim // heads, 1), dropout=0.1, name=f"attention_{b}"),
                tf.keras.layers.LayerNormalization(name=f"attention_norm_{b}"),
                tf.keras.Sequential(
                    [tf.keras.layers.Dense(2 * dim, activation="relu"), tf.keras.layers.Dense(dim)], name=f"feed_forward_{b}"
                ),
                tf.keras.layers.LayerNormalization(name=f"feed_forward_norm_{b}"),
            )
            for b in range(blocks)
        ]

    def call(self, ids: tf.Tensor, training=None) -> tf.Tensor:
        known = tf.logical_and(ids > 0, ids <= self.vocab_size)  # ids are vocabulary index + 1
        mask = tf.cast(known, tf.float32)[..., tf.newaxis]
        slots = tf.shape(ids)[1]
        length = tf.reduce_sum(tf.cast(ids > 0, tf.int32), axis=1, keepdims=True)
        recency = tf.clip_by_value(length - 1 - tf.range(slots)[tf.newaxis, :], 0, F.HISTORY_LENGTH - 1)
        safe = tf.where(known, ids, 0)
        x = self.item(safe) + self.position(recency)
        if self.content is not None:
            x += self.content_projection(tf.gather(self.content, tf.maximum(safe - 1, 0)))
        x *= mask
        causal = tf.linalg.band_part(tf.ones([slots, slots], tf.bool), -1, 0)  # query i reads keys j <= i
        attend = tf.logical_and(causal[tf.newaxis], known[:, tf.newaxis, :])
        for attention, norm, feed_forward, feed_forward_norm in self.blocks:
            x = norm(x + attention(x, x, attention_mask=attend, training=training)) * mask
            x = feed_forward_norm(x + feed_forward(x)) * mask
        last = tf.reduce_max(tf.where(known, tf.range(slots)[tf.newaxis, :], -1), axis=1)  # the latest known item
        return tf.gather(x, tf.maximum(last, 0), batch_dims=1) * tf.cast(last >= 0, tf.float32)[:, tf.newaxis]


def profile_modalities(content_dims: dict[str, int], hp: HParams, fine_tuned_text: bool = False) -> tuple[str, ...]:
    """The content modalities whose precomputed embeddings form a content profile (see content_profile).

    A fine-tuned text encoder has no precomputed embedding to use, so text is left out then.
    """
    return tuple(m for m in content_dims if m in hp.item_modalities and not (m == "text" and fine_tuned_text))


def content_profile(embeddings: list) -> tf.Tensor:
    """Per-modality L2-normalised content embeddings, concatenated [batch, D]; a missing modality (zeros) stays zeros.

    An item's profile and the mean profile of a user's recent items live in the
    same space, which the towers compare through one shared projection.
    """
    return tf.concat([tf.math.l2_normalize(tf.cast(e, tf.float32), axis=-1) for e in embeddings], axis=-1)


def _mlp(hp: HParams, name: str, output_dim: int) -> tf.keras.Sequential:
    layers = [tf.keras.layers.Dense(units, activation="relu") for units in hp.hidden_units]
    layers.append(tf.keras.layers.Dense(output_dim))
    return tf.keras.Sequential(layers, name=name)


def _output(hp: HParams, parts: list) -> tf.Tensor:
    embedding = tf.concat(parts, axis=-1) if len(parts) > 1 else parts[0]
    return tf.math.l2_normalize(embedding, axis=-1) if hp.l2_normalize else embedding


def shared_content_projection(hp: HParams):
    """The projection both towers apply to content profiles (None when hp.content_similarity_dim is 0).

    Its output is the last `content_similarity_dim` coordinates of both
    embeddings, so the score includes a learned similarity between the content
    of the user's recent items and the candidate's content, which holds for an
    item never seen in training exactly as for any other.
    """
    if hp.content_similarity_dim <= 0:
        return None
    return tf.keras.layers.Dense(hp.content_similarity_dim, use_bias=False, name="shared_content_projection")


HISTORY_ENCODERS = ("mean", "attention")
FUSIONS = ("gate", "attention")


def attribute_dim(vocab_size: int, hp: HParams) -> int:
    """Embedding size of a categorical attribute: small for a handful of values (e.g. 2 genders -> 4)."""
    return int(min(hp.feature_embedding_dim, max(2, 2 * vocab_size)))


class QueryTower(tf.keras.Model):
    """User id + user attributes + recent items + time context -> query embedding [batch, embedding_dim].

    The recent items (the mean embedding of the user's latest interactions before
    the query time) carry users who were not in training.

    The recency bucket lets the tower follow what is popular when: a query at or
    after the end of training asks for what is popular now.

    User attributes are those the dataset declares (`roles`): each categorical
    one an embedding (its size grows with its vocabulary, up to
    `feature_embedding_dim`), each numeric one its z-score.

    Args:
      vocab_sizes: vocabulary sizes from the Transform output.
      hp: hyperparameters.
      history_content: optional [items + OOV, D] content embeddings by item
        index (see HistoryContent); the recent items' mean content joins the
        query.
      roles: the dataset's declared features.
    """

    def __init__(
        self, vocab_sizes: dict[str, int], hp: HParams, history_content=None, shared_content=None, roles: F.FeatureRoles = F.NO_FEATURES
    ):
        super().__init__(name="query_tower")
        self.hp = hp
        self.user = id_embedding(vocab_sizes, F.VOCAB_USER, hp.id_embedding_dim, "user_embedding")
        self.user_dropout = IdDropout(vocab_sizes[F.VOCAB_USER], hp.id_dropout, hp.seed, name="user_id_dropout")
        self.attributes = {
            F.index_feature(column): id_embedding(vocab_sizes, column, attribute_dim(vocab_sizes[column], hp), f"{column}_embedding")
            for column in roles.user_categorical
        }
        self.numeric = tuple(F.z_feature(column) for column in roles.user_numeric)
        self.recency = tf.keras.layers.Embedding(F.RECENCY_BUCKETS, hp.feature_embedding_dim, name="recency_embedding")
        self.history = MaskedMeanEmbedding(vocab_sizes[F.VOCAB_ITEM], hp.id_embedding_dim, F.VOCAB_ITEM, name="history_embedding")
        self.history_content = None
        self.shared_content = None
        if history_content is not None and "history" in hp.query_features:
            self.history_content = HistoryContent(history_content, name="history_content")
            self.history_content_projection = tf.keras.layers.Dense(hp.fusion_dim, activation="relu", name="history_content_projection")
            self.shared_content = shared_content
        if hp.history_encoder not in HISTORY_ENCODERS:
            raise ValueError(f"history_encoder must be one of {HISTORY_ENCODERS}, got {hp.history_encoder!r}")
        self.sequence = None
        if hp.history_encoder == "attention" and "history" in hp.query_features:
            table = self.history_content.table if self.history_content is not None else None
            self.sequence = HistorySequence(
                vocab_sizes[F.VOCAB_ITEM], hp.id_embedding_dim, hp.history_blocks, hp.history_heads, table, name="history_sequence"
            )
        similarity_dim = hp.content_similarity_dim if self.shared_content is not None else 0
        self.mlp = _mlp(hp, "query_mlp", hp.embedding_dim - similarity_dim)

    def call(self, inputs: dict, training=None) -> tf.Tensor:
        use = set(self.hp.query_features)
        parts = []
        if "id" in use:
            parts.append(self.user(self.user_dropout(inputs[F.USER_INDEX], training=training)))
        if "time" in use:
            parts += [inputs[F.TIME_CONTEXT], self.recency(inputs[F.RECENCY_BUCKET])]
        if "history" in use:
            parts.append(self.history(inputs[F.HISTORY_TOKENS]))
            if self.sequence is not None:
                parts.append(self.sequence(inputs[F.HISTORY_TOKENS], training=training))
        if "attributes" in use:
            parts += [embedding(inputs[feature]) for feature, embedding in self.attributes.items()]
            parts += [tf.expand_dims(inputs[feature], -1) for feature in self.numeric]
        outputs = []
        if self.history_content is not None:
            profile = self.history_content(inputs[F.HISTORY_TOKENS])
            parts.append(self.history_content_projection(profile))
            if self.shared_content is not None:
                outputs.append(self.shared_content(profile))
        return _output(self.hp, [self.mlp(tf.concat(parts, axis=-1))] + outputs)


ITEM_MODALITIES = ("id", "metadata") + tuple(F.CONTENT_EMBEDDINGS)


def candidate_inputs(roles: F.FeatureRoles, content_dims: dict[str, int]) -> tuple[str, ...]:
    """The transformed features and content embeddings a CandidateTower reads (a fine-tuned text encoder's text aside)."""
    return (
        (F.ITEM_INDEX,)
        + tuple(map(F.tokens_feature, roles.item_text + roles.item_multivalued))
        + tuple(map(F.index_feature, roles.item_categorical))
        + tuple(map(F.z_feature, roles.item_numeric))
        + tuple(F.CONTENT_EMBEDDINGS[m] for m in content_dims)
    )


class CandidateTower(tf.keras.Model):
    """Item id + metadata + pretrained content embeddings -> candidate embedding [batch, embedding_dim].

    Each modality (id; metadata = title tokens + genres + year, those the
    dataset has; each content embedding the catalog has: text, image, audio)
    is projected to
    `fusion_dim`; a learned gate scores each projection and a softmax over the
    *available* modalities weighs them. With `hp.fusion == "attention"` the
    projections (+ a modality-type embedding) first attend to each other
    (cross-modal attention, one layer, missing modalities masked), and the
    gate weighs the attended tokens; the weights stay the per-item
    modality weights either way. The id is unavailable for items unseen
    in training (OOV), a content modality for items without that embedding (all
    zeros). In training, modality dropout hides id and content at random so that
    items missing them still embed well; an unseen item is then placed by its
    content alone.

    Args:
      vocab_sizes: vocabulary sizes from the Transform output.
      hp: hyperparameters (item_modalities switches modalities off).
      roles: the dataset's declared item features: the metadata modality is made of their bags of tokens
        (text, multi-valued), embeddings (categorical) and z-scores (numeric).
      content_dims: content modality -> embedding size, for those the catalog has.
      text_encoder: optional trainable text encoder (string [batch] -> [batch,
        content_dims["text"]]); with it the text modality is computed from
        `item_text` and fine-tuned, instead of read from `text_embedding`.
    """

    def __init__(
        self,
        vocab_sizes: dict[str, int],
        hp: HParams,
        content_dims: dict[str, int],
        text_encoder=None,
        shared_content=None,
        roles: F.FeatureRoles = F.NO_FEATURES,
    ):
        super().__init__(name="candidate_tower")
        self.hp = hp
        unknown = (set(hp.item_modalities) | set(content_dims)) - set(ITEM_MODALITIES)
        if unknown or not hp.item_modalities:
            raise ValueError(f"item_modalities must be a non-empty subset of {ITEM_MODALITIES}, got {hp.item_modalities}")
        self.modalities = tuple(m for m in ITEM_MODALITIES if m in ("id", "metadata") or m in content_dims)
        self.content_dims = dict(content_dims)
        self.text_encoder = text_encoder
        self.oov_item = vocab_sizes[F.VOCAB_ITEM]
        self.modality_dropout = hp.modality_dropout
        self.enabled = tf.constant([[float(m in hp.item_modalities) for m in self.modalities]])
        self.seed = hp.seed
        self.item = id_embedding(vocab_sizes, F.VOCAB_ITEM, hp.id_embedding_dim, "item_embedding")
        # Metadata: the dataset's declared item features.
        vocabularies = roles.vocabularies()
        self.metadata = {
            feature: MaskedMeanEmbedding(
                vocab_sizes[vocabularies[feature]],
                hp.feature_embedding_dim,
                vocabularies[feature],
                name=f"{vocabularies[feature]}_embedding",
            )
            for feature in map(F.tokens_feature, roles.item_text + roles.item_multivalued)
        }
        for column in roles.item_categorical:
            self.metadata[F.index_feature(column)] = id_embedding(
                vocab_sizes, column, attribute_dim(vocab_sizes[column], hp), f"{column}_embedding"
            )
        self.numeric = tuple(F.z_feature(column) for column in roles.item_numeric)
        self.project = {m: tf.keras.layers.Dense(hp.fusion_dim, activation="relu", name=f"{m}_projection") for m in self.modalities}
        self.gate = tf.keras.layers.Dense(1, name="modality_gate")
        if hp.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {hp.fusion!r}")
        self.cross_modal = None
        if hp.fusion == "attention":  # modality tokens read each other before the gate weighs them
            self.modality_type = tf.keras.layers.Embedding(len(self.modalities), hp.fusion_dim, name="modality_type")
            self.cross_modal = tf.keras.layers.MultiHeadAttention(2, max(hp.fusion_dim // 2, 1), name="cross_modal_attention")
            self.cross_modal_norm = tf.keras.layers.LayerNormalization(name="cross_modal_norm")
        self.profile_modalities = profile_modalities(self.content_dims, hp, fine_tuned_text=text_encoder is not None)
        self.shared_content = shared_content if self.profile_modalities else None
        similarity_dim = hp.content_similarity_dim if self.shared_content is not None else 0
        self.mlp = _mlp(hp, "candidate_mlp", hp.embedding_dim - similarity_dim)

    def _modalities(self, inputs: dict, training) -> tuple[tf.Tensor, tf.Tensor]:
        """-> projections [batch, M, fusion_dim] and availability [batch, M] (1 = present)."""
        item_index = inputs[F.ITEM_INDEX]
        metadata = [embedding(inputs[feature]) for feature, embedding in self.metadata.items()]
        metadata += [tf.expand_dims(inputs[feature], -1) for feature in self.numeric]
        if not metadata:  # no item metadata at all: a constant the gate can learn to weigh
            metadata.append(tf.ones_like(tf.cast(item_index, tf.float32))[:, tf.newaxis])
        raw = {"id": self.item(item_index), "metadata": tf.concat(metadata, axis=-1)}
        available = {"id": tf.cast(item_index < self.oov_item, tf.float32), "metadata": tf.ones_like(tf.cast(item_index, tf.float32))}
        for modality in self.content_dims:
            if modality == "text" and self.text_encoder is not None:
                text = tf.reshape(inputs[F.ITEM_TEXT], [-1])
                unique, position = tf.unique(text)  # a batch repeats popular items: encode each text once
                raw[modality] = tf.gather(self.text_encoder(unique), position)
                available[modality] = tf.cast(tf.strings.length(tf.strings.strip(text)) > 0, tf.float32)
                continue
            embedding = tf.cast(inputs[F.CONTENT_EMBEDDINGS[modality]], tf.float32)
            raw[modality] = embedding
            available[modality] = tf.cast(tf.reduce_sum(tf.abs(embedding), axis=-1) > 0, tf.float32)
        vectors = tf.stack([self.project[m](raw[m]) for m in self.modalities], axis=1)
        present = tf.stack([available[m] for m in self.modalities], axis=1) * self.enabled
        if training and self.modality_dropout > 0:
            keep = tf.cast(tf.random.uniform(tf.shape(present), seed=self.seed) >= self.modality_dropout, tf.float32)
            always = tf.constant([[float(m == "metadata") for m in self.modalities]])  # metadata is never hidden
            present = present * tf.maximum(keep, always)
        return vectors, present

    def _gated(self, inputs: dict, training) -> tuple[tf.Tensor, tf.Tensor]:
        vectors, present = self._modalities(inputs, training)
        if self.cross_modal is not None:
            tokens = vectors + self.modality_type(tf.range(len(self.modalities)))[tf.newaxis]
            visible = tf.logical_and(
                present[:, :, tf.newaxis] > 0, present[:, tf.newaxis, :] > 0
            )  # missing modalities neither read nor are read
            vectors = (
                self.cross_modal_norm(tokens + self.cross_modal(tokens, tokens, attention_mask=visible, training=training))
                * present[..., tf.newaxis]
            )
        logits = tf.squeeze(self.gate(vectors), -1) + (1.0 - present) * -1e9
        # "* present": an item with no usable modality (e.g. unseen, in an ID-only
        # tower) gets all-zero weights, not a uniform mix of unused inputs.
        return vectors, tf.nn.softmax(logits, axis=-1) * present

    def modality_weights(self, inputs: dict, training=None) -> tf.Tensor:
        """Gate weights over the available modalities [batch, M] (order: self.modalities); explains an item's embedding."""
        return self._gated(inputs, training)[1]

    def call(self, inputs: dict, training=None) -> tf.Tensor:
        vectors, weights = self._gated(inputs, training)
        outputs = [self.mlp(tf.reduce_sum(vectors * weights[..., tf.newaxis], axis=1))]
        if self.shared_content is not None:
            profile = content_profile([inputs[F.CONTENT_EMBEDDINGS[m]] for m in self.profile_modalities])
            outputs.append(self.shared_content(profile))
        return _output(self.hp, outputs)
