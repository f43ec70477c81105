"""Limits on media files, checked from their headers before anything is decoded.

A crafted file can be small on disk and huge once decoded (a 612 KB PNG of
14000 x 14000 pixels; a WAV header claiming a 2,147,483,647 Hz sample rate,
which resampling turns into hundreds of GiB). Each check returns the reason an
item's media is refused (the item is then quarantined and named, and keeps
its other modalities), or None.
"""

from __future__ import annotations

import io

MAX_MEDIA_BYTES = 32 * 1024 * 1024  # one image or sound, encoded
MAX_IMAGE_PIXELS = 40_000_000  # e.g. 8000 x 5000; the encoder reads 224 x 224
MIN_AUDIO_RATE, MAX_AUDIO_RATE = 1_000, 384_000  # Hz
# Video (towers/encoders/video.py). A clip is many pictures and a sound track: 32 MiB holds only ~30 s of
# 1080p at a usual 8 Mbit/s, 128 MiB a 2-minute 1080p trailer or ~10 minutes of 720p. The bytes bound the
# memory one item holds (the record, its parse, no copy for decoding); the work is bounded by the others.
MAX_VIDEO_BYTES = 128 * 1024 * 1024
MAX_VIDEO_PIXELS = 4096 * 2160  # DCI 4K (so UHD 3840 x 2160 too); sampled frames are scaled down to 256 px
MAX_VIDEO_SECONDS = 3600
MAX_VIDEO_PACKETS = 500_000  # packets read, video and sound: an hour at 60 frames/s plus its sound track
MAX_VIDEO_FRAMES_DECODED = 20_000  # e.g. a minute at 240 frames/s; long clips decode their keyframes only


def size_problem(data: bytes) -> str | None:
    if len(data) > MAX_MEDIA_BYTES:
        return f"file of {len(data):,} bytes is over the {MAX_MEDIA_BYTES:,}-byte limit"
    return None


def image_problem(data: bytes) -> str | None:
    """Why an encoded image is refused before decoding (too many bytes or pixels, unreadable header), or None."""
    if problem := size_problem(data):
        return problem
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only
            width, height = image.size
    except Image.DecompressionBombError:  # Pillow's own limit, above ours: reported as ours
        return f"image over the {MAX_IMAGE_PIXELS:,}-pixel limit"
    except Exception as error:  # any unreadable header, whatever Pillow raises for it
        return f"unreadable image header: {type(error).__name__}: {str(error)[:120]}"
    if width * height > MAX_IMAGE_PIXELS:
        return f"image of {width} x {height} pixels is over the {MAX_IMAGE_PIXELS:,}-pixel limit"
    return None


def audio_rate_problem(rate: int) -> str | None:
    if not MIN_AUDIO_RATE <= rate <= MAX_AUDIO_RATE:
        return f"sample rate {rate:,} Hz is outside {MIN_AUDIO_RATE:,}-{MAX_AUDIO_RATE:,} Hz"
    return None


def video_size_problem(data: bytes) -> str | None:
    if len(data) > MAX_VIDEO_BYTES:
        return f"video of {len(data):,} bytes is over the {MAX_VIDEO_BYTES:,}-byte limit"
    return None


def video_frame_problem(width: int, height: int) -> str | None:
    if width <= 0 or height <= 0:
        return f"video frame size {width} x {height} is unknown or invalid"
    if width * height > MAX_VIDEO_PIXELS:
        return f"video of {width} x {height} pixels is over the {MAX_VIDEO_PIXELS:,}-pixel limit"
    return None


def video_duration_problem(seconds: float) -> str | None:
    if seconds > MAX_VIDEO_SECONDS:
        return f"video of {seconds:,.0f} s is over the {MAX_VIDEO_SECONDS:,}-s limit"
    return None


def decode_text(data: bytes) -> tuple[str, str | None]:
    """UTF-8 text -> (text, None); other bytes -> (text with the undecodable bytes replaced, the reason to report)."""
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as error:
        return data.decode("utf-8", errors="replace"), f"text is not UTF-8 (byte {error.start}); undecodable bytes replaced"
