"""The ranking model: DCN-v2 over user, item, content and context, two tasks.

It orders the candidates the two towers retrieve. Its inputs are the user and
item ids (own embeddings), the retrieval towers' query and candidate
embeddings and their dot product, the item's pretrained content profile
(towers.content_profile) and the time-of-day/day-of-week context. An item
unseen in training has the OOV id and is ranked from its content-derived
candidate embedding and content profile.

Tasks (tensorflow-recommenders `Ranking` tasks, weights in HParams):
- `engagement`: P(the user interacts with the item | it was retrieved),
  trained on interactions whose item retrieval returned (1) and on retrieved
  items the user did not interact with (0); `recommend` orders the retrieved
  candidates by it;
- `like`: P(rating >= liked_rating | the user interacts), interactions only;
- `predicted_rating`: the rating, interactions only.
TFMA evaluates `like` and `predicted_rating` on the held-out interactions;
`engagement` is measured by the RetrievalEvaluator on the `recommend` lists.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_recommenders as tfrs

from towers import features as F
from towers.hparams import HParams
from towers.towers import IdDropout, id_embedding

ENGAGEMENT_OUTPUT = "engagement"  # probability in [0, 1]
LIKE_OUTPUT = "like"  # probability in [0, 1]
RATING_OUTPUT = "predicted_rating"
ENGAGEMENT_LOGIT = "engagement_logit"
LIKE_LOGIT = "like_logit"
INTERACTION_WEIGHT = "interaction_weight"  # training only: 1 for interactions, 0 for sampled negatives
ENGAGEMENT_WEIGHT = "engagement_weight"  # training only: 0 for interactions retrieval did not retrieve


class RankingModel(tfrs.Model):
    """DCN-v2 ranking with engagement, like and rating heads.

    Args:
      vocab_sizes: vocabulary name -> size (F.VOCAB_USER and F.VOCAB_ITEM used).
      hp: hyperparameters (ranking_* fields, id sizes, id_dropout, seed).
      content_dim: size of F.CONTENT_PROFILE inputs; 0 when the model has no content.

    Call inputs (batch B): F.USER_INDEX, F.ITEM_INDEX int64 [B];
    F.QUERY_EMBEDDING, F.CANDIDATE_EMBEDDING float32 [B, D]; F.TIME_CONTEXT
    [B, 4]; F.CONTENT_PROFILE [B, content_dim] when content_dim > 0, or instead F.CONTENT_PROJECTION
    [B, fusion_dim] (project_content of it).
    Call outputs [B]: ENGAGEMENT_LOGIT, ENGAGEMENT_OUTPUT, LIKE_LOGIT, LIKE_OUTPUT, RATING_OUTPUT.
    """

    def __init__(self, vocab_sizes: dict[str, int], hp: HParams, content_dim: int = 0):
        super().__init__()
        self.hp, self.content_dim = hp, content_dim
        users = vocab_sizes[F.VOCAB_USER]
        self.user_dropout = IdDropout(users, hp.id_dropout, seed=hp.seed)
        # Item ids are dropped in the training data instead (components.ranking_data.ranking_dataset),
        # together with the candidate embedding, as a new item is served.
        self.user_embedding = id_embedding(vocab_sizes, F.VOCAB_USER, hp.id_embedding_dim, "ranking_user_embedding")
        self.item_embedding = id_embedding(vocab_sizes, F.VOCAB_ITEM, hp.id_embedding_dim, "ranking_item_embedding")
        self.content_projection = tf.keras.layers.Dense(hp.fusion_dim, name="ranking_content_projection") if content_dim else None
        projection = hp.ranking_projection_dim or None
        self.cross_layers = [
            tfrs.layers.dcn.Cross(projection_dim=projection, kernel_initializer="glorot_uniform", name=f"cross_{i}")
            for i in range(hp.ranking_cross_layers)
        ]
        self.deep = tf.keras.Sequential(
            [tf.keras.layers.Dense(units, activation="relu") for units in hp.ranking_hidden_units], name="ranking_deep"
        )
        self.engagement_head = tf.keras.layers.Dense(1, name="engagement_head")
        self.like_head = tf.keras.layers.Dense(1, name="like_head")
        self.rating_head = tf.keras.layers.Dense(1, name="rating_head")
        self.engagement_task = tfrs.tasks.Ranking(
            loss=tf.keras.losses.BinaryCrossentropy(from_logits=True),
            metrics=[tf.keras.metrics.AUC(from_logits=True, name="engagement_auc")],
        )
        self.like_task = tfrs.tasks.Ranking(
            loss=tf.keras.losses.BinaryCrossentropy(from_logits=True),
            metrics=[tf.keras.metrics.AUC(from_logits=True, name="like_auc")],
        )
        self.rating_task = tfrs.tasks.Ranking(
            loss=tf.keras.losses.MeanSquaredError(), metrics=[tf.keras.metrics.RootMeanSquaredError(name="rating_rmse")]
        )

    def project_content(self, profile: tf.Tensor) -> tf.Tensor:
        """Content profiles [n, content_dim] -> [n, fusion_dim]: the ranker's first (linear) operation on them, so
        the served catalog stores this instead of the profile (exact; 1,864 -> 64 values per item on tuxpaint)."""
        return self.content_projection(profile)

    def call(self, inputs: dict, training=None) -> dict[str, tf.Tensor]:
        query, candidate = inputs[F.QUERY_EMBEDDING], inputs[F.CANDIDATE_EMBEDDING]
        parts = [
            self.user_embedding(self.user_dropout(inputs[F.USER_INDEX], training=training)),
            self.item_embedding(inputs[F.ITEM_INDEX]),
            query,
            candidate,
            query * candidate,
            tf.reduce_sum(query * candidate, axis=1, keepdims=True),  # the retrieval score
            tf.cast(inputs[F.TIME_CONTEXT], tf.float32),
        ]
        if F.CONTENT_PROJECTION in inputs:  # the served catalog's rows: projected once, when stored (Catalog)
            parts.append(inputs[F.CONTENT_PROJECTION])
        elif self.content_projection is not None:
            parts.append(self.project_content(inputs[F.CONTENT_PROFILE]))
        x0 = tf.concat(parts, axis=1)
        x = x0
        for cross in self.cross_layers:
            x = cross(x0, x)
        hidden = self.deep(x)
        engagement = tf.squeeze(self.engagement_head(hidden), 1)
        like = tf.squeeze(self.like_head(hidden), 1)
        return {
            ENGAGEMENT_LOGIT: engagement,
            ENGAGEMENT_OUTPUT: tf.sigmoid(engagement),
            LIKE_LOGIT: like,
            LIKE_OUTPUT: tf.sigmoid(like),
            RATING_OUTPUT: tf.squeeze(self.rating_head(hidden), 1),
        }

    def compute_loss(self, features: dict, training: bool = False) -> tf.Tensor:
        outputs = self(features, training=training)
        column = lambda tensor: tf.expand_dims(tf.cast(tensor, tf.float32), 1)  # Keras losses reduce the last axis
        interactions = features[INTERACTION_WEIGHT]  # like and rating exist for interactions only
        engagement = self.engagement_task(
            labels=column(features[F.ENGAGED]),
            predictions=column(outputs[ENGAGEMENT_LOGIT]),
            sample_weight=features[ENGAGEMENT_WEIGHT],
            training=training,
        )
        like = self.like_task(
            labels=column(features[F.LIKED]), predictions=column(outputs[LIKE_LOGIT]), sample_weight=interactions, training=training
        )
        rating = self.rating_task(
            labels=column(features[F.RATING]), predictions=column(outputs[RATING_OUTPUT]), sample_weight=interactions, training=training
        )
        hp = self.hp
        return hp.engagement_loss_weight * engagement + hp.like_loss_weight * like + hp.rating_loss_weight * rating


class RetrievalScoreRanker(tf.keras.Model):
    """A ranker with no weights: the retrieval score (query . candidate / temperature) is the engagement and like
    logit; no rating is predicted (NaN). What differentially private training serves instead of a RankingModel
    trained on the events (towers.dp). Same call inputs and outputs as RankingModel."""

    def __init__(self, temperature: float):
        super().__init__(name="retrieval_score_ranker")
        self.temperature = temperature

    def call(self, inputs: dict, training=None) -> dict[str, tf.Tensor]:
        logit = tf.reduce_sum(inputs[F.QUERY_EMBEDDING] * inputs[F.CANDIDATE_EMBEDDING], axis=1) / self.temperature
        return {
            ENGAGEMENT_LOGIT: logit,
            ENGAGEMENT_OUTPUT: tf.sigmoid(logit),
            LIKE_LOGIT: logit,
            LIKE_OUTPUT: tf.sigmoid(logit),
            RATING_OUTPUT: tf.fill(tf.shape(logit), float("nan")),
        }
