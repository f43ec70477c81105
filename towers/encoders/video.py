"""Video -> what the image and audio encoders read: a few frames as PNGs and the sound track as a 16 kHz waveform.

There is no video encoder: the ContentEmbedder embeds the sampled frames with the
image encoder (mean-pooled over time) and the sound track with the audio encoder.

Decoder: PyAV (`av`), FFmpeg's libraries bound to Python. Its manylinux wheel bundles
its own FFmpeg build (H.264/HEVC/VP8/VP9/AV1/MPEG-4 video, AAC/MP3/Opus/Vorbis sound,
MP4/MOV/Matroska/WebM/AVI/Ogg containers), so `pip install` is the whole setup on any
Beam worker, and it decodes from memory (`av.open(io.BytesIO(data))`): no temporary
file. The alternatives: the Debian `ffmpeg` binary in a subprocess needs a system
package on every worker image, a temporary file or pipe per clip, and its output and
exit codes parsed back (limits enforced only through command-line flags);
tensorflow-io's FFmpeg ops are built against particular system FFmpeg versions, are
deprecated upstream and, like its audio reader here, read from files.

Limits (towers/encoders/media.py) are checked from the container and stream headers
before any frame is decoded (bytes, frame size, duration, a video stream at all), and
decoding is bounded in packets read and frames decoded, so a crafted clip can neither
loop for long nor allocate without bound. Every refusal is a `VideoError` with the reason.

Frames are picked by one sequential pass (no seeking, which depends on each container's
index and can land anywhere on a broken one): the frame nearest each of `frames` times
spread uniformly over the duration (the middle of each of `frames` equal spans). Clips
longer than KEYFRAMES_ONLY_AFTER_SECONDS decode only their keyframes (the decoder skips
the others almost for free), so an hour-long clip costs a few hundred decoded frames and
each sample is the keyframe nearest its time (seconds off, on a span of minutes).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import NoReturn

import numpy as np

from towers.encoders import media

FRAMES = 8  # frames sampled per clip
MAX_FRAME_SIDE = 256  # a sampled frame's shorter side, at most (the image encoder reads 224 x 224)
AUDIO_SAMPLE_RATE = 16000  # what the audio encoder reads (audio_musicnn.SAMPLE_RATE)
MAX_AUDIO_SECONDS = 30  # of the sound track, from its start, as for a sound (content_embedder.MAX_AUDIO_SECONDS)
KEYFRAMES_ONLY_AFTER_SECONDS = 60


class VideoError(ValueError):
    """Video bytes refused or undecodable: the message is the reason."""


@dataclass
class VideoClip:
    """frames: PNG-encoded RGB frames (shorter side <= MAX_FRAME_SIDE), in time order; audio: the first audio
    stream as float32 mono at AUDIO_SAMPLE_RATE, at most MAX_AUDIO_SECONDS, or None for a silent clip;
    duration: seconds of video (from the header, or from the packets' timestamps where the header has none)."""

    frames: list[bytes]
    audio: np.ndarray | None
    duration: float


def decode_video(data: bytes, frames: int = FRAMES) -> VideoClip:
    """Encoded video (MP4, WebM, MKV, ...) -> `frames` frames sampled uniformly over its duration, and its sound.

    Raises:
      VideoError: empty, over a limit, without a video stream, truncated, corrupt or otherwise undecodable.
    """
    import av

    if frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    if not data:
        raise VideoError("empty file")
    if problem := media.video_size_problem(data):
        raise VideoError(problem)
    try:
        with _open(data) as container:
            duration = _check_headers(container)
            if duration is not None:
                return _sample(container, frames, duration)
            duration = _measured_duration(container)  # e.g. WebM from a browser's MediaRecorder: no duration written
        with _open(data) as container:
            _check_headers(container)
            return _sample(container, frames, duration)
    except VideoError:
        raise
    except av.FFmpegError as error:
        raise VideoError(f"truncated or corrupt video: {(error.strerror or str(error))[:120]}") from None
    except Exception as error:  # whatever else a crafted clip makes PyAV raise costs that clip only
        raise VideoError(f"could not decode video: {type(error).__name__}: {str(error)[:120]}") from None


def _open(data: bytes):
    import av

    # max_pixels: FFmpeg's decoders refuse bigger frames themselves, also while probing the streams and for a
    # frame size that changes mid-stream (the header check below sees only the first). A garbled title is no reason.
    return av.open(io.BytesIO(data), options={"max_pixels": str(media.MAX_VIDEO_PIXELS)}, metadata_errors="replace")


def _check_headers(container) -> float | None:
    """The video's declared duration in seconds (None if the header has none), once the headers pass the limits."""
    if not container.streams.video:
        return _refuse("no video stream" + (" (audio only)" if container.streams.audio else ""))
    video = container.streams.video[0]
    if video.codec_context is None:
        return _refuse("unsupported video codec (no decoder for it)")
    if problem := media.video_frame_problem(video.codec_context.width, video.codec_context.height):
        return _refuse(problem)
    if container.streams.audio:
        sound = container.streams.audio[0].codec_context
        if sound is None:
            return _refuse("unsupported sound track codec (no decoder for it)")
        if problem := media.audio_rate_problem(sound.sample_rate):
            return _refuse(f"sound track: {problem}")
    declared = [float(video.duration * video.time_base)] if video.duration and video.time_base else []
    if container.duration:  # in microseconds (AV_TIME_BASE)
        declared.append(container.duration / 1_000_000)
    if declared and (problem := media.video_duration_problem(max(declared))):
        return _refuse(problem)
    return declared[0] if declared and declared[0] > 0 else None


def _refuse(reason: str) -> NoReturn:
    raise VideoError(reason)


def _measured_duration(container) -> float:
    """Seconds from the first video packet to the end of the last, reading packets without decoding them."""
    video = container.streams.video[0]
    first = last = None
    for count, packet in enumerate(container.demux(video), 1):
        if count > media.MAX_VIDEO_PACKETS:
            _refuse(f"video of over {media.MAX_VIDEO_PACKETS:,} packets")
        if packet.pts is not None:
            first = packet.pts if first is None else min(first, packet.pts)
            last = max(last or packet.pts, packet.pts + (packet.duration or 0))
    if first is None or last <= first:
        _refuse("video of unknown duration (no timestamps)")
    seconds = float((last - first) * video.time_base)
    if problem := media.video_duration_problem(seconds):
        _refuse(problem)
    return seconds


def _sample(container, count: int, duration: float) -> VideoClip:
    """One pass over the packets: the frame nearest each sample time, and the start of the sound track."""
    video = container.streams.video[0]
    audio = container.streams.audio[0] if container.streams.audio else None
    video.codec_context.options = {"max_pixels": str(media.MAX_VIDEO_PIXELS)}
    if duration > KEYFRAMES_ONLY_AFTER_SECONDS:
        video.codec_context.skip_frame = "NONKEY"
    start = float(video.start_time * video.time_base) if video.start_time is not None else (container.start_time or 0) / 1_000_000
    times = [start + duration * (i + 0.5) / count for i in range(count)]
    rate = float(video.guessed_rate or 25)
    sound = _Soundtrack() if audio is not None else None
    picked: list[bytes] = []
    previous = None  # (time, frame) of the last decoded frame
    cached = (None, b"")  # (time, PNG) of the last frame picked: one frame can be the nearest to several times
    decoded = packets = 0
    end = start  # where the streams' packets end, in seconds: a truncated file ends before its header says
    for packet in container.demux(*(s for s in (video, audio) if s is not None)):
        packets += 1
        if packets > media.MAX_VIDEO_PACKETS:
            _refuse(f"video of over {media.MAX_VIDEO_PACKETS:,} packets")
        if packet.pts is not None and packet.time_base is not None:
            end = max(end, float((packet.pts + (packet.duration or 0)) * packet.time_base))
        if packet.stream.index != video.index:
            if not sound.full:
                for frame in packet.decode():
                    sound.add(frame)
            continue
        for frame in packet.decode():
            decoded += 1
            if decoded > media.MAX_VIDEO_FRAMES_DECODED:
                _refuse(f"video of over {media.MAX_VIDEO_FRAMES_DECODED:,} frames to decode")
            if problem := media.video_frame_problem(frame.width, frame.height):
                _refuse(problem)
            time = frame.time if frame.time is not None else start + (decoded - 1) / rate
            while len(picked) < count and time >= times[len(picked)]:
                target = times[len(picked)]
                nearest = previous if previous is not None and target - previous[0] < time - target else (time, frame)
                if cached[0] != nearest[0]:
                    cached = (nearest[0], _to_png(nearest[1]))
                picked.append(cached[1])
            previous = (time, frame)
        if len(picked) == count and (sound is None or sound.full):
            break
    if previous is None:
        _refuse("truncated or corrupt video: no frame could be decoded")
    if len(picked) < count:  # the last frames come before the last sample times
        if end < times[-1]:
            _refuse(f"truncated or corrupt video: its streams end at {end - start:.1f} s of the {duration:.1f} s its header declares")
        last = cached[1] if cached[0] == previous[0] else _to_png(previous[1])
        picked += [last] * (count - len(picked))
    return VideoClip(frames=picked, audio=sound.waveform() if sound is not None else None, duration=duration)


def _to_png(frame) -> bytes:
    """A decoded frame -> PNG of its RGB pixels, shorter side at most MAX_FRAME_SIDE, turned upright (phone clips)."""
    from PIL import Image

    scale = min(1.0, MAX_FRAME_SIDE / min(frame.width, frame.height))
    width, height = max(1, round(frame.width * scale)), max(1, round(frame.height * scale))
    pixels = frame.reformat(width=width, height=height, format="rgb24", interpolation="AREA").to_ndarray()
    if turns := round((frame.rotation or 0) / 90) % 4:  # the display matrix rotates counterclockwise, as np.rot90
        pixels = np.rot90(pixels, turns)
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(out, format="PNG", compress_level=1)
    return out.getvalue()


class _Soundtrack:
    """The first MAX_AUDIO_SECONDS of a sound track, resampled to AUDIO_SAMPLE_RATE as it is decoded, then mixed to mono."""

    def __init__(self):
        import av

        self.resampler = av.AudioResampler(format="fltp", rate=AUDIO_SAMPLE_RATE)  # keeps the channel layout
        self.chunks: list[np.ndarray] = []
        self.samples = 0

    @property
    def full(self) -> bool:
        return self.samples >= AUDIO_SAMPLE_RATE * MAX_AUDIO_SECONDS

    def add(self, frame) -> None:
        if frame is not None and (problem := media.audio_rate_problem(frame.sample_rate)):
            _refuse(f"sound track: {problem}")
        for out in self.resampler.resample(frame):
            if out is not None:  # a pass-through resampler flushes None
                mono = out.to_ndarray().astype(np.float32).mean(axis=0)
                self.chunks.append(mono)
                self.samples += mono.size

    def waveform(self) -> np.ndarray | None:
        if not self.full:
            self.add(None)  # what the resampler still holds
        if not self.samples:
            return None
        return np.concatenate(self.chunks)[: AUDIO_SAMPLE_RATE * MAX_AUDIO_SECONDS]
