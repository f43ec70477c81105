"""Benchmark: the ContentEmbedder Beam stage vs calling the same SavedModel directly.

Both embed the same catalog item texts with the same encoder handle. The Beam
figure is end to end for the stage (parse, batching, RunInference, serialize,
model load included), on the DirectRunner; the direct figure is the encoder
called in batches of 128 after loading. Bar: Beam >= 0.7x direct.

    .venv/bin/python -m bench.encoder_throughput [--catalog PATH] [--repeat 3]

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



def direct(handle: str, texts: list[str], batch: int = 128) -> float:
    model = registry.load(handle)
    model(tf.constant(texts[:batch]))  # trace once, as RunInference's first batch would
    started = time.perf_counter()
    for start in range(0, len(texts), batch):
        model(tf.constant(texts[start : start + batch])).numpy()
    return len(texts) / (time.perf_counter() - started)


def beam_stage(handle: str, records: list[bytes], options: list[str]) -> float:
    started = time.perf_counter()
    with beam.Pipeline(options=PipelineOptions(options)) as p:
        embedded, _ = executor.embed_items(p | beam.Create(records), handle)
        _ = embedded | beam.combiners.Count.Globally()
    return len(records) / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--catalog", default="output/data/movielens-100k/catalog/catalog.tfrecord.gz")
    parser.add_argument("--repeat", type=int, default=3, help="repeat the catalog to get a longer run")
    args = parser.parse_args()
    handle = registry.local_handle("text")
    records = list(tf.data.TFRecordDataset(args.catalog, compression_type="GZIP").as_numpy_iterator()) * args.repeat
    texts = [tf.train.Example.FromString(r).features.feature[F.ITEM_TEXT].bytes_list.value[0].decode() for r in records]
    rows = [("direct SavedModel call (batch 128)", direct(handle, texts))]
    for label, options in [
        ("Beam DirectRunner in_memory", ["--direct_running_mode=in_memory", "--direct_num_workers=1"]),
        ("Beam DirectRunner multi_processing x2", ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]),
    ]:
        rows.append((label, beam_stage(handle, records, options)))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    base = rows[0][1]
    lines = [f"# Text encoder throughput ({len(records):,} items, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')})", "",
             "| path | items/s | ratio to direct |", "|---|---|---|"]
    lines += [f"| {label} | {rate:,.0f} | {rate / base:.2f}x |" for label, rate in rows]
    lines += ["", f"Peak RSS of the bench process: {peak:,.0f} MiB (worker processes not included)."]
    results.write("encoder_throughput", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
