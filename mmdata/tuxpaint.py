"""The tuxpaint multimodal catalog: real photos, captions and sounds; simulated users.

Items are the photo stamps of Debian's `tuxpaint-stamps-default` (installed by
`make setup`): one item per PNG under /usr/share/tuxpaint/stamps/<category>/...,
with
- image: the PNG itself;
- text: the English caption (first line of the `.txt` beside it) and the folder
  path, e.g. "A blackbird. animals, birds";
- audio: the stamp's own sound (`<name>.ogg` or `.wav`, ~130 items) when it has
  one; the `_desc_<lang>` files are spoken captions and are not used;
- metadata: title = the caption, genres = the folder path.
SVG-only stamps are left out (no raster image to encode).

The package has no users: interactions come from mmdata.simulator (seeded,
documented). Content is real, interactions are simulated.
"""

from __future__ import annotations

import colorsys
import os

import numpy as np
import pandas as pd

from mmdata import simulator
from mmdata.records import QuarantinedRow
from towers import features as F
from towers.encoders import media

DEBIAN_PACKAGE = "tuxpaint-stamps-default"
STAMPS_DIR = "/usr/share/tuxpaint/stamps"
DEFAULT_USERS = 2500
SOUND_SUFFIXES = (".ogg", ".wav")
# Colour classes of a photo's dominant hue (see dominant_colour).
HUES = ("red", "yellow", "green", "cyan", "blue", "magenta")
GREY = "grey"
UNKNOWN_COLOUR = "unknown"


def source_dir(root: str | None = None) -> str:
    root = root or STAMPS_DIR
    if not os.path.isdir(root):
        raise FileNotFoundError(
            f"the tuxpaint catalog comes from the Debian package {DEBIAN_PACKAGE!r}, not found at {root}. "
            f"Run `make setup` (it installs it) or `apt-get install {DEBIAN_PACKAGE}`."
        )
    return root


def dominant_colour(png: bytes) -> str:
    """The photo's dominant colour class: one of HUES, or GREY when few opaque pixels are saturated.

    Raises:
      OSError / ValueError: the bytes are not a readable image.
    """
    import io

    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        pixels = np.asarray(image.convert("RGBA").resize((48, 48)), np.float32) / 255.0
    opaque = pixels[..., 3] > 0.5
    rgb = pixels[..., :3][opaque]
    if len(rgb) == 0:
        return GREY
    hsv = np.array([colorsys.rgb_to_hsv(*p) for p in rgb])
    saturated = hsv[(hsv[:, 1] > 0.3) & (hsv[:, 2] > 0.2)]
    if len(saturated) < 0.2 * len(hsv):
        return GREY
    bins = np.floor(((saturated[:, 0] * 6) + 0.5) % 6).astype(int)  # red centred on hue 0
    return HUES[int(np.bincount(bins, minlength=6).argmax())]


def _caption(path: str) -> tuple[str, str | None]:
    """First line of a tuxpaint caption file (English); '' if absent. -> (caption, why it was altered or None)."""
    if not os.path.exists(path):
        return "", None
    with open(path, "rb") as f:
        text, problem = media.decode_text(f.readline(media.MAX_MEDIA_BYTES))
    return text.strip(), problem


def _read_capped(path: str) -> bytes:
    """A media file's bytes, at most one byte over the limit (the content embedder then refuses it, naming the item)."""
    with open(path, "rb") as f:
        return f.read(media.MAX_MEDIA_BYTES + 1)


def load_catalog(root: str | None = None) -> tuple[pd.DataFrame, simulator.ItemTraits, list[QuarantinedRow]]:
    """Scans the stamps folder -> (catalog rows, traits for the simulator, quarantined rows).

    An unreadable photo keeps its item (text, sound) without the image; a
    missing caption keeps the item with its file name as text. Both are recorded.
    """
    root = source_dir(root)
    rows, colours, quarantined = [], [], []
    for folder, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            if not name.endswith(".png"):
                continue
            stem = os.path.join(folder, name[: -len(".png")])
            item_id = os.path.relpath(stem, root)
            path_words = os.path.dirname(item_id).split(os.sep)
            caption, problem = _caption(stem + ".txt")
            if problem:
                quarantined.append(QuarantinedRow(item_id + ".txt", 1, F.ITEM_TEXT, problem, "", kept=True))
            if not caption:
                caption = os.path.basename(stem).replace("_", " ").replace("-", " ")
                quarantined.append(QuarantinedRow(item_id + ".txt", 1, F.ITEM_TEXT, "no English caption; file name used", "", kept=True))
            with open(stem + ".png", "rb") as f:
                png = f.read(media.MAX_MEDIA_BYTES + 1)
            try:
                if problem := media.image_problem(png):
                    raise ValueError(problem)
                colour = dominant_colour(png)
            except Exception as error:  # Pillow raises several kinds for a broken or hostile file
                quarantined.append(QuarantinedRow(item_id + ".png", 0, F.IMAGE, f"unreadable image: {error}", "", kept=True))
                png, colour = None, UNKNOWN_COLOUR
            sound = next((stem + s for s in SOUND_SUFFIXES if os.path.exists(stem + s)), None)
            audio = _read_capped(sound) if sound else None
            rows.append(
                {
                    F.ITEM_ID: item_id,
                    F.TITLE: caption,
                    F.GENRES: path_words,
                    F.ITEM_TEXT: f"{caption} {', '.join(path_words)}",
                    F.IMAGE: png,
                    F.AUDIO: audio,
                }
            )
            colours.append(colour)
    catalog = pd.DataFrame(rows)
    traits = simulator.ItemTraits(
        item_ids=list(catalog[F.ITEM_ID]),
        category=[g[0] for g in catalog[F.GENRES]],
        leaf=["/".join(g) for g in catalog[F.GENRES]],
        colour=colours,
        has_sound=[a is not None for a in catalog[F.AUDIO]],
    )
    return catalog, traits, quarantined


def media_paths(catalog: pd.DataFrame, root: str | None = None) -> tuple[str, dict[str, list[str]]]:
    """(the stamps folder, F.IMAGE / F.AUDIO -> each catalog row's file relative to it, "" = none) for the data contract.

    A photo load_catalog refused is left out, as it is from the catalog.
    """
    root = source_dir(root)

    def sound(item_id: str) -> str:
        return next((item_id + s for s in SOUND_SUFFIXES if os.path.exists(os.path.join(root, item_id + s))), "")

    images = [item_id + ".png" if png is not None else "" for item_id, png in zip(catalog[F.ITEM_ID], catalog[F.IMAGE])]
    return root, {F.IMAGE: images, F.AUDIO: [sound(item_id) for item_id in catalog[F.ITEM_ID]]}


def load(
    root: str | None = None, max_users: int | None = None, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list[QuarantinedRow]]:
    """-> (interactions with item metadata joined, catalog, users, quarantined rows).

    Args:
      root: the stamps folder; defaults to the Debian package's.
      max_users: simulate this many users instead of DEFAULT_USERS.
      seed: simulator seed.
    """
    catalog, traits, quarantined = load_catalog(root)
    interactions = simulator.simulate(traits, max_users or DEFAULT_USERS, seed=seed)
    metadata = catalog[[F.ITEM_ID, F.TITLE, F.GENRES]]
    joined = interactions.merge(metadata, on=F.ITEM_ID, how="left")
    users = pd.DataFrame({F.USER_ID: sorted(interactions[F.USER_ID].unique())})
    return joined, catalog, users, quarantined
