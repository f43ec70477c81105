"""TFLite variants of the content encoders: the network in float16, its input preparation in TF as before.

bench/encoder_quantization measured each encoder's network converted by TF's
TFLite converter at float32, float16 and int8 (dynamic range) against the
float32 SavedModel, on the tuxpaint catalog: only the image network gains
(float16: 1.62x the items/s at half the size, cosine >= 0.9999, 99.6% of
each item's 10 content neighbours kept; int8 is slower here, 0.87x, and
moves more); the text network is slower under TFLite at every precision
(0.25-0.40x). So one variant is exported: `image-float16`, a folder with the
network (`encoder.tflite`) and `encoder.json` naming the encoder it derives
from. `LiteEncoder` calls it like the SavedModel: encoded images [batch] ->
[batch, 1280] (decoded and resized by the same TF code).
"""

from __future__ import annotations

import json
import os

import numpy as np
import tensorflow as tf

from towers.encoders import image_efficientnet

LITE_FILE = "encoder.tflite"
SPEC_FILE = "encoder.json"
FLOAT16 = "float16"


def convert(function, module, precision: str) -> bytes:
    """A concrete function of `module` as a TFLite flatbuffer: "float32", "float16" (weights stored in half precision,
    computed in float32) or "int8" (weights in int8, activations quantized on the fly: dynamic range). TF ops
    without a TFLite builtin run through the Flex delegate TF's pip package carries."""
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], module)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    if precision != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if precision == FLOAT16:
        converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


def write_image_float16(folder: str) -> None:
    """Writes the `image-float16` encoder into `folder` (an empty folder; registry.export renames it into place)."""
    with open(os.path.join(folder, LITE_FILE), "wb") as f:
        encoder = image_efficientnet.build()
        f.write(convert(encoder.embed_pixels.get_concrete_function(), encoder, FLOAT16))
    with open(os.path.join(folder, SPEC_FILE), "w") as f:
        json.dump({"encoder": "image", "precision": FLOAT16, "input": "encoded image string [batch]"}, f)


def is_lite(handle: str) -> bool:
    return "://" not in handle and os.path.exists(os.path.join(handle, LITE_FILE))


class Runner:
    """A TFLite model called on numpy batches of any size: one interpreter, resized to each batch's shape (not
    thread-safe: one per thread, as RunInference loads one model per DoFn instance)."""

    def __init__(self, path: str, threads: int | None = None):
        self.interpreter = tf.lite.Interpreter(model_path=path, num_threads=threads or os.cpu_count())
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]["index"]
        self.shape = None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if self.shape != batch.shape:
            self.interpreter.resize_tensor_input(self.input["index"], batch.shape)
            self.interpreter.allocate_tensors()
            self.shape = batch.shape
        self.interpreter.set_tensor(self.input["index"], batch.astype(self.input["dtype"], copy=False))
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output).copy()


class LiteEncoder:
    """A TFLite encoder folder, called like its SavedModel: encoded images [batch] -> float32 tensor [batch, 1280]."""

    def __init__(self, handle: str, threads: int | None = None):
        with open(os.path.join(handle, SPEC_FILE)) as f:
            self.spec = json.load(f)
        if self.spec.get("encoder") != "image":
            raise ValueError(f"{handle}: a TFLite variant of the {self.spec.get('encoder')!r} encoder is not supported (only 'image')")
        self.network = Runner(os.path.join(handle, LITE_FILE), threads)
        self.pixels = tf.function(image_efficientnet.pixels, input_signature=[tf.TensorSpec([None], tf.string)])

    def __call__(self, images) -> tf.Tensor:
        return tf.constant(self.network(self.pixels(tf.convert_to_tensor(images, tf.string)).numpy()))
