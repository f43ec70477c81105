"""Every feature and vocabulary name, declared once.

Raw names are the columns the dataset builders write and the curated schema
declares; transformed names are what `preprocessing_fn` emits and the towers,
exporter and evaluation read.
"""

# Raw features (tf.Example keys written by mmdata/, declared in schemas/).
USER_ID = "user_id"
ITEM_ID = "item_id"
RATING = "rating"
TIMESTAMP = "timestamp"
AGE = "age"
GENDER = "gender"
OCCUPATION = "occupation"
ZIP_CODE = "zip_code"
TITLE = "title"
YEAR = "year"
GENRES = "genres"
ITEM_TEXT = "item_text"  # catalog only: the text the content encoder reads
IMAGE = "image"  # catalog only: encoded image bytes (PNG, JPEG, ...), optional
AUDIO = "audio"  # catalog only: encoded sound bytes (WAV, OGG, FLAC, MP3), optional
HISTORY = "history"  # the user's latest item ids strictly before this event, oldest first
# Evaluation only (added to eval examples by the RetrievalEvaluator, never in the data): every item the
# user had seen before the event (components.evaluation.SeenItems); the `evaluate*` signatures exclude them.
SEEN_ITEMS = "seen_items"

# What a query (user at a time) and a candidate (item) can be made of. A
# dataset's schema declares the subset it has: user_id, timestamp, history and
# item_id always; user attributes (age, gender, occupation, zip code) and item
# metadata (title, year, genres) only where the source has them.
QUERY_FEATURES = (USER_ID, TIMESTAMP, AGE, GENDER, OCCUPATION, ZIP_CODE, HISTORY)
ITEM_FEATURES = (ITEM_ID, TITLE, YEAR, GENRES)
CATALOG_FEATURES = ITEM_FEATURES + (ITEM_TEXT, IMAGE, AUDIO)
# Scalar string / integer raw features (everything else is a float or a list).
RAW_STRING_FEATURES = (USER_ID, ITEM_ID, GENDER, OCCUPATION, ZIP_CODE, TITLE, ITEM_TEXT)
RAW_INT_FEATURES = (TIMESTAMP, AGE, YEAR)
RAW_FLOAT_FEATURES = (RATING,)
RAW_LIST_FEATURES = (GENRES, HISTORY)
RAW_BYTES_FEATURES = (IMAGE, AUDIO)

# Content embeddings (components/content_embedder output, one record per item).
TEXT_EMBEDDING = "text_embedding"
IMAGE_EMBEDDING = "image_embedding"
AUDIO_EMBEDDING = "audio_embedding"
# Content modality (encoder name) -> its embedding feature.
CONTENT_EMBEDDINGS = {"text": TEXT_EMBEDDING, "image": IMAGE_EMBEDDING, "audio": AUDIO_EMBEDDING}

# Transformed features (outputs of components.preprocessing.preprocessing_fn).
USER_INDEX = "user_index"
ITEM_INDEX = "item_index"
GENDER_INDEX = "gender_index"
OCCUPATION_INDEX = "occupation_index"
ZIP_PREFIX_INDEX = "zip_prefix_index"
AGE_Z = "age_z"
TIME_CONTEXT = "time_context"  # [sin, cos] hour of day, [sin, cos] day of week
RECENCY_BUCKET = "recency_bucket"  # training-time quantile bucket of the timestamp
TITLE_TOKENS = "title_tokens"  # padded token ids, 0 = padding
GENRE_TOKENS = "genre_tokens"  # padded genre ids, 0 = padding
YEAR_Z = "year_z"
HISTORY_TOKENS = "history_tokens"  # padded item ids of HISTORY, 0 = padding

TIME_CONTEXT_DIM = 4
RECENCY_BUCKETS = 10  # later times fall in the last bucket: "now" = the end of training
TITLE_MAX_TOKENS = 12
MAX_GENRES = 6
HISTORY_LENGTH = 20
ZIP_PREFIX_LENGTH = 3
NUM_OOV_BUCKETS = 1

# Ranking model inputs besides transformed features: the retrieval towers'
# outputs and the item's pretrained content profile (towers.content_profile).
QUERY_EMBEDDING = "query_embedding"
CANDIDATE_EMBEDDING = "candidate_embedding"
CONTENT_PROFILE = "content_profile"
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
VOCAB_GENDER = "gender"
VOCAB_OCCUPATION = "occupation"
VOCAB_ZIP_PREFIX = "zip_prefix"
VOCAB_TITLE_TOKENS = "title_tokens"
VOCAB_GENRES = "genres"

# Categorical id features and the vocabulary each one is looked up in.
ID_FEATURE_VOCABS = {
    USER_INDEX: VOCAB_USER,
    ITEM_INDEX: VOCAB_ITEM,
    GENDER_INDEX: VOCAB_GENDER,
    OCCUPATION_INDEX: VOCAB_OCCUPATION,
    ZIP_PREFIX_INDEX: VOCAB_ZIP_PREFIX,
}
# Padded token-list features and their vocabularies.
TOKEN_FEATURE_VOCABS = {
    TITLE_TOKENS: VOCAB_TITLE_TOKENS,
    GENRE_TOKENS: VOCAB_GENRES,
    HISTORY_TOKENS: VOCAB_ITEM,
}
