"""Hyperparameters: the one typed place the trainer, tests and CLI read them from."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

BRUTE_FORCE = "brute_force"  # retrieval_index: score every item
SCANN = "scann"  # retrieval_index: a ScaNN index in the SavedModel
INDEXES = (BRUTE_FORCE, SCANN)
IN_BATCH = "in_batch"  # negatives: the other examples' items in the batch (logQ-corrected)
CATALOG = "catalog"  # negatives: every item of the training vocabulary (full softmax)
NEGATIVES = (IN_BATCH, CATALOG)


@dataclass(frozen=True)
class HParams:
    """Two-tower retrieval hyperparameters.

    Attributes:
      embedding_dim: size of the shared query/candidate space.
      id_embedding_dim: size of user and item id embeddings.
      feature_embedding_dim: size of small categorical and token embeddings.
      hidden_units: hidden layer widths of each tower's MLP.
      temperature: softmax temperature on the similarities.
      l2_normalize: unit-normalise both towers' outputs (cosine similarity).
      id_dropout: share of user/item ids replaced by the OOV bucket in training,
        so that unseen users get a trained embedding.
      fusion_dim: size each item modality is projected to before gating.
      content_similarity_dim: coordinates of both embeddings given to a shared
        projection of content profiles (the user's recent items' content, the
        candidate's content); 0 turns it off. See towers.shared_content_projection.
      modality_dropout: chance that an item's id or a content modality is
        hidden in training (cold-start robustness).
      item_modalities: which of the item tower's modalities (id, metadata,
        text, image, audio) it uses; the others count as missing (ablations).
        Content modalities the catalog lacks are left out regardless.
      query_features: what the query tower reads: "id" (user id), "attributes"
        (user attributes the dataset has), "time" (time of day/week, recency),
        "history" (recent items' ids and content). ("id",) with item_modalities
        ("id",) and use_logq False is the TFRS tutorials' two-tower.
      history_encoder: how the query tower reads the history besides its mean:
        "mean" (only the mean of the history items' id and content embeddings)
        or "attention" (also SASRec-style causal self-attention over the
        items in order, towers.HistorySequence; the default: best on the
        validation split of bench/quality).
      history_blocks, history_heads: self-attention blocks and heads of "attention".
      fusion: how the item tower fuses its modalities: "gate" (a softmax gate
        over the modality projections) or "attention" (cross-modal attention
        between them, then the gate).
      fine_tune_text: train the text encoder's weights with the item tower
        (the tower then reads each item's text, not its precomputed embedding;
        about 6 s per training step on 2 CPU cores). Off: the encoder is frozen.
      negatives: what the retrieval softmax contrasts each example's item with: "in_batch" (the other
        examples' items, a sample biased towards popular items, corrected by logQ: scales to any catalog)
        or "catalog" (every item of the training vocabulary: the exact softmax; costs one item-tower pass
        over the vocabulary per step, so for catalogs up to ~50k items).
      use_logq: apply sampling-bias (logQ) correction to in-batch negatives.
      learning_rate: Adam learning rate.
      batch_size: training batch size (also the number of in-batch negatives).
      epochs: passes over the training split.
      early_stopping_patience: stop when the loss on the validation split has not
        improved for this many epochs and keep the best epoch's weights (0: off;
        every epoch runs). The eval split is never read in training.
      top_k: number of items the serving signatures return.
      retrieval_index: "brute_force" (score every item; the stock TF Serving
        image serves it) or "scann" (a ScaNN index in the SavedModel; needs the
        ScaNN-enabled image; worth it from about 100k items).
      catalog_precision: how the served recommender stores its candidate embeddings: "float32", or
        "bfloat16" (half the bytes; brute-force scores computed in bfloat16; bench/compression).
      ranking_candidates: items retrieved for the ranking model to order
        (`recommend`); also where the ranker's training negatives come from.
      item_graph: `recommend` adds item-graph scores (co-occurrence and content
        neighbours of the user's last history items, components.item_graph) to
        the ranker's, with weights chosen on the validation split.
      new_item_candidates: `recommend` also ranks the best this many items
        without training interactions by retrieval score (brute-force index).
      new_item_recall_ratio: the weights `recommend` uses (item graph, new-item
        boost) are the best on validation Recall@10 among those giving new items
        at least this share of warm items' Recall@50, with 95% one-sided
        confidence (components.item_graph.choose_mix; 0: no such constraint).
      ranking_negatives: retrieved, not-interacted items sampled per training
        interaction as the ranker's negatives.
      ranking_cross_layers: DCN-v2 cross layers of the ranking model.
      ranking_projection_dim: low-rank size of each cross layer (0: full rank).
      ranking_hidden_units: the ranking model's deep layers after the cross.
      ranking_epochs: passes over the ranking examples.
      liked_rating: an interaction rated at or above it counts as liked.
      engagement_loss_weight, like_loss_weight, rating_loss_weight: the
        ranking tasks' weights.
      dp_epsilon: differentially private training of the two towers (towers.dp): the epsilon that
        DP-SGD's noise is calibrated to, over all epochs (0: off). With it the query tower reads no user
        id, the served ranking is the retrieval score (the ranker is not trained on the events) and there
        is no co-occurrence item graph: what the events teach reaches the model only through the noised steps.
      dp_delta: the delta of (epsilon, delta); 0: 1 / (10 x training events) (towers.dp.default_delta).
      dp_clip: the L2 norm each example's gradient is clipped to.
      dp_negatives: items drawn uniformly from the vocabulary per step for the DP softmax.
      dp_uniformity: weight of the item embeddings' uniformity on the public catalog in DP training
        (TwoTowerModel.public_loss).
      distribution: tf.distribute strategy: "auto" (MirroredStrategy on several
        GPUs, else one device), "mirrored" or "default".
      seed: seed for initialisers and shuffling.
    """

    embedding_dim: int = 64
    id_embedding_dim: int = 32
    feature_embedding_dim: int = 16
    hidden_units: tuple[int, ...] = (128,)
    temperature: float = 0.05
    l2_normalize: bool = True
    id_dropout: float = 0.2
    fusion_dim: int = 64
    content_similarity_dim: int = 32
    modality_dropout: float = 0.2
    item_modalities: tuple[str, ...] = ("id", "metadata", "text", "image", "audio", "video")
    query_features: tuple[str, ...] = ("id", "attributes", "time", "history")
    history_encoder: str = "attention"
    history_blocks: int = 2
    history_heads: int = 2
    fusion: str = "gate"
    fine_tune_text: bool = False
    negatives: str = IN_BATCH
    use_logq: bool = True
    learning_rate: float = 0.003
    batch_size: int = 512
    epochs: int = 3
    early_stopping_patience: int = 0
    top_k: int = 100
    retrieval_index: str = BRUTE_FORCE
    catalog_precision: str = "float32"
    ranking_candidates: int = 100
    ranking_negatives: int = 3
    item_graph: bool = True
    new_item_candidates: int = 20
    new_item_recall_ratio: float = 0.5
    ranking_cross_layers: int = 2
    ranking_projection_dim: int = 32
    ranking_hidden_units: tuple[int, ...] = (64, 32)
    ranking_epochs: int = 2
    liked_rating: float = 4.0
    engagement_loss_weight: float = 1.0
    like_loss_weight: float = 0.5
    rating_loss_weight: float = 0.5
    dp_epsilon: float = 0.0
    dp_delta: float = 0.0
    dp_clip: float = 1.0
    dp_negatives: int = 512
    dp_uniformity: float = 1.0
    distribution: str = "auto"
    seed: int = 42

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str | None) -> HParams:
        if not text:
            return cls()
        values = json.loads(text)
        for key in ("hidden_units", "item_modalities", "query_features", "ranking_hidden_units"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)

    def replace(self, **changes) -> HParams:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})
