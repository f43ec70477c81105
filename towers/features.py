"""Every feature and vocabulary name, declared once.

Raw names are the columns the dataset builders write and the curated schema
declares; transformed names are what `preprocessing_fn` emits and the towers,
exporter and evaluation read.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

# Raw features (tf.Example keys written by mmdata/, declared in schemas/).
USER_ID = "user_id"
ITEM_ID = "item_id"
RATING = "rating"
TIMESTAMP = "timestamp"
ITEM_TEXT = "item_text"  # catalog only: the text the content encoder reads
IMAGE = "image"  # catalog only: encoded image bytes (PNG, JPEG, ...), optional
AUDIO = "audio"  # catalog only: encoded sound bytes (WAV, OGG, FLAC, MP3), optional
VIDEO = "video"  # catalog only: encoded video bytes (MP4, WebM, MKV, ...), optional
HISTORY = "history"  # the user's latest item ids strictly before this event, oldest first
# Evaluation only (added to eval examples by the RetrievalEvaluator, never in the data): every item the
# user had seen before the event (components.evaluation.SeenItems); the `evaluate*` signatures exclude them.
SEEN_ITEMS = "seen_items"

# What every query (user at a time) and every candidate (item) has; the user attributes and item
# metadata a dataset has are declared by its FeatureRoles (below).
QUERY_BASE = (USER_ID, TIMESTAMP, HISTORY)
ITEM_BASE = (ITEM_ID,)
CONTENT_FEATURES = (ITEM_TEXT, IMAGE, AUDIO, VIDEO)  # catalog only: what the content encoders read
RAW_BYTES_FEATURES = (IMAGE, AUDIO, VIDEO)  # kept as bytes (other bytes_list features are UTF-8 text)

# Columns of the built-in datasets (mmdata/movielens.py, mmdata/tuxpaint.py; their roles in mmdata/registry.py).
AGE = "age"
GENDER = "gender"
OCCUPATION = "occupation"
ZIP_CODE = "zip_code"  # its first 3 characters only (coarsened when the dataset is built)
TITLE = "title"
YEAR = "year"
GENRES = "genres"

# Content embeddings (components/content_embedder output, one record per item).
TEXT_EMBEDDING = "text_embedding"
IMAGE_EMBEDDING = "image_embedding"
AUDIO_EMBEDDING = "audio_embedding"
VIDEO_EMBEDDING = "video_embedding"  # pooled frame embeddings (image encoder) + the sound track's (audio encoder)
# Content modality -> its embedding feature.
CONTENT_EMBEDDINGS = {"text": TEXT_EMBEDDING, "image": IMAGE_EMBEDDING, "audio": AUDIO_EMBEDDING, "video": VIDEO_EMBEDDING}

# Transformed features (outputs of components.preprocessing.preprocessing_fn).
# Declared features are named by index_feature / z_feature / tokens_feature (below).
USER_INDEX = "user_index"
ITEM_INDEX = "item_index"
TIME_CONTEXT = "time_context"  # [sin, cos] hour of day, [sin, cos] day of week
RECENCY_BUCKET = "recency_bucket"  # training-time quantile bucket of the timestamp
HISTORY_TOKENS = "history_tokens"  # padded item ids of HISTORY, 0 = padding

TIME_CONTEXT_DIM = 4
RECENCY_BUCKETS = 10  # later times fall in the last bucket: "now" = the end of training
TEXT_MAX_TOKENS = 12  # word tokens kept per text column
MAX_VALUES = 6  # values kept per multi-valued column
HISTORY_LENGTH = 20
NUM_OOV_BUCKETS = 1

# Ranking model inputs besides transformed features: the retrieval towers'
# outputs and the item's pretrained content profile (towers.content_profile).
QUERY_EMBEDDING = "query_embedding"
CANDIDATE_EMBEDDING = "candidate_embedding"
CONTENT_PROFILE = "content_profile"
CONTENT_PROJECTION = "content_projection"  # the ranker's projection of a content profile: what the served catalog stores
# Ranking labels. ENGAGED: 1.0 for an interaction, 0.0 for a retrieved item the
# user did not interact with. LIKED: 1.0 iff an interaction's rating is at least
# HParams.liked_rating (defined for interactions only).
ENGAGED = "engaged"
LIKED = "liked"

# Evaluation slices, computed by the exported model from its training data
# (signature `evaluation_features`), so any eval data can be sliced the same way.
ITEM_POPULARITY = "item_popularity"  # head / torso / tail by training interactions; cold: none
ITEM_FRESHNESS = "item_freshness"  # warm (in training) / cold (content only)
ITEM_MODALITIES = "item_modalities"  # content the item has, e.g. "text+image"
USER_ACTIVITY = "user_activity"  # new / light / medium / heavy by training interactions
EVAL_SLICE_FEATURES = (ITEM_POPULARITY, ITEM_FRESHNESS, ITEM_MODALITIES, USER_ACTIVITY)

# Vocabularies written by Transform; the towers size their embeddings from
# `vocabulary_size_by_name(...)` on these names.
VOCAB_USER = "user_id"
VOCAB_ITEM = "item_id"
VOCAB_ITEM_FREQUENCY = "item_frequency"
# Transformed id / token features always there, and the vocabulary each is looked up in (the declared
# features' are FeatureRoles.vocabularies()).
BASE_VOCABULARIES = {USER_INDEX: VOCAB_USER, ITEM_INDEX: VOCAB_ITEM, HISTORY_TOKENS: VOCAB_ITEM}


# The optional features a dataset declares, by role (its data contract, mmdata/contract.py; the
# built-in datasets declare theirs in mmdata/registry.py). preprocessing_fn, the towers, the
# serving signatures and the clients read the roles instead of a fixed list of names.
@dataclass(frozen=True)
class FeatureRoles:
    """Raw column names by role. user_id, item_id, timestamp, history (and rating, item_text, media) are always implied.

    user_categorical / item_categorical: one string per row -> vocabulary index (+ OOV) -> embedding.
    user_numeric / item_numeric: one number per row (NaN = unknown) -> z-score (unknown -> 0).
    item_text: one string per row -> lower-cased word tokens -> bag of words (all of them also feed
      `item_text`, the content encoder's input; the first is the item's display name).
    item_multivalued: a list of strings per row (genres, tags) -> bag of tokens.
    """

    user_categorical: tuple[str, ...] = ()
    user_numeric: tuple[str, ...] = ()
    item_text: tuple[str, ...] = ()
    item_categorical: tuple[str, ...] = ()
    item_multivalued: tuple[str, ...] = ()
    item_numeric: tuple[str, ...] = ()

    @property
    def user_features(self) -> tuple[str, ...]:
        return self.user_categorical + self.user_numeric

    @property
    def item_features(self) -> tuple[str, ...]:
        return self.item_text + self.item_categorical + self.item_multivalued + self.item_numeric

    @property
    def query_features(self) -> tuple[str, ...]:
        """Raw features of a query: the base ones and the user's declared attributes."""
        return QUERY_BASE + self.user_features

    @property
    def candidate_features(self) -> tuple[str, ...]:
        """Raw features of an item the candidate tower reads besides its content embeddings."""
        return ITEM_BASE + self.item_features

    @property
    def list_features(self) -> tuple[str, ...]:
        """Raw features holding a list of strings per row."""
        return (HISTORY,) + self.item_multivalued

    def vocabularies(self) -> dict[str, str]:
        """Transformed id / token feature -> its vocabulary, for the declared features and the base ones."""
        out = dict(BASE_VOCABULARIES)
        out.update({index_feature(c): c for c in self.user_categorical + self.item_categorical})
        out.update({tokens_feature(c): tokens_feature(c) for c in self.item_text})
        out.update({tokens_feature(c): c for c in self.item_multivalued})
        return out

    @property
    def display_name(self) -> str | None:
        """The column recommend prints for an item (its first text column), if any."""
        return self.item_text[0] if self.item_text else None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FeatureRoles:
        return cls(**{name: tuple(values) for name, values in json.loads(text).items()})


def index_feature(column: str) -> str:
    """Transformed name of a categorical column (its vocabulary is named `column`)."""
    return f"{column}_index"


def z_feature(column: str) -> str:
    """Transformed name of a numeric column."""
    return f"{column}_z"


def tokens_feature(column: str) -> str:
    """Transformed name of a text or multi-valued column (padded token ids; its vocabulary has the same name)."""
    return f"{column}_tokens"


NO_FEATURES = FeatureRoles()  # a dataset of ids and timestamps only
