"""`mmtower index add-items FILE`: recommend new items without retraining.

New catalog items are encoded by the same pretrained content encoders as in
training (the ContentEmbedder's Beam pipeline, DirectRunner, in process),
embedded by the pushed `item_encoder` (the candidate tower), and appended to
the newest `recommender` and `ranker` versions, which are saved as a new
version that a running server picks up. Their ids are unknown to the ID
embeddings (out-of-vocabulary), so they are retrieved and ranked from content
and metadata. With a ScaNN index, added items are scored by brute force until
`--rebuild-index` (or the next training run) indexes them.

Items whose id is already in the catalog, or that carry no readable content,
are quarantined with the reason, never dropped silently.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field

import numpy as np

from serving import config as model_config
from serving import publish
from towers import contract
from towers import features as F

ADD_ITEMS = "add_items"


@dataclass
class AddItemsReport:
    added: list[str] = field(default_factory=list)
    quarantined: list[dict] = field(default_factory=list)  # {item_id, reason}
    versions: dict[str, str] = field(default_factory=dict)  # model -> new version folder
    catalog_size: int = 0
    index_rebuilt: bool = False


def item_fields(roles: F.FeatureRoles) -> dict:
    """What a JSON-lines item may carry, and the JSON type of each field (numbers are written as floats)."""
    fields = {F.ITEM_ID: str, F.ITEM_TEXT: str, **{medium: str for medium in F.RAW_BYTES_FEATURES}}
    fields.update({column: str for column in roles.item_text + roles.item_categorical})
    fields.update({column: list for column in roles.item_multivalued})
    fields.update({column: float for column in roles.item_numeric})
    return fields


def _media(folder: str, relative: str) -> bytes:
    """A media file named relative to the items file's folder: confined to it, a regular file, within the size limit."""
    from towers.encoders import media

    if os.path.isabs(relative):
        raise ValueError("is an absolute path: media paths are relative to the items file's folder")
    root = os.path.realpath(folder)
    target = os.path.realpath(os.path.join(root, relative))
    if os.path.commonpath([root, target]) != root:
        raise ValueError("points outside the items file's folder")
    if not os.path.exists(target):
        raise ValueError("does not exist")
    info = os.stat(target)
    if not stat.S_ISREG(info.st_mode):
        raise ValueError("is not a regular file")
    if info.st_size > media.MAX_MEDIA_BYTES:
        raise ValueError(f"is {info.st_size:,} bytes, over the {media.MAX_MEDIA_BYTES:,}-byte limit")
    with open(target, "rb") as f:
        return f.read(media.MAX_MEDIA_BYTES + 1)


def _json_item(row, folder: str, fields: dict) -> dict:
    """A JSON-lines item, checked field by field (ValueError names the field); media paths replaced by the files' bytes."""
    if not isinstance(row, dict):
        raise ValueError(f"an item is a JSON object, got {type(row).__name__}")
    unknown = sorted(set(row) - set(fields))
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(map(repr, unknown))} (known: {', '.join(fields)})")
    if not isinstance(row.get(F.ITEM_ID), str) or not row[F.ITEM_ID].strip():
        raise ValueError(f"field {F.ITEM_ID!r}: a non-empty string is required")
    item = {}
    for name, value in row.items():
        kind = fields[name]
        if value is None:
            continue
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ValueError(
                f"field {name!r}: expected {'a list of strings' if kind is list else kind.__name__}, got {type(value).__name__} {json.dumps(value)[:40]}"
            )
        if kind is list and not all(isinstance(v, str) for v in value):
            raise ValueError(f"field {name!r}: expected a list of strings")
        if name in F.RAW_BYTES_FEATURES:
            if value:
                try:
                    item[name] = _media(folder, value)
                except (ValueError, OSError) as error:
                    raise ValueError(f"field {name!r}: {value!r} {error}") from None
            continue
        item[name] = value
    return item


def read_items(path: str, roles: F.FeatureRoles) -> tuple[list[bytes], list[dict]]:
    """Serialized catalog tf.Examples from a TFRecord file (.tfrecord, .tfrecord.gz) in the catalog's format,
    or from JSON lines (.jsonl / .json, one object per item: field -> value, fields as in item_fields(roles);
    `image`/`audio`/`video`: a file path relative to the items file's folder, never outside it).

    Returns (records, quarantined): a line that cannot be an item is quarantined with its line number,
    item id (if any) and the field at fault; the other lines are read.

    Raises:
      FileNotFoundError / ValueError: no such file, or a file type it cannot read.
    """
    import tensorflow as tf

    from mmdata.records import to_example

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist or is not a file")
    if path.endswith((".jsonl", ".json")):
        records, quarantined = [], []
        fields = item_fields(roles)
        folder = os.path.dirname(os.path.abspath(path))
        with open(path, encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                row = None
                try:
                    row = json.loads(line)
                    records.append(to_example(_json_item(row, folder, fields)).SerializeToString())
                except (ValueError, RecursionError) as error:
                    item_id = row.get(F.ITEM_ID, "") if isinstance(row, dict) else ""
                    reason = f"not JSON ({error})" if row is None else str(error)
                    quarantined.append({"line": number, "item_id": item_id if isinstance(item_id, str) else "", "reason": reason})
        return records, quarantined
    if path.endswith((".tfrecord", ".tfrecord.gz")):
        compression = "GZIP" if path.endswith(".gz") else ""
        try:
            return list(tf.data.TFRecordDataset(path, compression_type=compression).as_numpy_iterator()), []
        except tf.errors.OpError as error:
            raise ValueError(f"{path} is not a readable TFRecord file: {error.message.splitlines()[0][:200]}") from None
    raise ValueError(
        f"{path}: unsupported file type; items come as JSON lines (.jsonl) or TFRecord (.tfrecord, .tfrecord.gz) in the catalog's format"
    )


def _saver(model):
    """A publish writer saving a loaded (and changed) SavedModel with its signatures."""
    from towers import exporter

    return lambda scratch: exporter.save(model, scratch, dict(model.signatures))


def add_items(
    serving_dir: str, records: list[bytes], encoder_handles: dict[str, str] | None = None, rebuild_index: bool = False, log=print
) -> AddItemsReport:
    """Appends the items in `records` (serialized catalog tf.Examples) to the served recommender and ranker."""
    import tensorflow as tf

    from components.content_embedder import embeddings
    from components.slices import COLD, item_modalities
    from serving.server import load_custom_ops
    from towers.encoders import registry as encoders
    from towers.hparams import SCANN
    from towers.towers import content_profile

    load_custom_ops()
    report = AddItemsReport()
    for line in publish.recover(serving_dir):  # an add-items or push that was cut off leaves nothing half done
        log(line)
    latest = {name: model_config.ready_versions(os.path.join(serving_dir, name)) for name in contract.SERVED_MODELS}
    missing = [name for name, versions in latest.items() if not versions]
    if missing:
        raise FileNotFoundError(f"no pushed {', '.join(missing)} under {serving_dir}: run `mmtower run` first")
    path = {name: os.path.join(serving_dir, name, str(versions[-1])) for name, versions in latest.items()}
    log(f"loading {path[contract.ITEM_ENCODER]} and {path[contract.RECOMMENDER]}")
    item_encoder = tf.saved_model.load(path[contract.ITEM_ENCODER])
    recommender = tf.saved_model.load(path[contract.RECOMMENDER])
    known = {v.decode() for v in recommender.catalog_ids.numpy()}

    fresh, seen_ids = [], set()
    for number, record in enumerate(records, 1):
        try:
            example = tf.train.Example.FromString(record)
            values = example.features.feature[F.ITEM_ID].bytes_list.value
            item_id = values[0].decode() if values else ""
        except (ValueError, UnicodeDecodeError) as error:  # protobuf's DecodeError is a ValueError
            report.quarantined.append({"record": number, "item_id": "", "reason": f"not a catalog tf.Example: {type(error).__name__}"})
            continue
        reason = (
            "no item_id"
            if not item_id
            else "already in the catalog"
            if item_id in known
            else "repeated in the file"
            if item_id in seen_ids
            else None
        )
        if reason:
            report.quarantined.append({"record": number, "item_id": item_id, "reason": reason})
            continue
        seen_ids.add(item_id)
        fresh.append((item_id, record))
    if not fresh:
        log("no new item to add")
        return report

    modalities = [m.decode() for m in item_encoder.content_modalities.numpy()]
    handles = {m: (encoder_handles or {}).get(m) or encoders.local_handle(m) for m in encoders.encoders_for(modalities)}
    log(f"encoding the content of {len(fresh)} items ({', '.join(modalities) or 'no content'}) ...")
    content, problems = embeddings.embed_records([record for _, record in fresh], handles) if modalities else ({}, [])
    for problem in problems:
        report.quarantined.append(
            {"item_id": problem["item_id"], "reason": f"{problem['modality']}: {problem['reason']} (added without it)"}
        )
    ids = [item_id for item_id, _ in fresh]
    # an item without some content gets zeros there, as in training (the tower treats the modality as missing)
    per_modality = {
        m: np.stack([content.get(m, {}).get(i, np.zeros(encoders.content_dim(m), np.float32)) for i in ids]) for m in modalities
    }

    examples = []
    for item_id, record in fresh:
        example = tf.train.Example.FromString(record)
        for m, rows in per_modality.items():
            vector = rows[ids.index(item_id)]
            example.features.feature[F.CONTENT_EMBEDDINGS[m]].float_list.value[:] = vector.tolist()
        examples.append(example.SerializeToString())
    encoded = item_encoder.signatures[contract.EMBED_SIGNATURE](examples=tf.constant(examples))
    embeddings = encoded[contract.EMBEDDINGS_OUTPUT].numpy()

    models = {}
    for name in (contract.RECOMMENDER, contract.RANKER):
        model = recommender if name == contract.RECOMMENDER else tf.saved_model.load(path[name])
        items = {contract.ITEM_IDS_INPUT: tf.constant(ids), contract.EMBEDDINGS_OUTPUT: tf.constant(embeddings)}
        if _takes_content_profile(model):
            profile_modalities = [m.decode() for m in model.profile_modalities.numpy()]
            items[F.CONTENT_PROFILE] = content_profile([per_modality[m] for m in profile_modalities])
        if getattr(model, "catalog_modality_weights", None) is not None:  # what explains the new items' mix
            items[contract.MODALITY_WEIGHTS_OUTPUT] = encoded[contract.MODALITY_WEIGHTS_OUTPUT]
        items[F.ITEM_POPULARITY] = tf.constant([COLD] * len(ids))
        items[F.ITEM_FRESHNESS] = tf.constant([COLD] * len(ids))
        items[F.ITEM_MODALITIES] = tf.constant(item_modalities(ids, content))
        report.catalog_size = int(model.add_items(items))
        if rebuild_index and model.index_type.numpy() == SCANN.encode():
            from towers import scann_index

            scann_index.replace(
                model.scann_index, scann_index.build_searcher(np.asarray(model.catalog_embeddings.numpy(), np.float32), 100)
            )
            model.indexed_items.assign(report.catalog_size)
            report.index_rebuilt = True
        models[name] = model
    # both models, one version, all or nothing (serving.publish): a kill leaves the previous versions served
    version = publish.next_version(serving_dir)
    report.versions = publish.publish(
        serving_dir, version, {name: _saver(model) for name, model in models.items()}, kind=publish.ADD_ITEMS, items=len(ids)
    )
    for name, target in report.versions.items():
        log(f"{name}: version {version} with {report.catalog_size} items at {target}")
    report.added = ids
    return report


def served_features(output: str) -> F.FeatureRoles:
    """The declared features of the dataset whose models were pushed last under `output`."""
    from mmdata.records import Manifest
    from towers.contract import RunPaths

    newest = publish.newest(RunPaths(os.path.abspath(output), "").serving_dir, publish.PUSH)
    if not newest or not newest.get("pipeline"):
        raise FileNotFoundError(f"no pushed model under {output}: run `mmtower run --output {output}` first")
    return Manifest.read(RunPaths(os.path.abspath(output), newest["pipeline"].removeprefix("mmtower-")).data_dir).roles


def _takes_content_profile(model) -> bool:
    """Whether a loaded recommender/ranker's add_items takes content profiles (versions before the projected
    catalog stored the profiles themselves)."""
    dim = getattr(model, "catalog_profile_dim", None)
    return int(dim.numpy()) > 0 if dim is not None else getattr(model, "catalog_content_profile", None) is not None


def main(output: str, path: str, rebuild_index: bool = False, encoder_handles: dict[str, str] | None = None) -> int:
    from towers.contract import RunPaths

    serving_dir = RunPaths(os.path.abspath(output), "").serving_dir
    records, unreadable = read_items(path, served_features(output))
    report = add_items(serving_dir, records, encoder_handles, rebuild_index)
    report.quarantined = unreadable + report.quarantined
    for problem in report.quarantined:
        print(f"  quarantined: {json.dumps(problem)}")
    print(
        f"added {len(report.added)} items ({len(report.quarantined)} quarantined); catalog: {report.catalog_size} items"
        + ("; ScaNN index rebuilt" if report.index_rebuilt else "")
    )
    return 0 if report.added or not report.quarantined else 1
