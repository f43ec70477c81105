"""TFX Trainer module: `run_fn` builds datasets, trains the two towers, exports.

Named by dotted path in the pipeline (`components.trainer.run_fn`). The pure
model code lives in towers/; this module only reads artifacts.
"""
from __future__ import annotations

import os

import absl.logging
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from tfx import v1 as tfx
from tfx_bsl.public import tfxio

from components.content_trainer import ITEM_EMBEDDINGS_URI
from towers import exporter
from towers import features as F
from towers.hparams import HParams
from towers.model import TwoTowerModel, item_sampling_probability

HPARAMS_KEY = "hparams"
CATALOG_KEY = "catalog_path"
_VOCABS = sorted(set(F.ID_FEATURE_VOCABS.values()) | set(F.TOKEN_FEATURE_VOCABS.values()))


def vocab_sizes(tft_output: tft.TFTransformOutput) -> dict[str, int]:
    return {name: tft_output.vocabulary_size_by_name(name) for name in _VOCABS}


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


def read_item_embeddings(uri: str) -> dict[str, np.ndarray]:
    """item id -> text embedding, from the ContentEmbedder output folder (items with text only)."""
    files = tf.io.gfile.glob(os.path.join(uri, "Split-*", "*"))
    spec = {F.ITEM_ID: tf.io.FixedLenFeature([], tf.string), F.TEXT_EMBEDDING: tf.io.RaggedFeature(tf.float32)}
    out = {}
    for batch in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(1024):
        parsed = tf.io.parse_example(batch, spec)
        for item, vector in zip(_decode(parsed[F.ITEM_ID].numpy()), parsed[F.TEXT_EMBEDDING].to_list()):
            if vector:  # items whose text could not be encoded have none
                out[item] = np.asarray(vector, np.float32)
    return out


def embedding_rows(item_ids: list[str], embeddings: dict[str, np.ndarray], dim: int) -> np.ndarray:
    """[len(item_ids), dim] float32: each item's embedding, zeros (= missing modality) where there is none."""
    rows = np.zeros([len(item_ids), dim], np.float32)
    for row, item in enumerate(item_ids):
        if item in embeddings:
            rows[row] = embeddings[item]
    return rows


def _dataset(fn_args, files, tft_output, batch_size: int, shuffle: bool, seed: int, text_by_index=None) -> tf.data.Dataset:
    """Transformed examples; with `text_by_index` [items + OOV, dim], each batch gets its items' text embeddings."""
    options = tfxio.TensorFlowDatasetOptions(batch_size=batch_size, shuffle=shuffle, shuffle_seed=seed, num_epochs=1, drop_final_batch=shuffle)
    dataset = fn_args.data_accessor.tf_dataset_factory(files, options, tft_output.transformed_metadata.schema)
    if text_by_index is not None:
        table = tf.constant(text_by_index)
        dataset = dataset.map(lambda f: {**f, F.TEXT_EMBEDDING: tf.gather(table, f[F.ITEM_INDEX])})
    return dataset


def seen_positions(dataset: tf.data.Dataset, num_user_rows: int, item_vocab: list[str], catalog_index: dict[str, int]) -> list[list[int]]:
    """Catalog positions each user index interacted with in `dataset` (sorted, unique)."""
    item_to_position = np.array([catalog_index.get(item, -1) for item in item_vocab] + [-1] * F.NUM_OOV_BUCKETS)
    seen: list[set] = [set() for _ in range(num_user_rows)]
    for batch in dataset:
        for user, item in zip(batch[F.USER_INDEX].numpy(), batch[F.ITEM_INDEX].numpy()):
            position = item_to_position[item]
            if position >= 0:
                seen[user].add(int(position))
    return [sorted(row) for row in seen]


def embed_catalog(catalog_path: str, tft_layer, candidate_tower, raw_spec: dict, text: dict[str, np.ndarray], text_dim: int, batch_size: int = 1024) -> tuple[list[str], np.ndarray]:
    """Raw catalog TFRecord + text embeddings by item id -> (item ids [N], candidate embeddings [N, dim])."""
    item_spec = {name: raw_spec[name] for name in F.ITEM_FEATURES}
    ids, embeddings = [], []
    records = tf.data.TFRecordDataset(tf.io.gfile.glob(catalog_path), compression_type="GZIP").batch(batch_size)
    for batch in records:
        raw = tf.io.parse_example(batch, item_spec)
        batch_ids = _decode(tf.squeeze(raw[F.ITEM_ID], 1).numpy())
        features = {**tft_layer(raw), F.TEXT_EMBEDDING: embedding_rows(batch_ids, text, text_dim)}
        ids.extend(batch_ids)
        embeddings.append(candidate_tower(features).numpy())
    return ids, np.concatenate(embeddings)


def train(fn_args, tft_output: tft.TFTransformOutput, hp: HParams, text_by_index: np.ndarray) -> TwoTowerModel:
    item_vocab = _decode(tft_output.vocabulary_by_name(F.VOCAB_ITEM))
    probability = item_sampling_probability(item_vocab, item_counts(tft_output))
    tf.keras.utils.set_random_seed(hp.seed)
    model = TwoTowerModel(vocab_sizes(tft_output), probability, hp)
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate=hp.learning_rate))
    train_ds = _dataset(fn_args, fn_args.train_files, tft_output, hp.batch_size, shuffle=True, seed=hp.seed, text_by_index=text_by_index)
    eval_ds = _dataset(fn_args, fn_args.eval_files, tft_output, hp.batch_size, shuffle=False, seed=hp.seed, text_by_index=text_by_index)
    tensorboard = tf.keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir)
    model.fit(train_ds, validation_data=eval_ds, epochs=hp.epochs, callbacks=[tensorboard], verbose=2)
    return model


def run_fn(fn_args: tfx.components.FnArgs) -> None:
    """TFX Trainer entry point: train, then export the retrieval SavedModel."""
    hp = HParams.from_json(fn_args.custom_config.get(HPARAMS_KEY))
    absl.logging.info("hyperparameters: %s", hp)
    tft_output = tft.TFTransformOutput(fn_args.transform_output)
    item_vocab = _decode(tft_output.vocabulary_by_name(F.VOCAB_ITEM))
    text = read_item_embeddings(fn_args.custom_config[ITEM_EMBEDDINGS_URI])
    text_dim = len(next(iter(text.values())))
    absl.logging.info("text embeddings for %d items (dim %d)", len(text), text_dim)
    text_by_index = embedding_rows(item_vocab + [""] * F.NUM_OOV_BUCKETS, text, text_dim)
    model = train(fn_args, tft_output, hp, text_by_index)

    tft_layer = tft_output.transform_features_layer()
    raw_spec = tft_output.raw_feature_spec()
    catalog_ids, catalog_embeddings = embed_catalog(fn_args.custom_config[CATALOG_KEY], tft_layer, model.candidate_tower, raw_spec, text, text_dim)
    num_user_rows = tft_output.vocabulary_size_by_name(F.VOCAB_USER) + F.NUM_OOV_BUCKETS
    train_ds = _dataset(fn_args, fn_args.train_files, tft_output, 4096, shuffle=False, seed=hp.seed)
    seen = seen_positions(train_ds, num_user_rows, item_vocab, {item: i for i, item in enumerate(catalog_ids)})

    module = exporter.RetrievalModule(tft_layer, model.query_tower, model.candidate_tower, raw_spec, catalog_ids, catalog_embeddings, seen, hp.top_k, text_dim)
    exporter.export(module, fn_args.serving_model_dir)
    absl.logging.info("exported %d catalog items to %s", len(catalog_ids), fn_args.serving_model_dir)
