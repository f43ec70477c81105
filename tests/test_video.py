"""Video decoding (towers/encoders/video.py) on clips made here with PyAV, and video in the ContentEmbedder."""

import io

import av
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from components.content_embedder import embeddings, executor
from mmdata.records import to_example
from tests.test_content_embedder import _handle
from towers import features as F
from towers.encoders import audio_musicnn, media, registry, video
from towers.encoders.video import VideoError, decode_video

pytestmark = pytest.mark.unit

STEP = 12  # frame i is a flat grey of level STEP * i, so a sampled frame tells which one it is


def _clip(
    container: str = "mp4",
    codec: str = "libx264",
    sound: str | None = "aac",
    seconds: float = 2.0,
    size: tuple[int, int] = (64, 48),
    fps: int = 10,
    rotation: int = 0,
    options: dict | None = None,
    codec_options: dict | None = None,
) -> bytes:
    """A clip of `seconds` at `fps` (frame i: grey level STEP * i), with a 440 Hz tone of amplitude 0.3 unless `sound` is None."""
    out = io.BytesIO()
    rate = 48000 if sound == "libopus" else 44100
    with av.open(out, "w", format=container, options=options or {}) as muxer:
        stream = muxer.add_stream(codec, rate=fps, options=codec_options or {})
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        if rotation:
            stream.set_display_rotation(rotation)
        track = muxer.add_stream(sound, rate=rate) if sound else None
        for i in range(round(seconds * fps)):
            pixels = np.full((size[1], size[0], 3), STEP * i % 256, np.uint8)
            if rotation:
                pixels[: size[1] // 6] = 255  # a white band along the top edge
            muxer.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        muxer.mux(stream.encode())
        if track:
            _tone(muxer, track, rate, seconds)
    return out.getvalue()


def _tone(muxer, stream, rate: int, seconds: float) -> None:
    wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(round(rate * seconds)) / rate)).astype(np.float32)
    size = stream.codec_context.frame_size or 1024
    for start in range(0, wave.size, size):
        frame = av.AudioFrame.from_ndarray(np.stack([wave[start : start + size]] * 2), format="fltp", layout="stereo")
        frame.sample_rate, frame.pts = rate, start
        muxer.mux(stream.encode(frame))
    muxer.mux(stream.encode())


def _sound_only() -> bytes:
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as muxer:
        _tone(muxer, muxer.add_stream("aac", rate=44100), 44100, 1.0)
    return out.getvalue()


def _pixels(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG" and image.mode == "RGB"
        return np.asarray(image)


def _frame_index(png: bytes) -> int:
    return round(float(_pixels(png).mean()) / STEP)


@pytest.mark.parametrize(
    "container, codec, sound",
    [("mp4", "libx264", "aac"), ("webm", "libvpx-vp9", "libopus"), ("matroska", "mpeg4", "libmp3lame")],
)
def test_frames_sampled_uniformly_and_sound_at_16k(container, codec, sound):
    clip = decode_video(_clip(container, codec, sound))
    assert len(clip.frames) == video.FRAMES
    assert all(_pixels(png).shape == (48, 64, 3) for png in clip.frames)
    # 20 frames at 0.0, 0.1, ... 1.9 s; sample times 0.125, 0.375, ... 1.875 s -> the nearest frame of each
    assert [_frame_index(png) for png in clip.frames] == [1, 4, 6, 9, 11, 14, 16, 19]
    assert clip.duration == pytest.approx(2.0, abs=0.05)
    assert clip.audio.dtype == np.float32 and clip.audio.ndim == 1
    assert abs(clip.audio.size - 2 * video.AUDIO_SAMPLE_RATE) < 0.05 * video.AUDIO_SAMPLE_RATE  # codec padding aside
    assert 0.25 < np.abs(clip.audio).max() < 0.35  # the stereo tone, mixed to mono at its amplitude
    assert video.AUDIO_SAMPLE_RATE == executor.AUDIO_SAMPLE_RATE == audio_musicnn.SAMPLE_RATE


def test_silent_clip_big_frames_and_rotation():
    clip = decode_video(_clip(sound=None, size=(640, 360), seconds=1.0, fps=5), frames=3)
    assert clip.audio is None
    assert [_pixels(png).shape for png in clip.frames] == [(256, 455, 3)] * 3  # shorter side scaled to 256
    upright = _pixels(decode_video(_clip(sound=None, rotation=90), frames=1).frames[0])
    assert upright.shape == (64, 48, 3)  # a phone clip's display matrix applied: 64 x 48 turned a quarter counterclockwise
    assert upright[:, :4].mean() > 250  # the top band is now on the left


def test_header_without_duration_and_keyframes_only(monkeypatch):
    live = _clip("webm", "libvpx", "libopus", options={"live": "1"})  # no duration written, as a browser's MediaRecorder
    with av.open(io.BytesIO(live)) as container:
        assert container.duration is None
    clip = decode_video(live)
    assert clip.duration == pytest.approx(2.0, abs=0.05)
    assert [_frame_index(png) for png in clip.frames] == [1, 4, 6, 9, 11, 14, 16, 19]

    monkeypatch.setattr(video, "KEYFRAMES_ONLY_AFTER_SECONDS", 1)
    keyframes = decode_video(_clip(codec_options={"g": "5", "keyint_min": "5", "sc_threshold": "0"}))
    assert [_frame_index(png) for png in keyframes.frames] == [0, 5, 5, 10, 10, 15, 15, 15]  # the keyframes, every 5th frame


@pytest.mark.parametrize(
    "make, limit, reason",
    [
        (lambda: b"", None, "^empty file$"),
        (lambda: b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40, None, "^truncated or corrupt video: "),
        (lambda: (data := _clip())[: len(data) // 2], None, "^truncated or corrupt video: "),  # MP4: no index (moov) yet
        (
            lambda: (data := _clip("matroska"))[: len(data) // 2],
            None,
            r"^truncated or corrupt video: its streams end at 1\.\d s of the 2\.0 s",
        ),
        (_sound_only, None, r"^no video stream \(audio only\)$"),
        (_clip, ("MAX_VIDEO_PIXELS", 1000), "^video of 64 x 48 pixels is over the 1,000-pixel limit$"),
        (_clip, ("MAX_VIDEO_BYTES", 1000), "^video of .* bytes is over the 1,000-byte limit$"),
        (_clip, ("MAX_VIDEO_SECONDS", 1), "^video of 2 s is over the 1-s limit$"),
        (_clip, ("MAX_VIDEO_PACKETS", 10), "^video of over 10 packets$"),
        (_clip, ("MAX_VIDEO_FRAMES_DECODED", 5), "^video of over 5 frames to decode$"),
    ],
    ids=["empty", "garbage", "truncated-mp4", "truncated-mkv", "sound-only", "pixels", "bytes", "seconds", "packets", "frames"],
)
def test_refusals_are_video_errors_with_a_reason(monkeypatch, make, limit, reason):
    data = make()
    if limit:
        monkeypatch.setattr(media, *limit)
    with pytest.raises(VideoError, match=reason):
        decode_video(data)


def test_damaged_clips_never_raise_anything_but_video_error():
    rng = np.random.default_rng(0)
    outcomes = set()
    for data in (_clip(), _clip("matroska", sound=None, size=(160, 120))):
        for _ in range(30):
            damaged = bytearray(data)
            at = rng.integers(0, len(data), 8)
            damaged[at[0] : at[0] + 64] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()[: len(damaged) - at[0]]
            for position in at[1:]:
                damaged[position] ^= 0xFF
            try:
                clip = decode_video(bytes(damaged))
            except VideoError as error:
                outcomes.add("refused")
                assert str(error)
            else:
                outcomes.add("decoded")  # damage a decoder conceals
                assert len(clip.frames) == video.FRAMES
    assert outcomes == {"refused", "decoded"}


@pytest.fixture(scope="module")
def handles(tmp_path_factory):
    return {name: _handle(name, tmp_path_factory) for name in ("text", "image", "audio")}


def test_enabled_modalities():
    assert executor.enabled_modalities({"text": "t", "image": "i", "audio": "a"}) == ["text", "image", "audio", "video"]
    assert executor.enabled_modalities({"text": "t", "image": "i"}) == ["text", "image"]  # no sound encoder, no video
    assert executor.enabled_modalities({"video": "v", "audio": "a"}) == ["audio"]  # video has no encoder of its own


def test_content_embedder_embeds_videos_and_quarantines_broken_ones(handles):
    good, silent = _clip(), _clip(sound=None)
    records = [
        to_example(
            {F.ITEM_ID: item_id, F.ITEM_TEXT: f"item {item_id}", **({F.VIDEO: data} if data is not None else {})}
        ).SerializeToString()
        for item_id, data in {"good": good, "silent": silent, "corrupt": b"not a video at all", "no-video": None}.items()
    ]
    content, quarantined = embeddings.embed_records(records, handles)

    assert sorted(content["video"]) == ["good", "silent"]
    assert sorted(content["text"]) == ["corrupt", "good", "no-video", "silent"]  # every item keeps its text
    assert quarantined == [{"item_id": "corrupt", "modality": "video", "reason": quarantined[0]["reason"]}]
    assert quarantined[0]["reason"].startswith("truncated or corrupt video")

    image_dim, audio_dim = registry.ENCODERS["image"].dim, registry.ENCODERS["audio"].dim
    clip = decode_video(good)
    frames = registry.load(handles["image"])(tf.constant(clip.frames)).numpy()
    sound = registry.load(handles["audio"])(clip.audio[None]).numpy()[0]
    expected = np.concatenate([frames.mean(axis=0) / np.linalg.norm(frames.mean(axis=0)), sound / np.linalg.norm(sound)])
    got = content["video"]["good"]
    assert got.shape == (image_dim + audio_dim,) == (1480,)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    quiet = content["video"]["silent"]
    assert np.linalg.norm(quiet[:image_dim]) == pytest.approx(1.0, abs=1e-5) and not quiet[image_dim:].any()
