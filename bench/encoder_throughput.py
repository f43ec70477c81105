"""Benchmark: the ContentEmbedder Beam stage vs calling the same SavedModel directly, per encoder.

For each modality (text, image, audio) both paths embed the same catalog
items with the same encoder handle. The Beam figure is end to end for the
stage (read the gzipped TFRecord, parse, decode, batching, RunInference, join,
serialize, model load included), on the DirectRunner; the direct figure is the encoder called on
ready inputs after loading (text strings and encoded images in batches of
128; audio one decoded 16 kHz waveform per call through the encoder's
TF-Hub signature, which takes rows of one length, so the stage's ratio for
audio includes its decoding and resampling; the stage batches clips of
different lengths through the encoder's `embed_clips`). Bar: Beam >= 0.7x direct.

    .venv/bin/python -m bench.encoder_throughput [--catalog PATH] [--repeat 2]

The default catalog is the tuxpaint one `mmtower run` builds under ./output.
Writes bench/results/encoder_throughput.md.
"""

import argparse
import os
import resource
import sys
import time

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning,ignore::DeprecationWarning")

import apache_beam as beam  # noqa: E402
import tensorflow as tf  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402

from bench import results  # noqa: E402
from components.content_embedder import executor  # noqa: E402
from towers import features as F  # noqa: E402
from towers.encoders import registry  # noqa: E402


def direct(handle: str, batches: list, items: int) -> float:
    """Items/s of the encoder called on ready input batches (traced on the first batch, untimed)."""
    model = registry.load(handle)
    model(tf.constant(batches[0]))
    started = time.perf_counter()
    for batch in batches:
        model(tf.constant(batch)).numpy()
    return items / (time.perf_counter() - started)


def direct_clips(handle: str, clips: list, batch: int = 16) -> float:
    """Clips/s of the audio encoder's `embed_clips` on ready waveforms of different lengths, `batch` per call."""
    model = registry.load(handle)
    executor._embed_clips(model, clips[:batch])  # trace
    started = time.perf_counter()
    for start in range(0, len(clips), batch):
        executor._embed_clips(model, clips[start : start + batch])
    return len(clips) / (time.perf_counter() - started)


def beam_stage(modality: str, handle: str, records: list[bytes], options: list[str]) -> float:
    """Items/s of the ContentEmbedder's Beam stage for one modality, reading a gzipped TFRecord file as the component does.

    (Feeding the records through beam.Create instead costs the in-memory
    DirectRunner dearly when they carry photo and sound bytes: 43 vs 124
    text items/s on the tuxpaint catalog.)
    """
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "catalog.tfrecord.gz")
        with tf.io.TFRecordWriter(path, options="GZIP") as writer:
            for record in records:
                writer.write(record)
        started = time.perf_counter()
        with beam.Pipeline(options=PipelineOptions(options)) as p:
            embedded, _ = executor.embed_items(p | beam.Create([path]) | beam.io.ReadAllFromTFRecord(), {modality: handle})
            _ = embedded | beam.combiners.Count.Globally()
        return len(records) / (time.perf_counter() - started)


def _bytes(record: bytes, name: str) -> bytes:
    values = tf.train.Example.FromString(record).features.feature[name].bytes_list.value
    return values[0] if values else b""


def direct_batches(modality: str, records: list[bytes]) -> list:
    """The encoder's ready inputs for `records`, batched as the stage batches them."""
    if modality == "audio":  # one decoded 16 kHz clip per call
        return [executor.decode_audio(_bytes(r, F.AUDIO))[None, :] for r in records]
    inputs = [_bytes(r, F.ITEM_TEXT).decode() for r in records] if modality == "text" else [_bytes(r, F.IMAGE) for r in records]
    return [inputs[start : start + 128] for start in range(0, len(inputs), 128)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--catalog", default="output/data/tuxpaint/catalog/catalog.tfrecord.gz")
    parser.add_argument("--repeat", type=int, default=2, help="repeat the catalog to get a longer run")
    args = parser.parse_args()
    catalog = list(tf.data.TFRecordDataset(args.catalog, compression_type="GZIP").as_numpy_iterator())
    feature = {"text": F.ITEM_TEXT, "image": F.IMAGE, "audio": F.AUDIO}
    notes = []
    lines = [
        f"# Encoder throughput: Beam stage vs direct SavedModel call ({os.cpu_count()} cores, {time.strftime('%Y-%m-%d')})",
        "",
        f"Catalog: {args.catalog}, repeated {args.repeat}x.",
        "",
        "| encoder | items | direct items/s | Beam in_memory items/s (ratio) | Beam multi_processing x2 items/s (ratio) |",
        "|---|---|---|---|---|",
    ]
    for modality, name in feature.items():
        records = [r for r in catalog if _bytes(r, name)] * args.repeat
        if not records:
            continue
        handle = registry.local_handle(modality)
        rate = direct(handle, direct_batches(modality, records), len(records))
        if modality == "audio":  # the ratio is taken against the faster of the two direct calls
            batched = direct_clips(handle, [batch[0] for batch in direct_batches(modality, records)])
            notes.append(
                f"Audio direct: {rate:,.1f} clips/s one clip per call (the TF-Hub signature), {batched:,.1f} clips/s through "
                "`embed_clips` in batches of 16 (the network over all their patches at once)."
            )
            rate = max(rate, batched)
        in_memory = beam_stage(modality, handle, records, ["--direct_running_mode=in_memory", "--direct_num_workers=1"])
        multi = beam_stage(modality, handle, records, ["--direct_running_mode=multi_processing", "--direct_num_workers=2"])
        lines.append(
            f"| {modality} | {len(records):,} | {rate:,.1f} | {in_memory:,.1f} ({in_memory / rate:.2f}x) | {multi:,.1f} ({multi / rate:.2f}x) |"
        )
        print(lines[-1], flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lines += [""] + notes
    lines += [
        "",
        f"Peak RSS of the bench process: {peak:,.0f} MiB (worker processes not included).",
        "",
        f"Command: `.venv/bin/python -m bench.encoder_throughput --catalog {args.catalog} --repeat {args.repeat}`",
    ]
    results.write("encoder_throughput", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
