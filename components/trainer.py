"""TFX Trainer module: `run_fn` builds datasets, trains the two towers, exports.

Named by dotted path in the pipeline (`components.trainer.run_fn`). The pure
model code lives in towers/; this module only reads artifacts.
"""

from __future__ import annotations

import contextlib
import json
import os
import time

import absl.logging
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from tfx import v1 as tfx
from tfx_bsl.public import tfxio

from components import evaluation as ev
from components import item_graph, ranking_data, slices
from components.content_embedder.embeddings import read_item_embeddings
from towers import contract, exporter, warm_start
from towers import dp as dp_lib
from towers import features as F
from towers.catalog import UNKNOWN_CATEGORY, CatalogTables
from towers.contract import (
    CATALOG_PATH_KEY,
    DP_FILE,
    FEATURE_ROLES_KEY,
    HPARAMS_KEY,
    ITEM_EMBEDDINGS_URI_KEY,
    ITEM_GRAPH_FILE,
    RAW_EXAMPLES_URI_KEY,
    TEXT_ENCODER_KEY,
    TRAINING_COST_FILE,
    WARM_START_DIR,
)
from towers.hparams import CATALOG, HParams
from towers.model import TwoTowerModel, item_sampling_probability
from towers.ranking import ENGAGEMENT_LOGIT, RankingModel, RetrievalScoreRanker
from towers.towers import candidate_inputs, content_profile, profile_modalities

RETRIEVAL_STATE, RANKING_STATE = "retrieval", "ranking"
TRAINED_UNTIL = "trained_until"  # warm_start fact: the latest timestamp the model was trained on
CHOICE_EVENTS = 20_000  # validation events the item-graph weights are chosen on, at most


class EpochTimer(tf.keras.callbacks.Callback):
    """Wall seconds and steps of each training epoch, the validation-loss pass left out (the first epoch includes
    tracing the training step): what a model costs to train, reported in TRAINING_COST_FILE."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []
        self.steps = 0
        self._start: float | None = None
        self._steps = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._steps = time.perf_counter(), 0

    def on_train_batch_end(self, batch, logs=None):
        self._steps += 1

    def on_test_begin(self, logs=None):  # fit's validation pass: the epoch's training is over
        self._close()

    def on_epoch_end(self, epoch, logs=None):
        self._close()

    def _close(self) -> None:
        if self._start is not None:
            self.seconds.append(time.perf_counter() - self._start)
            self.steps, self._start = self._steps, None

    def report(self) -> dict:
        """{"epochs", "steps_per_epoch", "seconds_per_epoch": [...], and over the epochs after the first (tracing left
        out; the first when it is the only one) "mean_seconds_per_epoch" and "ms_per_step"}."""
        later = self.seconds[1:] or self.seconds
        mean = sum(later) / max(len(later), 1)
        return {
            "epochs": len(self.seconds),
            "steps_per_epoch": self.steps,
            "seconds_per_epoch": [round(seconds, 3) for seconds in self.seconds],
            "mean_seconds_per_epoch": round(mean, 3),
            "ms_per_step": round(1000.0 * mean / max(self.steps, 1), 1),
        }


@contextlib.contextmanager
def timed(stages: dict, name: str):
    """Records the wall seconds of the block in stages[name]."""
    started = time.perf_counter()
    yield
    stages[name] = round(time.perf_counter() - started, 2)


def feature_roles(custom_config: dict) -> F.FeatureRoles:
    """The dataset's declared features, from the Trainer's custom_config."""
    return F.FeatureRoles.from_json(custom_config[FEATURE_ROLES_KEY])


def vocab_sizes(tft_output: tft.TFTransformOutput, roles: F.FeatureRoles) -> dict[str, int]:
    """Vocabulary name -> size, for the vocabularies of the features this dataset has."""
    transformed = tft_output.transformed_feature_spec()
    names = {vocab for feature, vocab in roles.vocabularies().items() if feature in transformed}
    return {name: tft_output.vocabulary_size_by_name(name) for name in sorted(names)}


DISTRIBUTIONS = ("auto", "mirrored", "default")


def vocabularies(tft_output: tft.TFTransformOutput, roles: F.FeatureRoles) -> dict[str, list[str]]:
    """Vocabulary name -> its entries in index order, for the vocabularies the models' tables use."""
    return {name: _decode(tft_output.vocabulary_by_name(name)) for name in vocab_sizes(tft_output, roles)}


def warm_start_dir(serving_model_dir: str) -> str:
    """`<Model artifact>/warm_start`, from the artifact's serving model path (fn_args.serving_model_dir or .base_model)."""
    return os.path.join(os.path.dirname(serving_model_dir), WARM_START_DIR)


def base_state(fn_args) -> str | None:
    """The warm-start folder of the Trainer's base model (the last blessed model), or None: train from scratch."""
    if not fn_args.base_model:
        return None
    path = warm_start_dir(fn_args.base_model)
    if not warm_start.exists(os.path.join(path, RETRIEVAL_STATE)):
        absl.logging.warning(
            "base model %s has no warm-start state (trained before incremental training existed): training from scratch", fn_args.base_model
        )
        return None
    return path


def _decode(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else v for v in values]


def item_counts(tft_output: tft.TFTransformOutput) -> dict[str, int]:
    """Training interactions per item id, from the frequency vocabulary Transform wrote."""
    counts = {}
    with tf.io.gfile.GFile(tft_output.vocabulary_file_by_name(F.VOCAB_ITEM_FREQUENCY)) as f:
        for line in f:
            count, item = line.rstrip("\n").split(" ", 1)
            counts[item] = int(count)
    return counts


def content_dims(content: dict[str, dict[str, np.ndarray]]) -> dict[str, int]:
    return {modality: len(next(iter(embeddings.values()))) for modality, embeddings in content.items()}


def embedding_rows(item_ids: list[str], embeddings: dict[str, np.ndarray], dim: int) -> np.ndarray:
    """[len(item_ids), dim] float32: each item's embedding, zeros (= missing modality) where there is none."""
    rows = np.zeros([len(item_ids), dim], np.float32)
    for row, item in enumerate(item_ids):
        if item in embeddings:
            rows[row] = embeddings[item]
    return rows


def content_features(item_ids: list[str], content: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Content embedding features (F.CONTENT_EMBEDDINGS names) for `item_ids`, zeros where missing."""
    dims = content_dims(content)
    return {F.CONTENT_EMBEDDINGS[m]: embedding_rows(item_ids, embeddings, dims[m]) for m, embeddings in content.items()}


def history_content_table(content_by_index: dict[str, np.ndarray], hp: HParams, fine_tuned_text: bool = False) -> np.ndarray | None:
    """[items + OOV, D]: each item's content profile (towers.content_profile over towers.profile_modalities).

    None when the model uses no content modality (e.g. an ID-only ablation) or the catalog has none.
    """
    dims = {m: content_by_index[f].shape[1] for m, f in F.CONTENT_EMBEDDINGS.items() if f in content_by_index}
    modalities = profile_modalities(dims, hp, fine_tuned_text)
    if not modalities:
        return None
    return content_profile([content_by_index[F.CONTENT_EMBEDDINGS[m]] for m in modalities]).numpy()


def catalog_texts(catalog_path: str) -> dict[str, str]:
    """Item id -> the text the text encoder reads, from the raw catalog."""
    spec = {F.ITEM_ID: tf.io.FixedLenFeature([], tf.string), F.ITEM_TEXT: tf.io.FixedLenFeature([], tf.string, default_value="")}
    texts = {}
    for batch in tf.data.TFRecordDataset(tf.io.gfile.glob(catalog_path), compression_type="GZIP").batch(1024):
        parsed = tf.io.parse_example(batch, spec)
        texts.update(zip(_decode(parsed[F.ITEM_ID].numpy()), _decode(parsed[F.ITEM_TEXT].numpy())))
    return texts


def _dataset(
    fn_args, files, tft_output, batch_size: int, shuffle: bool, seed: int, content_by_index=None, after: int | None = None
) -> tf.data.Dataset:
    """Transformed examples; with `content_by_index` (feature -> [items + OOV, ...]), batches get their items' content (embeddings, or text).

    `after`: only the events with a timestamp after it (an incremental run's new data).
    """
    options = tfxio.TensorFlowDatasetOptions(
        batch_size=batch_size, shuffle=shuffle, shuffle_seed=seed, num_epochs=1, drop_final_batch=shuffle and after is None
    )
    dataset = fn_args.data_accessor.tf_dataset_factory(files, options, tft_output.transformed_metadata.schema)
    if after is not None:
        dataset = dataset.unbatch().filter(lambda f: f[F.TIMESTAMP] > after).batch(batch_size, drop_remainder=shuffle)
    if content_by_index:
        tables = {name: tf.constant(rows) for name, rows in content_by_index.items()}
        dataset = dataset.map(lambda f: {**f, **{name: tf.gather(table, f[F.ITEM_INDEX]) for name, table in tables.items()}})
    return dataset


def item_positions(item_vocab: list[str], catalog_index: dict[str, int]) -> np.ndarray:
    """int64 [len(item_vocab) + OOV]: catalog position of each item index (-1: not in the catalog, OOV)."""
    return np.array([catalog_index.get(item, -1) for item in item_vocab] + [-1] * F.NUM_OOV_BUCKETS, np.int64)


def seen_positions(users: np.ndarray, positions: np.ndarray, num_user_rows: int) -> list[list[int]]:
    """Catalog positions each user index interacted with (sorted, unique), from parallel arrays."""
    seen: list[set] = [set() for _ in range(num_user_rows)]
    for user, position in zip(users.tolist(), positions.tolist()):
        if position >= 0:
            seen[user].add(position)
    return [sorted(row) for row in seen]


def training_interactions(dataset: tf.data.Dataset, query_tower) -> dict[str, np.ndarray]:
    """User/item index, context, rating and the query embedding of every training interaction, in order."""
    names = (F.USER_INDEX, F.ITEM_INDEX, F.TIME_CONTEXT, F.RATING, F.TIMESTAMP)
    out: dict[str, list] = {name: [] for name in names + (F.QUERY_EMBEDDING,)}
    for batch in dataset:
        for name in names:
            out[name].append(batch[name].numpy())
        out[F.QUERY_EMBEDDING].append(query_tower(batch).numpy())
    return {name: np.concatenate(values) for name, values in out.items()}


def embed_catalog(
    catalog_path: str,
    tft_layer,
    candidate_tower,
    raw_spec: dict,
    content: dict[str, dict[str, np.ndarray]],
    oov_index: int,
    roles: F.FeatureRoles,
    batch_size: int = 1024,
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Raw catalog TFRecord + content embeddings by item id -> (item ids [N], candidate embeddings [N, dim],
    content-only candidate embeddings [N, dim]: each item as if new, its id replaced by `oov_index`,
    fusion gate weights [N, M] over candidate_tower.modalities: what explains each item's mix)."""
    item_spec = {name: raw_spec[name] for name in roles.candidate_features}
    text_spec = {F.ITEM_TEXT: tf.io.FixedLenFeature([], tf.string, default_value="")} if candidate_tower.text_encoder is not None else {}
    ids, embeddings, content_only, weights = [], [], [], []
    records = tf.data.TFRecordDataset(tf.io.gfile.glob(catalog_path), compression_type="GZIP").batch(batch_size)
    for batch in records:
        raw = tf.io.parse_example(batch, {**item_spec, **text_spec})
        text = {name: raw.pop(name) for name in text_spec}
        batch_ids = _decode(tf.squeeze(raw[F.ITEM_ID], 1).numpy())
        ids.extend(batch_ids)
        inputs = {**tft_layer(raw), **content_features(batch_ids, content), **text}
        embeddings.append(candidate_tower(inputs).numpy())
        weights.append(candidate_tower.modality_weights(inputs).numpy())
        inputs[F.ITEM_INDEX] = tf.fill(tf.shape(inputs[F.ITEM_INDEX]), tf.constant(oov_index, inputs[F.ITEM_INDEX].dtype))
        content_only.append(candidate_tower(inputs).numpy())
    return ids, np.concatenate(embeddings), np.concatenate(content_only), np.concatenate(weights)


def catalog_attributes(catalog_path: str, roles: F.FeatureRoles, catalog_ids: list[str]) -> list | None:
    """Each catalog item's metadata attributes (the values of its multi-valued columns, e.g. genres or a
    category path, then of its categorical columns), in `catalog_ids`' order, for the item graph's knowledge
    edges; None when the dataset declares no such column."""
    columns = roles.item_multivalued + roles.item_categorical
    if not columns:
        return None
    spec = {F.ITEM_ID: tf.io.FixedLenFeature([], tf.string), **{column: tf.io.RaggedFeature(tf.string) for column in columns}}
    by_id = {}
    for batch in tf.data.TFRecordDataset(tf.io.gfile.glob(catalog_path), compression_type="GZIP").batch(4096):
        parsed = tf.io.parse_example(batch, spec)
        values = [parsed[column].to_list() for column in columns]
        by_id.update(
            (item, [v for per_column in row for v in per_column]) for item, *row in zip(_decode(parsed[F.ITEM_ID].numpy()), *values)
        )
    return [by_id.get(item, []) for item in catalog_ids]


def category_ids(attributes: list | None) -> np.ndarray | None:
    """Each item's category id for diversity caps (towers.diversity): its first metadata attribute (catalog_attributes),
    numbered in sorted order; UNKNOWN_CATEGORY for an item without one; None without such columns."""
    if attributes is None:
        return None
    index = {name: i for i, name in enumerate(sorted({values[0] for values in attributes if values}))}
    return np.array([index[values[0]] if values else UNKNOWN_CATEGORY for values in attributes], np.int64)


def distribution_strategy(name: str) -> tf.distribute.Strategy:
    """The tf.distribute strategy for HParams.distribution: "auto" = MirroredStrategy on several GPUs, else the
    default (one device); "mirrored" = MirroredStrategy over every local GPU (or the CPU); "default"."""
    if name not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {name!r}")
    gpus = tf.config.list_logical_devices("GPU")
    if name == "mirrored" or (name == "auto" and len(gpus) > 1):
        strategy = tf.distribute.MirroredStrategy()
        absl.logging.info("training with MirroredStrategy over %d replicas", strategy.num_replicas_in_sync)
        return strategy
    return tf.distribute.get_strategy()


def train(
    fn_args,
    tft_output: tft.TFTransformOutput,
    hp: HParams,
    content: dict[str, dict[str, np.ndarray]],
    base: str | None = None,
    after: int | None = None,
    callbacks: tuple = (),
) -> tuple[TwoTowerModel, dict]:
    """Trains the two-tower model: from scratch, or from `base` (a warm-start folder) on the events after `after` (its data's end).
    `callbacks`: more Keras callbacks for its fit.

    Returns (model, per vocabulary the ids whose rows were kept / new / dropped; empty from scratch).
    """
    roles = feature_roles(fn_args.custom_config)
    item_vocab = _decode(tft_output.vocabulary_by_name(F.VOCAB_ITEM))
    probability = item_sampling_probability(item_vocab, item_counts(tft_output))
    tf.keras.utils.set_random_seed(hp.seed)
    content_by_index = content_features(item_vocab + [""] * F.NUM_OOV_BUCKETS, content)
    fine_tune = hp.fine_tune_text and "text" in content and "text" in hp.item_modalities
    history_content = history_content_table(content_by_index, hp, fine_tuned_text=fine_tune)
    text_encoder = None
    if fine_tune:
        from towers.encoders import registry as encoders

        text_encoder = encoders.load(fn_args.custom_config[TEXT_ENCODER_KEY], trainable=True)
        if not text_encoder.trainable_weights:
            raise ValueError(
                f"the text encoder at {fn_args.custom_config[TEXT_ENCODER_KEY]} exposes no trainable weights, so it cannot be "
                "fine-tuned: re-export it with `mmtower encoders export --force`"
            )
        texts = catalog_texts(fn_args.custom_config[CATALOG_PATH_KEY])
        content_by_index[F.ITEM_TEXT] = np.array([texts.get(item, "") for item in item_vocab] + [""] * F.NUM_OOV_BUCKETS, dtype=object)
        absl.logging.info("fine-tuning the text encoder %s", fn_args.custom_config[TEXT_ENCODER_KEY])
    budget, item_table = None, None
    if hp.dp_epsilon > 0:
        budget, item_table = private_training(fn_args, tft_output, hp, roles, content, content_by_index, fine_tune or base is not None)
    elif hp.negatives == CATALOG:
        if fine_tune:
            raise ValueError(
                "catalog negatives run the item tower over every item per step: drop --fine-tune-text or use in-batch negatives"
            )
        item_table, _ = item_table_of(fn_args, tft_output, roles, content, content_by_index)
    with distribution_strategy(hp.distribution).scope():
        model = TwoTowerModel(
            vocab_sizes(tft_output, roles), probability, hp, content_dims(content), history_content, text_encoder, roles, budget, item_table
        )
        model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate=hp.learning_rate))
    train_ds = _dataset(
        fn_args, fn_args.train_files, tft_output, hp.batch_size, shuffle=True, seed=hp.seed, content_by_index=content_by_index, after=after
    )
    # fn_args.eval_files: the validation split (the pipeline's EvalArgs); the eval split is for the evaluators only
    eval_ds = _dataset(
        fn_args, fn_args.eval_files, tft_output, hp.batch_size, shuffle=False, seed=hp.seed, content_by_index=content_by_index
    )
    report = {}
    if base:
        with distribution_strategy(hp.distribution).scope():
            batch = next(iter(eval_ds))
            model.query_tower(batch), model.candidate_tower(batch)  # creates the variables
            report = warm_start.restore(model, os.path.join(base, RETRIEVAL_STATE), vocabularies(tft_output, roles))
        absl.logging.info("two-tower model warm-started from %s: %s; training on the events after %d", base, report, after)
        if next(iter(train_ds), None) is None:
            absl.logging.warning("no training events after %d (the base model's data): the model keeps the base model's weights", after)
            return model, report
    callbacks = [tf.keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir), *callbacks]
    if hp.early_stopping_patience > 0:
        callbacks.append(
            tf.keras.callbacks.EarlyStopping(monitor="val_loss", patience=hp.early_stopping_patience, restore_best_weights=True)
        )
    model.fit(train_ds, validation_data=eval_ds, epochs=hp.epochs, callbacks=callbacks, verbose=2)
    return model, report


def item_table_of(fn_args, tft_output, roles: F.FeatureRoles, content: dict, content_by_index: dict) -> tuple[dict[str, np.ndarray], int]:
    """Each vocabulary item's candidate-tower inputs by item index, from one pass over the training split
    (towers.dp.item_feature_table) -> (the table, training examples read)."""
    rows = len(_decode(tft_output.vocabulary_by_name(F.VOCAB_ITEM))) + F.NUM_OOV_BUCKETS
    batches = _dataset(fn_args, fn_args.train_files, tft_output, 4096, shuffle=False, seed=0, content_by_index=content_by_index)
    return dp_lib.item_feature_table(batches, candidate_inputs(roles, content_dims(content)), rows)


def private_training(
    fn_args, tft_output, hp: HParams, roles: F.FeatureRoles, content: dict, content_by_index: dict, refused: bool
) -> tuple[dp_lib.Budget, dict[str, np.ndarray]]:
    """DP-SGD's budget for hp.dp_epsilon (the noise for the training's steps) and the item table its negatives are drawn from."""
    if refused:
        raise ValueError(
            "differentially private training starts from scratch with a frozen text encoder: drop --warm-start / --fine-tune-text"
        )
    item_table, examples = item_table_of(fn_args, tft_output, roles, content, content_by_index)
    budget = dp_lib.Budget.plan(hp.dp_epsilon, hp.dp_delta, hp.dp_clip, examples, hp.batch_size, hp.epochs, hp.dp_negatives)
    absl.logging.info("differentially private training: %s", budget)
    return budget, item_table


def train_ranker(
    tft_output: tft.TFTransformOutput,
    hp: HParams,
    train: dict[str, np.ndarray],
    catalog: CatalogTables,
    positions: np.ndarray,
    seen: list[list[int]],
    content_only: np.ndarray,
    base: str | None = None,
    after: int | None = None,
    callbacks: tuple = (),
) -> RankingModel:
    """Trains the ranking model on training interactions + negatives retrieved for them (components.ranking_data).

    `content_only`: the catalog's candidate embeddings without ids (embed_catalog), what the
    ranker sees for an example whose item id is dropped (hp.id_dropout).
    With `base` (a warm-start folder), starts from its ranking model and trains on the interactions after `after`.
    `callbacks`: Keras callbacks for its fit.
    """
    tf.keras.utils.set_random_seed(hp.seed)
    base_vocabs = vocab_sizes(tft_output, F.NO_FEATURES)  # the ranker's tables: user and item ids
    oov_index = base_vocabs[F.VOCAB_ITEM]
    per_position = {F.ITEM_INDEX: catalog.item_index, F.CANDIDATE_EMBEDDING: catalog.embeddings}
    if catalog.content_profile is not None:
        per_position[F.CONTENT_PROFILE] = catalog.content_profile
    with distribution_strategy(hp.distribution).scope():
        ranker = RankingModel(base_vocabs, hp, 0 if catalog.content_profile is None else catalog.content_profile.shape[1])
        ranker.compile(optimizer=tf.keras.optimizers.Adam(learning_rate=hp.learning_rate))
        if base:
            first = {name: train[name][:1] for name in (F.USER_INDEX, F.QUERY_EMBEDDING, F.TIME_CONTEXT)}
            ranker({**first, **{name: values[:1] for name, values in per_position.items()}})  # creates the variables
            report = warm_start.restore(ranker, os.path.join(base, RANKING_STATE), vocabularies(tft_output, F.NO_FEATURES))
            new = train[F.TIMESTAMP] > after
            absl.logging.info("ranking model warm-started from %s: %s; %d interactions after its data", base, report, int(new.sum()))
            if not new.any():
                return ranker
            train, positions = {name: values[new] for name, values in train.items()}, positions[new]
    negatives, retrieved = ranking_data.retrieved_negatives(
        train[F.QUERY_EMBEDDING],
        catalog.embeddings,
        train[F.USER_INDEX],
        positions,
        seen,
        hp.ranking_candidates,
        hp.ranking_negatives,
        np.random.default_rng(hp.seed),
        eligible=catalog.item_index < oov_index,  # items with training interactions
    )
    rows = ranking_data.ranking_rows(
        train[F.USER_INDEX], positions, np.arange(len(positions)), train[F.RATING], negatives, retrieved, hp.liked_rating
    )
    per_row = {F.QUERY_EMBEDDING: train[F.QUERY_EMBEDDING], F.TIME_CONTEXT: train[F.TIME_CONTEXT]}
    dataset = ranking_data.ranking_dataset(
        rows, per_row, per_position, hp.batch_size, hp.seed, new_item=(hp.id_dropout, oov_index, content_only)
    )
    absl.logging.info(
        "ranking model: %d examples (%d interactions, %d of them retrieved in the top %d, %d liked)",
        len(rows[F.ENGAGED]),
        int(rows[F.ENGAGED].sum()),
        int(retrieved.sum()),
        hp.ranking_candidates,
        int(rows[F.LIKED].sum()),
    )
    ranker.fit(dataset, epochs=hp.ranking_epochs, callbacks=list(callbacks), verbose=2)
    return ranker


def catalog_tables(
    catalog_ids: list[str],
    catalog_embeddings: np.ndarray,
    item_vocab: list[str],
    tft_output,
    content,
    hp: HParams,
    fine_tuned_text: bool,
    graph: item_graph.ItemGraph | None = None,
    modality_weights: np.ndarray | None = None,
) -> CatalogTables:
    index = {item: i for i, item in enumerate(item_vocab)}
    return CatalogTables(
        ids=catalog_ids,
        embeddings=catalog_embeddings,
        item_index=np.array([index.get(item, len(item_vocab)) for item in catalog_ids], np.int64),  # unseen -> OOV
        content_profile=history_content_table(content_features(catalog_ids, content), hp, fine_tuned_text) if content else None,
        slices=slices.catalog_slices(catalog_ids, item_counts(tft_output), content),
        graph_neighbours=None if graph is None else graph.neighbours,
        graph_weights=None if graph is None else graph.weights,
        graph_kinds=None if graph is None else graph.kinds,
        oov_item_index=len(item_vocab),
        modality_weights=modality_weights,
    )


def choose_graph_mix(module: exporter.ServingModule, raw_examples_uri: str, catalog_ids: list[str], new_item_ratio: float) -> dict:
    """Sets the served item-graph weights, history length and new-item boost to the best on validation
    Recall@10 among those that give new items at least `new_item_ratio` x warm items' Recall@50
    (item_graph.choose_mix).

    The validation events (at most CHOICE_EVENTS, a seeded sample) are scored as
    the RetrievalEvaluator scores the eval events (every item seen before an
    event excluded); the retrieval and ranking pass runs once, then every
    setting is tried on its outputs. -> what was chosen and tried (for ITEM_GRAPH_FILE).
    """
    split = lambda name: os.path.join(raw_examples_uri, f"Split-{name}")
    train, validation = ev.read_events(split(contract.TRAIN_SPLIT)), ev.read_events(split(contract.VALIDATION_SPLIT))
    records = ev.read_serialized(split(contract.VALIDATION_SPLIT))
    ids = np.array([item.encode() for item in catalog_ids], dtype=object)
    index = ev.catalog_index(ids)
    seen = ev.SeenItems(index, train, validation).for_events(validation)
    truth = ev.positions(validation.items, index)
    if len(records) > CHOICE_EVENTS:  # a seeded sample keeps the choice quick on large datasets
        keep = np.sort(np.random.default_rng(0).choice(len(records), CHOICE_EVENTS, replace=False))
        records, seen, truth = [records[i] for i in keep], [seen[i] for i in keep], truth[keep]
    if not records:
        return {"chosen": None, "reason": "no validation events"}
    lengths = list(item_graph.HISTORY_GRID)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)], autograph=False)
    def parts(examples):
        raw, seen_items = module.parse_eval(examples)
        out = module.recommend_parts(raw, tf.ones_like(tf.squeeze(raw[F.ITEM_ID], 1), tf.bool), seen_items, lengths)
        excluded = out["retrieval_scores"] <= tf.float32.min
        return out["positions"], tf.where(excluded, -np.inf, out["ranked"][ENGAGEMENT_LOGIT]), out["is_new"], tf.stack(out["graph"])

    outputs = []
    for start in range(0, len(records), 256):
        batch = [ev.with_seen_items(r, ids[seen[start + i]].tolist()) for i, r in enumerate(records[start : start + 256])]
        outputs.append([tensor.numpy() for tensor in parts(tf.constant(batch))])
    positions, logits, is_new = (np.concatenate([o[i] for o in outputs]) for i in range(3))
    graphs = np.concatenate([o[3] for o in outputs], axis=1)  # [lengths, V, C, kinds]
    truth_is_new = module.catalog_item_index.numpy()[np.maximum(truth, 0)] == int(module.oov_item_index.numpy())
    best, tried = item_graph.choose_mix(
        logits, dict(zip(lengths, graphs)), positions, is_new, truth, truth_is_new & (truth >= 0), module.num_graph_kinds, new_item_ratio
    )
    module.graph_mix.assign(np.array(best["mix"], np.float32))
    module.graph_history.assign(best["history_length"])
    module.new_item_boost.assign(best["new_item_boost"])
    alone = next(t for t in tried if not any(t["mix"]) and t["new_item_boost"] == 0)
    absl.logging.info("recommend on %d validation events: chose %s; the ranker alone: %s", len(truth), best, alone)
    named = lambda t: {**t, "mix": dict(zip(item_graph.KINDS, t["mix"]))}
    return {
        "chosen": named(best),
        "ranker_alone": named(alone),
        "validation_events": len(truth),
        "new_item_events": int(truth_is_new.sum()),
        "new_item_recall_ratio": new_item_ratio,
        "tried": [named(t) for t in tried],
    }


def _write_json(path: str, value) -> None:
    with tf.io.gfile.GFile(path, "w") as f:
        json.dump(value, f, indent=1)


def run_fn(fn_args: tfx.components.FnArgs) -> None:
    """TFX Trainer entry point: train retrieval, then ranking; export the serving SavedModel.

    With a base model (the pipeline's warm start: the last blessed model), both
    models start from its weights (rows remapped to the new vocabularies) and
    train on the events after its data. Either way the models' weights are
    saved beside the export, for the next run to start from.
    """
    hp = HParams.from_json(fn_args.custom_config.get(HPARAMS_KEY))
    if hp.dp_epsilon > 0:
        hp = dp_lib.private(hp)
    roles = feature_roles(fn_args.custom_config)
    absl.logging.info("hyperparameters: %s; features: %s", hp, roles)
    tft_output = tft.TFTransformOutput(fn_args.transform_output)
    item_vocab = _decode(tft_output.vocabulary_by_name(F.VOCAB_ITEM))
    content = read_item_embeddings(fn_args.custom_config[ITEM_EMBEDDINGS_URI_KEY])
    for modality, embeddings in content.items():
        absl.logging.info("%s embeddings for %d items", modality, len(embeddings))
    base = base_state(fn_args)
    after = warm_start.facts(os.path.join(base, RETRIEVAL_STATE))[TRAINED_UNTIL] if base else None  # the base model's data ends here
    retrieval_timer, ranking_timer, stages = EpochTimer(), EpochTimer(), {}
    with timed(stages, "two_towers"):
        model, warm_start_report = train(fn_args, tft_output, hp, content, base, after, callbacks=(retrieval_timer,))

    tft_layer = tft_output.transform_features_layer()
    raw_spec = tft_output.raw_feature_spec()
    catalog_ids, catalog_embeddings, content_only, modality_weights = embed_catalog(
        fn_args.custom_config[CATALOG_PATH_KEY], tft_layer, model.candidate_tower, raw_spec, content, len(item_vocab), roles
    )
    fine_tuned_text = model.candidate_tower.text_encoder is not None
    num_user_rows = tft_output.vocabulary_size_by_name(F.VOCAB_USER) + F.NUM_OOV_BUCKETS
    train_data = training_interactions(
        _dataset(fn_args, fn_args.train_files, tft_output, 4096, shuffle=False, seed=hp.seed), model.query_tower
    )
    catalog_index = {item: i for i, item in enumerate(catalog_ids)}
    positions = item_positions(item_vocab, catalog_index)[train_data[F.ITEM_INDEX]]
    graph = None
    attributes = catalog_attributes(fn_args.custom_config[CATALOG_PATH_KEY], roles, catalog_ids)
    if hp.item_graph:
        content_rows = item_graph.item_content(len(catalog_ids), {item.encode(): i for item, i in catalog_index.items()}, content)
        with timed(stages, "item_graph"):
            graph = item_graph.build(train_data[F.USER_INDEX], positions, len(catalog_ids), content_rows, attributes)
        absl.logging.info("item graph: %s edges", graph.edge_counts())
    catalog = catalog_tables(catalog_ids, catalog_embeddings, item_vocab, tft_output, content, hp, fine_tuned_text, graph, modality_weights)
    catalog.categories = category_ids(attributes)
    seen = seen_positions(train_data[F.USER_INDEX], positions, num_user_rows)
    if model.dp is None:
        with timed(stages, "ranker"):
            ranker = train_ranker(tft_output, hp, train_data, catalog, positions, seen, content_only, base, after, (ranking_timer,))
    else:  # a ranker trained on the events would not be covered by the budget
        ranker = RetrievalScoreRanker(hp.temperature)
    activity = slices.user_activity(np.bincount(train_data[F.USER_INDEX], minlength=num_user_rows).tolist())

    module = exporter.ServingModule(
        exporter.TrainedModels(tft_layer, model.query_tower, model.candidate_tower, ranker),
        exporter.ModelInputs(
            raw_spec,
            roles,
            content_dims(content),
            profile_modalities=profile_modalities(content_dims(content), hp, fine_tuned_text) if content else (),
        ),
        catalog,
        exporter.UserTables(seen_positions=seen, activity=activity),
        exporter.ServingOptions(
            k=hp.top_k,
            ranking_candidates=hp.ranking_candidates,
            liked_rating=hp.liked_rating,
            index=hp.retrieval_index,
            new_item_candidates=hp.new_item_candidates,
            catalog_precision=hp.catalog_precision,
        ),
    )
    model_dir = os.path.dirname(os.path.normpath(fn_args.serving_model_dir))  # the Model artifact: files beside Format-Serving
    tf.io.gfile.makedirs(model_dir)
    if fn_args.custom_config.get(RAW_EXAMPLES_URI_KEY):
        with timed(stages, "graph_mix_choice"):
            choice = choose_graph_mix(module, fn_args.custom_config[RAW_EXAMPLES_URI_KEY], catalog_ids, hp.new_item_recall_ratio)
        _write_json(os.path.join(model_dir, ITEM_GRAPH_FILE), {"edges": graph.edge_counts() if graph else {}, **choice})
    with timed(stages, "export"):
        exporter.export(module, fn_args.serving_model_dir)
    cost = {"two_towers": retrieval_timer.report(), "ranker": ranking_timer.report(), "stage_seconds": stages}
    _write_json(os.path.join(model_dir, TRAINING_COST_FILE), cost)
    absl.logging.info("training cost: %s", cost)
    if model.dp is not None:
        _write_json(os.path.join(model_dir, DP_FILE), model.dp.to_dict())
    facts = {
        TRAINED_UNTIL: int(train_data[F.TIMESTAMP].max()),
        "warm_started_from": fn_args.base_model if base else None,
        "events_trained_on": int((train_data[F.TIMESTAMP] > after).sum()) if base else len(train_data[F.TIMESTAMP]),
        "warm_start": warm_start_report,
    }
    state, vocabs = warm_start_dir(fn_args.serving_model_dir), vocabularies(tft_output, roles)
    warm_start.save(model, vocabs, os.path.join(state, RETRIEVAL_STATE), **facts)
    warm_start.save(ranker, vocabs, os.path.join(state, RANKING_STATE), **facts)
    absl.logging.info("warm-start state for the next run: %s (%s)", state, facts)
    absl.logging.info(
        "exported %d catalog items to %s (%s retrieval), with the ranker and the item encoder beside it",
        len(catalog_ids),
        fn_args.serving_model_dir,
        hp.retrieval_index,
    )
