"""A data contract's dataset built by an Apache Beam pipeline: the files `files.load` + `records.write_dataset` write.

`build(contract, data_dir, beam_args)` writes, for the temporal split with one
span, the same files with the same records (the order of records within a file
may differ) as

    records.write_dataset(name, contract.roles, data_dir, *files.load(contract), ...split settings...)

but without ever holding all events in one process (on a distributed runner:
DataflowRunner / FlinkRunner, gs:// paths through apache_beam.io and tf.io.gfile).

What must fit in one worker's memory, and what does not have to:

- the items and users tables (the catalog, with its media, and the user
  attributes): read whole by one worker (files.read_items / files.read_users)
  and used as side inputs. Assumed small next to the events.
- the events never: they are streamed from the file, validated row by row and
  grouped by user. One user's events are held at a time (to sort them by time
  for the histories): a user with millions of events would need them in memory.
- the global steps hold small summaries only:
  * the eval cutoff: events are counted per timestamp (CombinePerKey) and the
    counts gathered into one dict; the exact "lower" quantile (the one
    records.temporal_cutoff takes with numpy) is picked from the sorted distinct
    timestamps and their cumulative counts. The dict has one entry per distinct
    second, bounded by the time range the events span (a year: at most 31.5M),
    not by the number of events.
  * the new items: the sorted distinct items of the eval period (at most the
    catalog) -> records.pick_cold_items, the same seeded draw.
  * the validation cutoff: the same per-timestamp counts over the training
    period once the new items' earlier events are removed (as write_dataset
    does: hold_out_items before the validation cutoff is taken), then the
    validation period's own new items (seed 8).
  * per split counts, the latest training timestamp, the users seen and the
    quarantine counts by field: combiners.

Reading: the events file is matched with apache_beam.io.fileio.MatchFiles and read
as one element by one worker, with Python's csv module (CSV), line by line (JSON
lines) or with tf.data (TFRecord), so that every row keeps its line / record
number for the quarantine (ReadFromText and ReadFromTFRecord split files but lose
the line numbers). A Parquet file is split into its row groups, read in parallel;
their record numbers follow from the row groups' sizes. One large CSV file is thus
read by one worker, streaming (memory does not grow with it); the row checks are
fused with the reading, the steps after the first grouping run in parallel.

Writing: each output file has the one name write_dataset gives it (e.g.
examples/span-1/train/data.tfrecord.gz), so each is written by one worker,
streaming. ExampleGen's pattern (span-N/<split>/*) would take sharded files too.

Outputs are written under `<data_dir>/_building-<id>/` and moved into `data_dir`
at the end, manifest.json last (the old one is removed first): a build killed
midway leaves either the previous dataset with its manifest or no manifest (which
`registry.build` takes as "build again"), never a manifest beside half a dataset.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from dataclasses import asdict

import apache_beam as beam
import numpy as np

from mmdata import files
from mmdata.contract import CSV, JSONL, PARQUET, TFRECORD, ContractError, DataContract, file_format, iter_csv, short
from mmdata.records import TEMPORAL, Manifest, QuarantinedRow, pick_cold_items, to_example
from towers import features as F
from towers.contract import (
    CATALOG_FILE,
    COLD_ITEMS_FILE,
    EVAL_SPLIT,
    EXAMPLES_DIR,
    MANIFEST_FILE,
    QUARANTINE_FILE,
    RECORD_FILE,
    SPAN_DIR,
    TRAIN_SPLIT,
    USERS_FILE,
    VALIDATION_COLD_ITEMS_FILE,
    VALIDATION_SPLIT,
)

BUILDING_PREFIX = "_building-"  # the temporary folder inside data_dir
STATS_FILE = "_stats.json"  # the pipeline's small results, read back by the driver (not part of the dataset)
SPAN = 1  # one span: the whole event log
QUARANTINE = "quarantine"  # tagged outputs
EVENTS = "events"

# Event tuples: (user, item, timestamp, rating, line).
USER, ITEM, TIME, RATING, LINE = range(5)


def lower_quantile(counts: dict[int, int], q: float) -> int:
    """np.quantile(timestamps, q, method="lower") from the number of events at each timestamp.

    numpy's "lower" takes the element at index floor((n - 1) * q) of the sorted values; the
    cumulative counts of the sorted distinct timestamps say which timestamp sits there.
    """
    if not counts:
        raise ValueError("no events to take a quantile of")
    n = sum(counts.values())
    index = min(max(int(np.floor((n - 1) * np.float64(q))), 0), n - 1)
    seen = 0
    for timestamp in sorted(counts):
        seen += counts[timestamp]
        if seen > index:
            return int(timestamp)
    raise AssertionError("unreachable")


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 < value < 1.0:  # records.temporal_cutoff's check, made before anything runs
        raise ValueError(f"{name} must be in (0, 1), got {value}")


# --- Reading --------------------------------------------------------------------------------------------------


def read_small_tables(contract: DataContract, upstream: tuple[QuarantinedRow, ...] = ()) -> dict:
    """The catalog and the users file (files.read_items / read_users), as plain rows, with their quarantine rows.

    Returns {"catalog": [row], "users": [row], "quarantine": [(order, QuarantinedRow)]}; `order` sorts
    quarantine rows as files.load appends them (items, then users, then events, then missing users),
    after `upstream` (rows a built-in dataset's loader quarantined before it wrote the files).
    """
    quarantined: list[QuarantinedRow] = list(upstream)
    catalog = files.read_items(contract.items, quarantined)
    items_count = len(quarantined)
    users = files.read_users(contract.users, quarantined, contract.privacy_key).to_dict("records") if contract.users else []
    users = [row for row in users if row[F.USER_ID] not in contract.forgotten]  # `mmtower forget`
    order = [(-1 if i < len(upstream) else 0 if i < items_count else 1, i, 0, 0) for i in range(len(quarantined))]
    return {"catalog": catalog.to_dict("records"), "users": users, "quarantine": list(zip(order, quarantined))}


def _csv_rows(path: str, columns: tuple[str, ...]):
    """(line, {column: text}) of each well-formed row, or (line, reason, raw) of a row with the wrong number of fields.

    The same rows, lines and reasons as contract._read_csv, streamed instead of read whole.
    """
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
        records = iter_csv(stream, path)
        header = next(records)
        positions = [header.index(column) for column in columns]  # contract.load checked they exist
        for record in records:
            if len(record) == 2:
                line, fields = record
                yield line, {column: fields[i] for column, i in zip(columns, positions)}
            else:
                yield record


def _jsonl_rows(path: str, columns: tuple[str, ...]):
    """contract._read_jsonl, streamed: (line, values) or (line, reason, raw)."""
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    bad, good = None, False
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
        for number, raw in enumerate(stream, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except ValueError as error:
                bad = bad or (number, f"not a JSON line ({type(error).__name__}); row dropped")
                yield number, f"not a JSON line ({type(error).__name__}); row dropped", short(raw[:60])
                continue
            if not isinstance(record, dict):
                bad = bad or (number, "not a JSON object; row dropped")
                yield number, "not a JSON object; row dropped", short(record)
                continue
            good = True
            yield number, {column: record.get(column) for column in columns}
    if bad and not good:
        raise ContractError(f"{path}: not a JSON lines file (line {bad[0]}: {bad[1]})")


def _tfrecord_rows(path: str, columns: tuple[str, ...]):
    """contract._read_tfrecord, streamed: (record number, values)."""
    import tensorflow as tf
    from google.protobuf.message import DecodeError

    compression = "GZIP" if path.lower().endswith(".gz") else ""
    try:
        for number, raw in enumerate(tf.data.TFRecordDataset(path, compression_type=compression).as_numpy_iterator(), start=1):
            features = tf.train.Example.FromString(raw).features.feature
            values = {}
            for column in columns:
                if column not in features:
                    values[column] = None
                    continue
                feature = features[column]
                kind = feature.WhichOneof("kind")
                found = list(getattr(feature, kind).value) if kind else []
                found = [v.decode("utf-8", errors="replace") if isinstance(v, bytes) else v for v in found]
                values[column] = None if not found else found[0] if len(found) == 1 else found
            yield number, values
    except (tf.errors.OpError, DecodeError) as error:
        message = getattr(error, "message", str(error)).split(" [Op:")[0]
        raise ContractError(f"{path}: not a readable TFRecord file of tf.Example: {type(error).__name__}: {message}") from None


def _parquet_row_groups(path: str):
    """(path, row group, its first record number) of each row group of a Parquet file."""
    import pyarrow.parquet as pq
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path) as stream:
        metadata = pq.ParquetFile(stream).metadata
    first = 1
    for group in range(metadata.num_row_groups):
        yield path, group, first
        first += metadata.row_group(group).num_rows


def _parquet_rows(part: tuple[str, int, int], columns: tuple[str, ...]):
    """(record number, values) of one row group (pyarrow's Python values, as contract._read_parquet gives)."""
    import pyarrow.parquet as pq
    from apache_beam.io.filesystems import FileSystems

    path, group, first = part
    with FileSystems.open(path) as stream:
        table = pq.ParquetFile(stream).read_row_group(group, columns=list(dict.fromkeys(columns))).to_pydict()
    for offset, values in enumerate(zip(*(table[column] for column in columns))):
        yield first + offset, dict(zip(columns, values))


# --- The pipeline ---------------------------------------------------------------------------------------------


def _pipeline(p, contract: DataContract, out: str, upstream: tuple[QuarantinedRow, ...] = ()) -> None:
    """Adds every step to pipeline `p`, writing under `out`."""
    from apache_beam import pvalue
    from apache_beam.io import fileio
    from apache_beam.io.filesystem import CompressionTypes

    spec, roles, split = contract.events, contract.roles, contract.split
    source, items_file = os.path.basename(spec.path), os.path.basename(contract.items.path)
    columns = tuple(dict.fromkeys(filter(None, (spec.user, spec.item, spec.timestamp, spec.rating))))
    unknown_user = {column: "" for column in roles.user_categorical} | {column: math.nan for column in roles.user_numeric}

    def write_records(pcoll, relative: str, label: str):
        return pcoll | label >> beam.io.WriteToTFRecord(
            os.path.join(out, relative), shard_name_template="", compression_type=CompressionTypes.GZIP
        )

    # The small tables: one element, read by one worker, used as side inputs.
    small = p | "Contract" >> beam.Create([contract]) | "ReadItemsAndUsers" >> beam.Map(read_small_tables, tuple(upstream))
    item_ids = small | "ItemIds" >> beam.Map(lambda t: {row[F.ITEM_ID] for row in t["catalog"]})
    item_features = small | "ItemFeatures" >> beam.Map(
        lambda t: {r[F.ITEM_ID]: {c: r[c] for c in roles.item_features} for r in t["catalog"]}
    )
    user_features = small | "UserFeatures" >> beam.Map(lambda t: {r[F.USER_ID]: {c: r[c] for c in roles.user_features} for r in t["users"]})

    # The events: read per file (Parquet: per row group), each row checked.
    kind = file_format(spec.path)
    paths = p | "MatchEvents" >> fileio.MatchFiles(spec.path) | "EventPaths" >> beam.Map(lambda metadata: metadata.path)
    if kind == PARQUET:
        parts = paths | "RowGroups" >> beam.FlatMap(_parquet_row_groups) | "SpreadRowGroups" >> beam.Reshuffle()
        rows = parts | "ReadParquet" >> beam.FlatMap(_parquet_rows, columns)
    else:
        readers = {CSV: _csv_rows, JSONL: _jsonl_rows, TFRECORD: _tfrecord_rows}
        rows = paths | f"Read{kind.upper()}" >> beam.FlatMap(readers[kind], columns)

    def check(row, items):
        if len(row) == 3:  # a row that could not be read at all
            line, reason, raw = row
            raw = "" if contract.privacy_key is not None else raw  # it may hold a user's raw id
            yield pvalue.TaggedOutput(QUARANTINE, ((2, 0, line, 0), QuarantinedRow(source, line, files.ROW_FIELD, reason, raw)))
            return
        event, problems = files.check_event(spec, items, items_file, source, *row, key=contract.privacy_key)
        for k, problem in enumerate(problems):
            yield pvalue.TaggedOutput(QUARANTINE, ((2, 1, problem.line, k), problem))
        if event is not None and event[USER] not in contract.forgotten:  # `mmtower forget`: left out
            yield event

    checked = rows | "CheckEvents" >> beam.FlatMap(check, items=pvalue.AsSingleton(item_ids)).with_outputs(QUARANTINE, main=EVENTS)
    events = checked[EVENTS]

    # Users in the events but not in the users file: added with unknown attributes (quarantined, kept, when there is a users file).
    per_user = (
        events
        | "UserCountAndFirstLine" >> beam.Map(lambda e: (e[USER], (1, e[LINE])))
        | "SumPerUser" >> beam.CombinePerKey(_count_and_first_line)
    )

    def missing_user(entry, users):
        user, (count, first_line) = entry
        if user in users:
            return
        yield user, {F.USER_ID: user, **unknown_user}
        if contract.users:
            users_file = os.path.basename(contract.users.path)
            reason = f"user {user!r} is not in {users_file}: events kept ({count}), the user's attributes unknown"
            row = QuarantinedRow(source, first_line, spec.user, reason, short(user), True)
            yield pvalue.TaggedOutput(QUARANTINE, ((3, 0, user, 0), row))

    missing = per_user | "MissingUsers" >> beam.FlatMap(missing_user, users=pvalue.AsSingleton(user_features)).with_outputs(
        QUARANTINE, main="users"
    )

    # The global cutoffs and new items, each a one-element side input.
    def timestamp_counts(pcoll, label):
        return (
            pcoll
            | f"{label}Timestamps" >> beam.Map(lambda e: (e[TIME], 1))
            | f"{label}PerTimestamp" >> beam.CombinePerKey(sum)
            | f"{label}Counts" >> beam.combiners.ToDict()
        )

    def distinct_items(pcoll, label):
        return (
            pcoll
            | f"{label}Items" >> beam.Map(lambda e: e[ITEM])
            | f"{label}Distinct" >> beam.Distinct()
            | f"{label}ItemList" >> beam.combiners.ToList()
        )

    def pick(items, fraction, seed):
        import pandas as pd

        return pick_cold_items(pd.DataFrame({F.ITEM_ID: pd.Series(sorted(items), dtype=object)}), fraction, seed=seed)

    cutoff = timestamp_counts(events, "All") | "EvalCutoff" >> beam.Map(lower_quantile, 1.0 - split.eval_fraction)
    cold = (
        distinct_items(events | "EvalPeriod" >> beam.Filter(lambda e, c: e[TIME] > c, pvalue.AsSingleton(cutoff)), "Eval")
        | "PickColdItems" >> beam.Map(pick, split.cold_items, 7)
        | "ColdSet" >> beam.Map(set)
    )
    training_period = events | "TrainingPeriod" >> beam.Filter(
        lambda e, c, cold: e[TIME] <= c and e[ITEM] not in cold, pvalue.AsSingleton(cutoff), pvalue.AsSingleton(cold)
    )
    validation_cutoff = timestamp_counts(training_period, "Training") | "ValidationCutoff" >> beam.Map(
        lower_quantile, 1.0 - split.validation_fraction
    )
    validation_cold = distinct_items(
        training_period | "ValidationPeriod" >> beam.Filter(lambda e, v: e[TIME] > v, pvalue.AsSingleton(validation_cutoff)),
        "Validation",
    ) | "PickValidationColdItems" >> beam.Map(pick, split.cold_items, 8)

    def make_plan(validation_cold, cutoff, cold, validation_cutoff):
        return {"cutoff": cutoff, "cold": sorted(cold), "validation_cutoff": validation_cutoff, "validation_cold": validation_cold}

    plan = validation_cold | "Plan" >> beam.Map(
        make_plan, pvalue.AsSingleton(cutoff), pvalue.AsSingleton(cold), pvalue.AsSingleton(validation_cutoff)
    )

    # The new items' events before their period removed (hold_out_items), then per user: histories and splits.
    kept = events | "HoldOutNewItems" >> beam.ParDo(_HoldOut(), pvalue.AsSingleton(plan))

    def user_examples(entry, plan, users, items):
        """add_history for one user (sorted by time, then item), each event's split, and the user's latest items."""
        user, user_events = entry
        ordered = sorted(user_events, key=lambda e: (e[TIME], e[ITEM]))
        sequence = [e[ITEM] for e in ordered]
        attributes = users.get(user, unknown_user)
        start, train_until = 0, None
        for i, (_, item, timestamp, rating, _) in enumerate(ordered):
            if timestamp != ordered[start][TIME]:
                start = i
            row = {F.USER_ID: user, F.ITEM_ID: item, F.TIMESTAMP: timestamp, F.RATING: rating, **attributes, **items[item]}
            row[F.HISTORY] = sequence[max(0, start - F.HISTORY_LENGTH) : start]
            if timestamp > plan["cutoff"]:
                name = EVAL_SPLIT
            elif timestamp > plan["validation_cutoff"]:
                name = VALIDATION_SPLIT
            else:
                name, train_until = TRAIN_SPLIT, timestamp if train_until is None else max(train_until, timestamp)
            yield pvalue.TaggedOutput(name, to_example(row).SerializeToString())
        yield pvalue.TaggedOutput("latest", (user, sequence[-F.HISTORY_LENGTH :]))
        if train_until is not None:
            yield pvalue.TaggedOutput("train_until", train_until)

    examples = (
        kept
        | "ByUser" >> beam.Map(lambda e: (e[USER], e))
        | "GroupByUser" >> beam.GroupByKey()
        | "Histories"
        >> beam.FlatMap(
            user_examples, pvalue.AsSingleton(plan), pvalue.AsSingleton(user_features), pvalue.AsSingleton(item_features)
        ).with_outputs(TRAIN_SPLIT, VALIDATION_SPLIT, EVAL_SPLIT, "latest", "train_until")
    )
    span = SPAN_DIR.replace("{SPAN}", str(SPAN))
    for name in (TRAIN_SPLIT, VALIDATION_SPLIT, EVAL_SPLIT):
        write_records(examples[name], os.path.join(EXAMPLES_DIR, span, name, RECORD_FILE), f"Write{name.title()}")

    # The catalog, and the users with their latest items (latest_history).
    catalog = small | "CatalogRows" >> beam.FlatMap(lambda t: t["catalog"]) | "CatalogExamples" >> beam.Map(_serialize)
    write_records(catalog, CATALOG_FILE, "WriteCatalog")
    listed = small | "UserRows" >> beam.FlatMap(lambda t: [(row[F.USER_ID], row) for row in t["users"]])
    users = (
        {"row": (listed, missing["users"]) | "AllUsers" >> beam.Flatten(), "latest": examples["latest"]}
        | "JoinLatest" >> beam.CoGroupByKey()
        | "UsersWithHistory"
        >> beam.FlatMap(lambda entry: [{**row, F.HISTORY: next(iter(entry[1]["latest"]), [])} for row in entry[1]["row"]])
        | "UserExamples" >> beam.Map(_serialize)
    )
    write_records(users, USERS_FILE, "WriteUsers")

    # The quarantine, and its counts by field in the order files.load meets them.
    quarantine = (
        small | "SmallQuarantine" >> beam.FlatMap(lambda t: t["quarantine"]),
        checked[QUARANTINE],
        missing[QUARANTINE],
    ) | "AllQuarantine" >> beam.Flatten()
    _ = (
        quarantine
        | "QuarantineJson" >> beam.Map(lambda entry: json.dumps(asdict(entry[1])))
        | "WriteQuarantine" >> beam.io.WriteToText(os.path.join(out, QUARANTINE_FILE), shard_name_template="")
    )
    by_field = (
        quarantine
        | "FieldOrder" >> beam.Map(lambda entry: (entry[1].field, (entry[0], 1)))
        | "PerField" >> beam.CombinePerKey(lambda pairs: _first_and_count(pairs))
        | "FieldList" >> beam.combiners.ToList()
        | "ByField" >> beam.Map(lambda fields: {field: count for field, (_, count) in sorted(fields, key=lambda f: f[1][0])})
    )

    # The small results the manifest needs, and the new items' files.
    def count(pcoll, label):
        return pcoll | f"Count{label}" >> beam.combiners.Count.Globally()

    stats = {
        "num_train": count(examples[TRAIN_SPLIT], "Train"),
        "num_validation": count(examples[VALIDATION_SPLIT], "Validation"),
        "num_eval": count(examples[EVAL_SPLIT], "Eval"),
        "num_users": count(examples["latest"], "Users"),
        "num_items": count(catalog, "Items"),
        "num_quarantined": count(quarantine, "Quarantined"),
        "train_until": examples["train_until"]
        | "TrainUntil" >> beam.CombineGlobally(lambda times: max((t for t in times if t is not None), default=None)),
        "quarantined_by_field": by_field,
    }

    def write_stats(plan, **values):
        _write_text(os.path.join(out, COLD_ITEMS_FILE), "".join(f"{item}\n" for item in plan["cold"]))
        _write_text(os.path.join(out, VALIDATION_COLD_ITEMS_FILE), "".join(f"{item}\n" for item in plan["validation_cold"]))
        _write_text(os.path.join(out, STATS_FILE), json.dumps({**plan, **values}))

    _ = plan | "WriteStats" >> beam.Map(write_stats, **{name: pvalue.AsSingleton(value) for name, value in stats.items()})


class _HoldOut(beam.DoFn):
    """hold_out_items twice: drops a new item's events up to its period's cutoff (the eval's, then the validation's)."""

    def process(self, event, plan):
        if getattr(self, "_plan", None) is not plan:  # the side input's sets, built once per plan object
            self._plan = plan
            self._held = (set(plan["cold"]), plan["cutoff"], set(plan["validation_cold"]), plan["validation_cutoff"])
        cold, cutoff, validation_cold, validation_cutoff = self._held
        item, timestamp = event[ITEM], event[TIME]
        if not ((item in cold and timestamp <= cutoff) or (item in validation_cold and timestamp <= validation_cutoff)):
            yield event


def _count_and_first_line(pairs) -> tuple[int, int]:
    """(events, first line) of one user from (1, line) pairs or partial results (a CombineFn)."""
    pairs = list(pairs)
    return sum(count for count, _ in pairs), min(line for _, line in pairs)


def _first_and_count(pairs) -> tuple:
    """(the smallest order key, the number of rows) of one field's quarantine rows (a CombineFn over partial results too)."""
    pairs = list(pairs)
    return min(key for key, _ in pairs), sum(n for _, n in pairs)


def _serialize(row: dict) -> bytes:
    return to_example(row).SerializeToString()


def _write_text(path: str, text: str) -> None:
    import tensorflow as tf

    with tf.io.gfile.GFile(path, "w") as f:
        f.write(text)


# --- Building -------------------------------------------------------------------------------------------------


def build(
    contract: DataContract,
    data_dir: str,
    beam_args: list[str] | None = None,
    upstream: tuple[QuarantinedRow, ...] = (),
    source: str | None = None,
    pipeline: beam.Pipeline | None = None,
    pseudonym_key_id: str = "",
) -> Manifest:
    """Builds a contract's dataset into `data_dir` with Beam: the files write_dataset writes (temporal split, one span).

    Args:
      contract: a contract from mmdata.contract.load (its split settings are used).
      data_dir: the output folder (local or gs://); files of an earlier build there are replaced, others kept.
      beam_args: Beam pipeline options, e.g. ["--runner=DataflowRunner", "--project=...", "--temp_location=gs://..."]
        (None: the DirectRunner's defaults).
      upstream: rows quarantined before the files were written (a built-in dataset's loader), listed first.
      source: what the manifest records as the build's source (default: the contract's fingerprint).
      pipeline: a Beam pipeline to run it in instead (a TFX component's, built from the pipeline's Beam
        options; beam_args is then unused); it is run here.
      pseudonym_key_id: recorded in the manifest: the user ids are pseudonyms (contract.privacy_key's, or the
        files already held pseudonyms).

    Returns:
      The Manifest, as write_dataset returns it.
    """
    import tensorflow as tf
    from apache_beam.options.pipeline_options import PipelineOptions

    split = contract.split
    _check_fraction("eval_fraction", split.eval_fraction)
    _check_fraction("validation_fraction", split.validation_fraction)
    gfile = tf.io.gfile
    gfile.makedirs(data_dir)
    for name in gfile.listdir(data_dir):  # a killed build's leftovers
        if name.rstrip("/").startswith(BUILDING_PREFIX):
            gfile.rmtree(os.path.join(data_dir, name.rstrip("/")))
    out = os.path.join(data_dir, BUILDING_PREFIX + uuid.uuid4().hex[:12])
    gfile.makedirs(out)
    with pipeline or beam.Pipeline(options=PipelineOptions(beam_args or [])) as p:
        _pipeline(p, contract, out, upstream)
    with gfile.GFile(os.path.join(out, STATS_FILE)) as f:
        stats = json.load(f)
    gfile.remove(os.path.join(out, STATS_FILE))
    manifest = Manifest(
        dataset=contract.dataset,
        cutoff_timestamp=stats["cutoff"],
        eval_fraction=split.eval_fraction,
        num_train=stats["num_train"],
        num_eval=stats["num_eval"],
        validation_fraction=split.validation_fraction,
        num_validation=stats["num_validation"],
        num_items=stats["num_items"],
        num_users=stats["num_users"],
        num_quarantined=stats["num_quarantined"],
        max_users=None,
        cold_item_fraction=split.cold_items,
        num_cold_items=len(stats["cold"]),
        num_validation_cold_items=len(stats["validation_cold"]),
        split=TEMPORAL,
        quarantined_by_field=stats["quarantined_by_field"],
        spans=1,
        span_train_until=[stats["train_until"]],
        span_sizes=[[stats["num_train"], stats["num_validation"], stats["num_eval"]]],
        features=json.loads(contract.roles.to_json()),
        source=contract.fingerprint() if source is None else source,
        pseudonym_key_id=pseudonym_key_id,
    )
    with gfile.GFile(os.path.join(out, MANIFEST_FILE), "w") as f:
        json.dump(asdict(manifest), f, indent=2)
    _commit(out, data_dir)
    return manifest


def _commit(out: str, data_dir: str) -> None:
    """Moves the built files from `out` into `data_dir`: the old manifest removed first, the new one moved last."""
    import tensorflow as tf

    gfile = tf.io.gfile
    manifest = os.path.join(data_dir, MANIFEST_FILE)
    if gfile.exists(manifest):
        gfile.remove(manifest)
    names = sorted((name.rstrip("/") for name in gfile.listdir(out)), key=lambda name: name == MANIFEST_FILE)
    for name in names:
        target = os.path.join(data_dir, name)
        if gfile.isdir(target):
            gfile.rmtree(target)  # an earlier build's spans would be ingested (as write_dataset removes examples/)
        elif gfile.exists(target):
            gfile.remove(target)
        gfile.rename(os.path.join(out, name), target)
    gfile.rmtree(out)
