"""Your own files to a served model: `mmtower init` drafts the data contract, `mmtower run --config` ingests the
files (bad rows quarantined by file, line and column), infers the schema for you to curate, trains, pushes; a
second run imports the curated schema; `mmtower recommend` answers for your users and your items."""

import csv
import io
import json
import os
import re
import subprocess
import sys
import wave

import numpy as np
import pytest
from PIL import Image

from mmdata import registry
from mmdata.records import Manifest, read_records
from pipeline import local_runner
from pipeline.config import Options
from towers import contract
from towers.contract import QUARANTINE_FILE, USERS_FILE, RunPaths, latest_version_dir
from towers.hparams import HParams

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BRANDS = ("acme", "globex", "initech", "umbrella")
COLOURS = {"acme": (220, 30, 30), "globex": (30, 200, 40), "initech": (30, 60, 220), "umbrella": (240, 220, 20)}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BAD_EVENTS = 4  # rows the generator breaks on purpose (see write_files)


def _png(colour) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(buffer, "PNG")
    return buffer.getvalue()


def _wav(frequency: float) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        t = np.arange(16000) / 16000
        w.writeframes((np.sin(2 * np.pi * frequency * t) * 8000).astype("<i2").tobytes())
    return buffer.getvalue()


def _mp4(colour, frequency: float) -> bytes:
    """A 1 s, 32 x 32 H.264 clip of one colour with an AAC tone (PyAV, as a user's camera would write it)."""
    import av

    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as muxer:
        video = muxer.add_stream("libx264", rate=8)
        video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
        sound = muxer.add_stream("aac", rate=16000)
        for _ in range(8):
            muxer.mux(video.encode(av.VideoFrame.from_ndarray(np.full((32, 32, 3), colour, np.uint8), format="rgb24")))
        muxer.mux(video.encode())
        wave = (0.3 * np.sin(2 * np.pi * frequency * np.arange(16000) / 16000)).astype(np.float32)
        size = sound.codec_context.frame_size or 1024
        for start in range(0, wave.size, size):
            frame = av.AudioFrame.from_ndarray(wave[np.newaxis, start : start + size], format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, start
            muxer.mux(sound.encode(frame))
        muxer.mux(sound.encode())
    return out.getvalue()


def customer(u: int) -> str:
    """A raw user id distinctive enough to find in any file of a run (none may hold it: ids are pseudonymised)."""
    return f"customer{u:02d}.lee@shop.example"


def write_files(folder) -> dict:
    """A shop: 48 items (title, description, brand, tags, price, photo; every third a sound, every fourth a video
    clip), 30 users (country, age) and ~600 events where each user prefers one brand; plus 4 broken event rows,
    1 item whose photo path leaves the media folder and 1 truncated clip."""
    rng = np.random.default_rng(0)
    media = folder / "media"
    media.mkdir(parents=True)
    items = []
    for i in range(48):
        brand = BRANDS[i % 4]
        (media / f"p{i}.png").write_bytes(_png(COLOURS[brand]))
        row = {
            "sku": f"sku-{i:03d}",
            "title": f"{brand} gadget {i}",
            "description": f"A {brand} gadget, model {i}, for people who like {brand} things",
            "brand": brand,
            "tags": "|".join(["gadget", brand] + (["sale"] if i % 5 == 0 else [])),
            "price": f"{10 + i * 1.5:.2f}",
            "photo": f"p{i}.png",
            "sound": "",
            "clip": "",
        }
        if i % 3 == 0:
            (media / f"s{i}.wav").write_bytes(_wav(200 + 20 * (i % 4)))
            row["sound"] = f"s{i}.wav"
        if i % 4 == 1:
            (media / f"v{i}.mp4").write_bytes(_mp4(COLOURS[brand], 300 + 30 * (i % 4)))
            row["clip"] = f"v{i}.mp4"
        items.append(row)
    (media / "v1.mp4").write_bytes((media / "v1.mp4").read_bytes()[:300])  # truncated: quarantined by the encoders
    items[-1]["photo"] = "../outside.png"  # refused: outside the media folder; the item is kept without a photo
    (folder / "outside.png").write_bytes(b"SECRET-CONTENT")
    users = [{"customer": customer(u), "country": ["fr", "de", "us"][u % 3], "age": str(20 + u)} for u in range(30)]
    events = []
    start = 1_700_000_000
    for u in range(30):
        liked = BRANDS[u % 4]
        pool = [row["sku"] for row in items if row["brand"] == liked]
        others = [row["sku"] for row in items if row["brand"] != liked]
        times = start + np.sort(rng.integers(0, 60 * 86400, size=20))
        for t in times:
            sku = rng.choice(pool) if rng.random() < 0.85 else rng.choice(others)
            events.append({"customer": customer(u), "sku": sku, "when": str(int(t)), "stars": str(int(rng.integers(3, 6)))})
    events[5]["when"] = "yesterday-ish"  # unparseable timestamp
    events[9]["sku"] = "sku-999"  # an item the catalog does not have
    events[13]["customer"] = ""  # no user
    events[17]["stars"] = "five"  # not a number
    events[21]["when"] = "2023-11-20T10:00:00Z"  # ISO 8601 is fine
    for name, rows in (("items.csv", items), ("users.csv", users), ("events.csv", events)):
        with open(folder / name, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return {"items": items, "events": events}


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shop")
    files = write_files(folder)
    cli = [sys.executable, "-m", "app.cli"]
    init = subprocess.run(
        cli + ["init", "--items", "items.csv", "--events", "events.csv", "--users", "users.csv", "--media-root", "media"],
        cwd=folder,
        env={**os.environ, "PYTHONPATH": ROOT},  # this checkout's code, from the shop's folder
        capture_output=True,
        text=True,
    )
    assert init.returncode == 0, init.stderr
    spec = registry.from_contract(str(folder / "mmtower.yaml"))
    config = local_runner.RunConfig(
        dataset=spec.name,
        output=str(folder / "output"),
        options=Options(hparams=HParams(epochs=5, batch_size=128, top_k=20), min_recall_at_100=0.0, min_auc=0.0),
        direct_num_workers=1,
    )
    paths, _ = local_runner.run(config)
    return folder, files, spec, config, paths


def test_init_drafts_the_contract_with_every_role(shop):
    folder, _, spec, _, _ = shop
    text = (folder / "mmtower.yaml").read_text()
    assert ": TODO" not in text, text  # every role was guessed
    assert spec.features.item_text[0] == "title" and "description" in spec.features.item_text
    assert spec.features.item_categorical == ("brand",) and spec.features.item_multivalued == ("tags",)
    assert spec.features.item_numeric == ("price",)
    assert spec.features.user_categorical == ("country",) and spec.features.user_numeric == ("age",)
    assert set(spec.modalities) == {"text", "image", "audio", "video"}


def test_bad_rows_are_quarantined_by_file_line_and_column_and_the_rest_kept(shop):
    _, files, _, _, paths = shop
    rows = [json.loads(line) for line in open(os.path.join(paths.data_dir, QUARANTINE_FILE))]
    named = {(row["source"], row["line"], row["field"]) for row in rows}
    # CSV lines count the header as line 1: event i is on line i + 2.
    assert ("events.csv", 7, "when") in named and ("events.csv", 11, "sku") in named
    assert ("events.csv", 15, "customer") in named and ("events.csv", 19, "stars") in named
    assert any(row["source"] == "items.csv" and row["field"] == "photo" and row["kept"] for row in rows)
    assert not any("SECRET" in json.dumps(row) for row in rows)  # nothing of a file's content is echoed
    manifest = Manifest.read(paths.data_dir)
    dropped = sum(1 for row in rows if row["source"] == "events.csv" and not row["kept"])
    assert manifest.num_train + manifest.num_validation + manifest.num_eval == len(files["events"]) - dropped
    assert dropped <= BAD_EVENTS and manifest.num_items == 48


def test_every_modality_is_embedded_and_a_broken_clip_quarantined_alone(shop):
    from app import summary

    *_, paths = shop
    result = summary.read(paths)
    assert result.content_items["video"] == 12 - 1 and result.content_items["image"] == 48 - 1  # 1 clip broken, 1 photo refused
    assert result.content_items["audio"] == 16 and result.content_items["text"] == 48
    quarantined = [json.loads(line) for line in open(result.content_quarantine_file)]
    assert [(row["item_id"], row["modality"]) for row in quarantined] == [("sku-001", "video")]


def test_schema_is_inferred_once_then_imported(shop):
    folder, _, spec, config, paths = shop
    schema = folder / "schema" / "schema.pbtxt"
    assert spec.schema_file == str(schema) and schema.exists()
    text = schema.read_text()
    for column in ("title", "brand", "tags", "price", "country", "age", "history"):
        assert f'name: "{column}"' in text
    curated = text + "# curated by hand\n"
    schema.write_text(curated)
    local_runner.run(config)  # everything cached but the schema import; the schema is not inferred again
    assert schema.read_text() == curated


def test_the_pushed_model_recommends_your_items_to_your_users(shop):
    folder, files, spec, _, paths = shop
    assert latest_version_dir(paths.serving_model_dir()) is not None
    cli = [sys.executable, "-m", "app.cli", "recommend", "--output", paths.output, "--dataset", spec.name]
    out = subprocess.run(cli + ["--user", customer(1)], capture_output=True, text=True)  # the raw id: pseudonymised here
    assert out.returncode == 0, out.stderr
    listed = re.findall(r"\(item (sku-\d+)\)", out.stdout)
    assert len(listed) == 10 and set(listed) <= {row["sku"] for row in files["items"]}
    assert "gadget" in out.stdout  # the display name is the first text column
    fresh = subprocess.run(cli + ["--user", "someone-new", "--history", "sku-001,sku-005"], capture_output=True, text=True)
    assert fresh.returncode == 0 and "from the --history items alone" in fresh.stdout, fresh.stderr


def test_a_contract_naming_a_missing_column_is_refused_before_anything_runs(shop, tmp_path):
    folder, *_ = shop
    broken = (folder / "mmtower.yaml").read_text().replace("brand", "brnd", 1)
    (tmp_path / "mmtower.yaml").write_text(broken)
    for name in ("items.csv", "events.csv", "users.csv"):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    run = subprocess.run(
        [sys.executable, "-m", "app.cli", "run", "--config", str(tmp_path / "mmtower.yaml"), "--output", str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and "brnd" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "out").exists()


def test_served_signatures_take_your_columns(shop):
    _, _, spec, _, paths = shop
    import tensorflow as tf

    model = tf.saved_model.load(latest_version_dir(paths.serving_model_dir()))
    inputs = set(model.signatures[contract.RECOMMEND_SIGNATURE].structured_input_signature[1])
    assert {"country", "age"} <= inputs and not {"gender", "occupation", "zip_code"} & inputs
    assert RunPaths(paths.output, spec.name).pipeline_name == f"mmtower-{spec.name}"


def test_no_raw_user_id_is_left_in_any_file_of_the_run(shop):
    """Privacy by default: data, statistics, vocabularies, ML Metadata, models and logs hold pseudonyms only."""
    import gzip

    from towers import privacy

    _, _, _, _, paths = shop
    raw_ids = [customer(u).encode() for u in range(30)]
    scanned = 0
    for folder, _, names in os.walk(paths.output):
        for name in names:
            with open(os.path.join(folder, name), "rb") as f:
                data = f.read()
            if name.endswith(".gz"):
                data = gzip.decompress(data)
            found = [raw for raw in raw_ids if raw in data or b"shop.example" in data]
            assert not found, f"{os.path.join(folder, name)} holds {found[:2]}"
            scanned += 1
    assert scanned > 100  # the data, the pipeline's artifacts, metadata.sqlite, the served models, the logs
    assert Manifest.read(paths.data_dir).pseudonym_key_id == privacy.key_id(privacy.load_key())


def test_a_forgotten_user_leaves_the_data_and_the_next_model_then_older_artifacts(shop):
    """`mmtower forget`: listed, refused to purge while served, gone from the next run's data and model, then purged.

    Runs last in this module: it changes the shared run's output."""
    import dataclasses

    from app.forget import holding
    from towers import privacy

    _, _, spec, config, paths = shop
    stored = privacy.pseudonym(privacy.load_key(), customer(3))
    cli = [sys.executable, "-m", "app.cli", "forget", "--output", paths.output, "--dataset", spec.name, "--user", customer(3)]
    listed = subprocess.run(cli, capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    assert "left out of every build" in listed.stdout and "serving/recommender/" in listed.stdout
    refused = subprocess.run(cli + ["--purge"], capture_output=True, text=True)
    assert refused.returncode == 2 and "still holds this user" in refused.stderr

    before = latest_version_dir(paths.serving_model_dir())
    options = dataclasses.replace(config.options, max_regression=1.0, max_auc_regression=1.0)  # one user fewer may move metrics
    local_runner.run(dataclasses.replace(config, options=options))
    newest = latest_version_dir(paths.serving_model_dir())
    assert newest != before
    users = {row["user_id"] for row in read_records(os.path.join(paths.data_dir, USERS_FILE))}
    assert stored not in users and len(users) == 29
    assert not [root for root in holding(paths, stored) if root.startswith(newest) or root.startswith(paths.data_dir)]

    purged = subprocess.run(cli + ["--purge"], capture_output=True, text=True)
    assert purged.returncode == 0 and "Deleted" in purged.stdout, purged.stderr
    assert holding(paths, stored) == []
    assert os.path.isdir(newest) and not os.path.exists(before)
    served = subprocess.run(
        [sys.executable, "-m", "app.cli", "recommend", "--output", paths.output, "--dataset", spec.name, "--user", customer(1)],
        capture_output=True,
        text=True,
    )
    assert served.returncode == 0 and len(re.findall(r"\(item sku-\d+\)", served.stdout)) == 10, served.stderr
