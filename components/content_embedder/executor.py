"""ContentEmbedder executor: a Beam pipeline of parse -> RunInference per modality -> tf.Example per item.

A video has no encoder of its own: its sampled frames go through the image
encoder and are mean-pooled over time, its sound track through the audio encoder
(towers/encoders/video.py decodes it); see `video_embedding`.

Content that cannot be encoded (empty text; a missing, truncated or
unsupported image, sound or video) leaves the item with its other modalities; each failure is
listed with item id, modality and reason in `quarantine.jsonl` beside the
output and counted in the artifact's `num_quarantined`; the run goes on.
"""

import json
import os
from collections.abc import Iterable, Sequence
from typing import Any, Optional

import apache_beam as beam
import numpy as np
import tensorflow as tf
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, PredictionResult, RunInference
from tfx.dsl.components.base import base_beam_executor
from tfx.types import artifact_utils

from components.content_embedder import spec
from towers import features as F
from towers.contract import ITEM_EMBEDDINGS_FILE, ITEMS_SPLIT, QUARANTINE_FILE
from towers.encoders import media
from towers.encoders.video import VideoError, decode_video

NUM_QUARANTINED_PROPERTY = "num_quarantined"
TEXT = "text"
IMAGE = "image"
AUDIO = "audio"
VIDEO = "video"
MODALITIES = (TEXT, IMAGE, AUDIO, VIDEO)
# What ParseItem emits for an encoder -> the encoder (modality handle) that reads it: a video's frames and sound track.
VIDEO_FRAMES, VIDEO_SOUND = "video_frames", "video_sound"
ENCODER_OF = {TEXT: TEXT, IMAGE: IMAGE, AUDIO: AUDIO, VIDEO_FRAMES: IMAGE, VIDEO_SOUND: AUDIO}
AUDIO_SAMPLE_RATE = 16000  # what the audio encoder expects
MAX_AUDIO_SECONDS = 30
# Audio container formats accepted (PyAV decodes them from memory), by their magic bytes.
_AUDIO_MAGIC = (b"RIFF", b"OggS", b"fLaC", b"ID3", b"\xff\xfb", b"\xff\xf3")  # WAV, Ogg, FLAC, MP3 (tagged or not)
QUARANTINE_TAG = "quarantine"


class EncoderModelHandler(ModelHandler[str, PredictionResult, Any]):
    """RunInference handler for a TF-Hub-format encoder (string [batch] -> float [batch, dim])."""

    def __init__(self, handle: str, min_batch_size: int = 16, max_batch_size: int = 128):
        self._handle = handle
        self._batching = {"min_batch_size": min_batch_size, "max_batch_size": max_batch_size}

    def load_model(self):
        from towers.encoders import registry

        return registry.load(self._handle)

    def run_inference(self, batch: Sequence[Any], model, inference_args: Optional[dict] = None) -> Iterable[PredictionResult]:
        if isinstance(batch[0], np.ndarray) and len({len(clip) for clip in batch}) > 1:
            outputs = _embed_clips(model, batch)
        else:
            inputs = np.stack(batch) if isinstance(batch[0], np.ndarray) else list(batch)
            outputs = model(tf.constant(inputs)).numpy()
        return [PredictionResult(example, output) for example, output in zip(batch, outputs)]

    def batch_elements_kwargs(self):
        return self._batching

    def share_model_across_processes(self) -> bool:
        return False


def _embed_clips(model, clips: Sequence[np.ndarray]) -> np.ndarray:
    """Waveforms of different lengths -> [len(clips), dim]. Through the encoder's `embed_clips` (zero-padded clips
    and their lengths; the network runs once over all their patches) when it has one; otherwise clip by clip,
    as a TF-Hub audio encoder's [batch, samples] signature needs rows of one length (padding would change them)."""
    embed = getattr(getattr(model, "resolved_object", model), "embed_clips", None)
    if embed is None:
        return np.concatenate([model(tf.constant(clip[None, :])).numpy() for clip in clips])
    lengths = np.array([len(clip) for clip in clips], np.int64)
    padded = np.zeros([len(clips), lengths.max()], np.float32)
    for row, clip in enumerate(clips):
        padded[row, : len(clip)] = clip
    return embed(tf.constant(padded), tf.constant(lengths)).numpy()


def _first_bytes(feature, name: str) -> bytes:
    values = feature[name].bytes_list.value if name in feature else []
    return values[0] if values else b""


def _has(feature, name: str) -> bool:
    """Whether the item carries `name` at all: an absent modality is not an error, an empty or broken one is."""
    return name in feature and len(feature[name].bytes_list.value) > 0


def check_image(data: bytes) -> Optional[str]:
    """None if `data` decodes as an image, else the reason it does not."""
    if not data:
        return "no image"
    if problem := media.image_problem(data):
        return problem
    try:
        tf.io.decode_image(data, channels=3, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as error:
        return f"undecodable image: {error.message.splitlines()[0][:120]}"
    return None


class AudioError(ValueError):
    """Audio bytes that cannot be decoded to a waveform."""


def decode_audio(data: bytes) -> np.ndarray:
    """Encoded WAV/OGG/FLAC/MP3 -> float32 mono waveform at 16 kHz, at most MAX_AUDIO_SECONDS.

    Decoded from memory with PyAV (FFmpeg, as video sound tracks are: towers/encoders/video.py), not through a
    temporary file; the sample rate is checked from the stream header before any sample is decoded, and
    decoding stops after MAX_AUDIO_SECONDS.

    Raises:
      AudioError: empty, unsupported or undecodable (e.g. truncated) audio.
    """
    import io

    import av

    if not data:
        raise AudioError("no audio")
    if problem := media.size_problem(data):
        raise AudioError(problem)
    if not any(data.startswith(magic) for magic in _AUDIO_MAGIC):
        raise AudioError(f"unsupported audio format (starts with {data[:4]!r})")
    chunks, rate = [], None
    try:
        with av.open(io.BytesIO(data), metadata_errors="replace") as container:
            if not container.streams.audio:
                raise AudioError("undecodable audio: no audio stream")
            stream = container.streams.audio[0]
            rate = stream.codec_context.sample_rate
            if problem := media.audio_rate_problem(rate):
                raise AudioError(problem)
            to_float = av.AudioResampler(format="fltp")  # the sample format only: rate and channels kept
            limit, samples = rate * MAX_AUDIO_SECONDS, 0
            for frame in container.decode(stream):
                if problem := media.audio_rate_problem(frame.sample_rate) or (
                    f"sample rate changes mid-stream ({rate} -> {frame.sample_rate} Hz)" if frame.sample_rate != rate else None
                ):
                    raise AudioError(problem)
                for out in to_float.resample(frame):
                    mono = out.to_ndarray().mean(axis=0, dtype=np.float32)
                    chunks.append(mono)
                    samples += mono.size
                if samples >= limit:
                    break
    except AudioError:
        raise
    except av.FFmpegError as error:
        raise AudioError(f"undecodable audio: {(error.strerror or str(error))[:120]}") from None
    except Exception as error:  # whatever else a crafted file makes PyAV raise costs that item only
        raise AudioError(f"undecodable audio: {type(error).__name__}: {str(error)[:120]}") from None
    mono = np.concatenate(chunks)[: rate * MAX_AUDIO_SECONDS] if chunks else np.zeros(0, np.float32)
    if mono.size == 0:
        raise AudioError("empty audio")
    return resample(mono, rate)


def resample(waveform: np.ndarray, rate: int) -> np.ndarray:
    """Mono waveform at `rate` Hz -> AUDIO_SAMPLE_RATE, by polyphase filtering (scipy; ~1 ms for a clip of a few
    seconds, where tfio.audio.resample took ~25 ms and retraced a tf.function for every new clip length)."""
    import math

    from scipy.signal import resample_poly

    if rate == AUDIO_SAMPLE_RATE:
        return waveform.astype(np.float32)
    common = math.gcd(rate, AUDIO_SAMPLE_RATE)
    return resample_poly(waveform, AUDIO_SAMPLE_RATE // common, rate // common).astype(np.float32)


def enabled_modalities(handles: Iterable[str]) -> list[str]:
    """The modalities encoder `handles` (modality -> handle) can embed: each with its own encoder, and
    video wherever the image and audio encoders both are (a "video" handle itself is ignored)."""
    handles = set(handles)
    return [m for m in MODALITIES if (m in handles and m != VIDEO) or (m == VIDEO and {IMAGE, AUDIO} <= handles)]


class ParseItem(beam.DoFn):
    """Serialized catalog tf.Example -> (item_id, content) per modality it has.

    Main output: text (item_id, str); tagged IMAGE: (item_id, encoded bytes),
    only for images that decode; tagged AUDIO: (item_id, 16 kHz waveform); tagged VIDEO_FRAMES:
    (item_id, PNG) per sampled frame and VIDEO_SOUND: (item_id, 16 kHz waveform) unless the clip is silent;
    tagged QUARANTINE: {item_id, modality, reason} for content that is present but empty or broken.
    An item without an image, a sound or a video simply has no such embedding; the item itself is never dropped.
    """

    def __init__(self, modalities: Sequence[str]):
        self.modalities = set(modalities)

    def process(self, serialized: bytes):
        feature = tf.train.Example.FromString(serialized).features.feature
        item_id = media.decode_text(_first_bytes(feature, F.ITEM_ID))[0]
        quarantine = lambda modality, reason: beam.pvalue.TaggedOutput(
            QUARANTINE_TAG, {"item_id": item_id, "modality": modality, "reason": reason}
        )
        if TEXT in self.modalities:
            text, problem = media.decode_text(_first_bytes(feature, F.ITEM_TEXT))
            if problem:  # kept, with the bytes replaced, and reported
                yield quarantine(TEXT, problem)
            if text.strip():
                yield item_id, text.strip()
            else:
                yield quarantine(TEXT, "empty text")
        if IMAGE in self.modalities and _has(feature, F.IMAGE):
            data = _first_bytes(feature, F.IMAGE)
            problem = check_image(data)
            if problem is None:
                yield beam.pvalue.TaggedOutput(IMAGE, (item_id, data))
            else:
                yield quarantine(IMAGE, problem)
        if AUDIO in self.modalities and _has(feature, F.AUDIO):
            try:
                yield beam.pvalue.TaggedOutput(AUDIO, (item_id, decode_audio(_first_bytes(feature, F.AUDIO))))
            except AudioError as error:
                yield quarantine(AUDIO, str(error))
            except Exception as error:  # whatever else one crafted clip raises costs that clip, not the run
                yield quarantine(AUDIO, f"could not decode: {type(error).__name__}: {str(error)[:120]}")
        if VIDEO in self.modalities and _has(feature, F.VIDEO):
            try:
                clip = decode_video(_first_bytes(feature, F.VIDEO))
            except VideoError as error:
                yield quarantine(VIDEO, str(error))
            except Exception as error:  # as for a sound: one clip's failure costs that clip
                yield quarantine(VIDEO, f"could not decode: {type(error).__name__}: {str(error)[:120]}")
            else:
                for frame in clip.frames:
                    yield beam.pvalue.TaggedOutput(VIDEO_FRAMES, (item_id, frame))
                if clip.audio is not None:
                    yield beam.pvalue.TaggedOutput(VIDEO_SOUND, (item_id, clip.audio))


# Waveforms differ in length: batches of clips go through the audio encoder's `embed_clips` (_embed_clips).
_BATCHING = {AUDIO: {"min_batch_size": 1, "max_batch_size": 16}, VIDEO_SOUND: {"min_batch_size": 1, "max_batch_size": 16}}


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(vector)
    return vector / norm if norm > 0 else vector


def video_embedding(frame_embeddings: Sequence[np.ndarray], sound_embedding: Optional[np.ndarray], sound_dim: int) -> np.ndarray:
    """[image dim + audio dim]: the mean of the frames' image embeddings (temporal mean pooling), then the
    sound track's audio embedding (zeros for a silent clip), each half L2-normalised on its own: the two
    encoders' features have unrelated scales, and neither half should outweigh the other in the tower."""
    frames = _unit(np.mean(np.stack(frame_embeddings), axis=0))
    sound = _unit(np.asarray(sound_embedding)) if sound_embedding is not None else np.zeros(sound_dim)
    return np.concatenate([frames, sound]).astype(np.float32)


def to_example(item_id: str, embeddings: dict[str, np.ndarray]) -> bytes:
    """(item_id, modality -> embedding [dim]) -> serialized tf.Example; absent modalities are left out."""
    feature = {F.ITEM_ID: tf.train.Feature(bytes_list=tf.train.BytesList(value=[item_id.encode()]))}
    for modality, embedding in embeddings.items():
        feature[F.CONTENT_EMBEDDINGS[modality]] = tf.train.Feature(float_list=tf.train.FloatList(value=np.asarray(embedding).tolist()))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _merge(item_id: str, grouped: dict) -> bytes:
    embeddings = {modality: values[0] for modality, values in grouped.items() if modality in MODALITIES and values}
    if grouped.get(VIDEO_FRAMES):  # every decoded clip has frames; a silent one has no sound track
        sound = grouped.get(VIDEO_SOUND)
        embeddings[VIDEO] = video_embedding(grouped[VIDEO_FRAMES], sound[0] if sound else None, _audio_dim())
    return to_example(item_id, embeddings)


def _audio_dim() -> int:
    from towers.encoders import registry

    return registry.ENCODERS[AUDIO].dim


def embed_items(records, handles: dict[str, str]):
    """Beam: serialized catalog records -> (serialized embedding examples, quarantine dicts).

    Each modality with a handle is encoded by its own RunInference (a video's frames and sound track by
    the image and audio encoders'); the results are joined per item, so every item is embedded once per modality.
    """
    modalities = enabled_modalities(handles)
    parsed = records | "Parse" >> beam.ParDo(ParseItem(modalities)).with_outputs(
        QUARANTINE_TAG, IMAGE, AUDIO, VIDEO_FRAMES, VIDEO_SOUND, main=TEXT
    )
    streams = [s for s in (TEXT, IMAGE, AUDIO) if s in modalities] + ([VIDEO_FRAMES, VIDEO_SOUND] if VIDEO in modalities else [])
    by_stream = {}
    for stream in streams:
        name = stream.title().replace("_", "")
        by_stream[stream] = (
            parsed[stream]
            | f"Encode{name}"
            >> RunInference(KeyedModelHandler(EncoderModelHandler(handles[ENCODER_OF[stream]], **_BATCHING.get(stream, {}))))
            | f"Unwrap{name}" >> beam.MapTuple(lambda item_id, result: (item_id, result.inference))
        )
    embedded = by_stream | "JoinModalities" >> beam.CoGroupByKey() | "ToExample" >> beam.MapTuple(_merge)
    return embedded, parsed[QUARANTINE_TAG]


def write_outputs(records, handles: dict[str, str], uri: str) -> None:
    """Embeds a PCollection of serialized catalog tf.Examples and writes the component's output layout under `uri`:
    Split-items/ (one record per item: id + one embedding per modality it has) and the quarantine file.
    Video is embedded whenever the image and audio encoders are given (enabled_modalities)."""
    embedded, quarantined = embed_items(records, {m: handles[m] for m in MODALITIES if m in handles})
    out = os.path.join(uri, f"Split-{ITEMS_SPLIT}", ITEM_EMBEDDINGS_FILE)
    _ = embedded | "Write" >> beam.io.WriteToTFRecord(out, file_name_suffix=".gz")
    _ = (
        quarantined
        | "QuarantineJson" >> beam.Map(json.dumps)
        | "WriteQuarantine" >> beam.io.WriteToText(os.path.join(uri, QUARANTINE_FILE), shard_name_template="")
    )


class Executor(base_beam_executor.BaseBeamExecutor):
    def Do(self, input_dict: dict, output_dict: dict, exec_properties: dict) -> None:
        handles = json.loads(exec_properties[spec.ENCODER_HANDLES_KEY])
        catalog = artifact_utils.get_single_instance(input_dict[spec.CATALOG_KEY])
        files = [
            os.path.join(uri, "*")
            for split in artifact_utils.decode_split_names(catalog.split_names)
            for uri in [artifact_utils.get_split_uri([catalog], split)]
        ]
        output = artifact_utils.get_single_instance(output_dict[spec.ITEM_EMBEDDINGS_KEY])
        output.split_names = artifact_utils.encode_split_names([ITEMS_SPLIT])
        with self._make_beam_pipeline() as pipeline:
            records = pipeline | "ReadCatalog" >> beam.Create(files) | beam.io.ReadAllFromTFRecord()
            write_outputs(records, handles, output.uri)
        with tf.io.gfile.GFile(os.path.join(output.uri, QUARANTINE_FILE)) as f:
            output.set_int_custom_property(NUM_QUARANTINED_PROPERTY, sum(1 for line in f if line.strip()))
