"""Trainer helpers that read artifacts: item embeddings and their alignment with the item vocabulary."""

import os

import numpy as np
import pytest
import tensorflow as tf

from components import trainer
from components.content_embedder import embeddings
from components.content_embedder.executor import to_example
from towers import features as F

pytestmark = pytest.mark.unit


def test_item_embeddings_round_trip_and_align(tmp_path):
    os.makedirs(tmp_path / "Split-items")
    with tf.io.TFRecordWriter(str(tmp_path / "Split-items" / "part.gz"), options="GZIP") as writer:
        writer.write(to_example("a", {"text": np.array([1.0, 2.0, 3.0])}))
        writer.write(to_example("b", {"audio": np.array([5.0, 6.0])}))  # text could not be encoded
    content = embeddings.read_item_embeddings(str(tmp_path))
    assert sorted(content) == ["audio", "text"]  # no item has an image: the modality is absent
    assert sorted(content["text"]) == ["a"] and trainer.content_dims(content) == {"text": 3, "audio": 2}
    features = trainer.content_features(["b", "a", ""], content)
    np.testing.assert_array_equal(features[F.TEXT_EMBEDDING], [[0, 0, 0], [1, 2, 3], [0, 0, 0]])  # missing -> zeros
    np.testing.assert_array_equal(features[F.AUDIO_EMBEDDING], [[5, 6], [0, 0], [0, 0]])


def test_distribution_strategy_follows_the_hardware():
    on_gpus = len(tf.config.list_logical_devices("GPU")) > 1
    auto = trainer.distribution_strategy("auto")
    assert isinstance(auto, tf.distribute.MirroredStrategy) == on_gpus
    assert trainer.distribution_strategy("default") is tf.distribute.get_strategy()
    mirrored = trainer.distribution_strategy("mirrored")
    assert isinstance(mirrored, tf.distribute.MirroredStrategy) and mirrored.num_replicas_in_sync >= 1
    with mirrored.scope():  # a model built in the scope trains under it
        model = tf.keras.Sequential([tf.keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
    model.fit(np.ones([8, 2], np.float32), np.ones([8, 1], np.float32), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="distribution must be"):
        trainer.distribution_strategy("tpu-pod")


def test_epoch_timer_counts_each_training_epoch_and_leaves_the_validation_pass_out():
    class SlowValidation(tf.keras.callbacks.Callback):  # a validation pass that would dominate the epoch if it were timed
        def on_test_begin(self, logs=None):
            import time

            time.sleep(0.5)

    model = tf.keras.Sequential([tf.keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.ones([10, 3], np.float32), np.ones([10, 1], np.float32)
    timer = trainer.EpochTimer()
    model.fit(x, y, batch_size=4, epochs=3, validation_data=(x, y), callbacks=[timer, SlowValidation()], verbose=0)
    report = timer.report()
    assert report["epochs"] == 3 and report["steps_per_epoch"] == 3  # 10 examples in batches of 4
    assert len(report["seconds_per_epoch"]) == 3 and all(0 <= s < 0.5 for s in report["seconds_per_epoch"][1:])
    assert report["ms_per_step"] > 0
    later = report["seconds_per_epoch"][1:]
    assert report["mean_seconds_per_epoch"] == pytest.approx(sum(later) / 2, abs=2e-3)  # the first epoch (tracing) left out


def test_timed_records_a_stage_in_seconds():
    stages = {}
    with trainer.timed(stages, "export"):
        pass
    assert list(stages) == ["export"] and 0 <= stages["export"] < 1
