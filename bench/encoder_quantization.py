"""Benchmark: float16 and int8 (dynamic-range) TFLite variants of the content encoders vs the float32 SavedModel.

For the text encoder (MiniLM: token ids -> 384) and the image encoder
(EfficientNet-Lite0: pixels -> 1,280), the network part (after tokenizing /
decoding, which stay in TF either way) is converted with TF's TFLite converter
(TFLite builtins, TF ops where none exists: the Flex delegate TF's pip package
carries) at float32, float16 weights and int8 dynamic-range weights, and run
with tf.lite.Interpreter on the catalog's own items. Per variant: size on
disk, load time, throughput on the same batches (interleaved with the
SavedModel, batch by batch), the cosine of each embedding to the float32
SavedModel's, and how many of each item's 10 nearest catalog neighbours by
content (what content kNN, the item graph's content edges and a new item's
tower input read) stay the same (neighbour recall@10 against float32).

    .venv/bin/python -m bench.encoder_quantization [--catalog PATH] [--threads 2]

The default catalog is the tuxpaint one `mmtower run` builds under ./output.
Writes bench/results/encoder_quantization.md.
"""

import argparse
import os
import sys
import tempfile
import time

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench import results  # noqa: E402
from bench.encoder_throughput import _bytes  # noqa: E402
from towers import features as F  # noqa: E402
from towers.encoders import image_efficientnet, registry, text_minilm  # noqa: E402
from towers.encoders.lite import Runner, convert  # noqa: E402

PRECISIONS = ("float32", "float16", "int8")
BATCH = 32


def _size_mib(path: str) -> float:
    if os.path.isfile(path):
        return os.path.getsize(path) / 2**20
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names) / 2**20


def network(modality: str, records: list[bytes]):
    """(the encoder's network as a concrete function, the module holding its weights, its ready inputs [items, ...])."""
    if modality == "text":
        encoder = text_minilm.build()
        texts = [_bytes(r, F.ITEM_TEXT).decode() for r in records]
        ids = encoder.token_ids(tf.constant(texts)).numpy()
        function = tf.function(encoder.embed_ids, input_signature=[tf.TensorSpec([None, None], tf.int64, name="ids")])
        return function.get_concrete_function(), encoder, ids
    encoder = image_efficientnet.build()
    pixels = np.stack([image_efficientnet.decode_image(tf.constant(_bytes(r, F.IMAGE))).numpy() for r in records])
    return encoder.embed_pixels.get_concrete_function(), encoder, pixels


def neighbour_recall(reference: np.ndarray, other: np.ndarray, k: int = 10) -> float:
    """Mean share of each item's k nearest neighbours (cosine, itself excluded) under `reference` kept under `other`."""

    def top(embeddings):
        unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
        similarity = unit @ unit.T
        np.fill_diagonal(similarity, -np.inf)
        return np.argsort(-similarity, axis=1)[:, :k]

    a, b = top(reference), top(other)
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(a, b)]))


def modality_rows(modality: str, records: list[bytes], threads: int, rounds: int) -> list[str]:
    function, module, inputs = network(modality, records)
    batches = [inputs[start : start + BATCH] for start in range(0, len(inputs), BATCH)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        saved = os.path.join(tmp, "saved_model")
        tf.saved_model.save(module, saved, signatures={"network": function})
        started = time.perf_counter()
        loaded = tf.saved_model.load(saved).signatures["network"]
        saved_load = time.perf_counter() - started
        name = next(iter(loaded.structured_input_signature[1]))

        def call_saved(batch):
            return next(iter(loaded(**{name: tf.constant(batch)}).values())).numpy()

        reference = np.concatenate([call_saved(b) for b in batches])
        variants = {}
        for precision in PRECISIONS:
            path = os.path.join(tmp, f"{modality}-{precision}.tflite")
            with open(path, "wb") as f:
                f.write(convert(function, module, precision))
            started = time.perf_counter()
            lite = Runner(path, threads)
            lite(batches[0])
            variants[precision] = (path, lite, time.perf_counter() - started)
        # throughput: every path on the same batch in turn, `rounds` times (the machine's load hits all alike)
        seconds = {"saved": 0.0, **{p: 0.0 for p in PRECISIONS}}
        outputs = {p: [] for p in PRECISIONS}
        for round_ in range(rounds):
            for batch in batches:
                started = time.perf_counter()
                call_saved(batch)
                seconds["saved"] += time.perf_counter() - started
                for precision, (_, lite, _) in variants.items():
                    started = time.perf_counter()
                    out = lite(batch)
                    seconds[precision] += time.perf_counter() - started
                    if round_ == 0:
                        outputs[precision].append(out)
        items = len(inputs) * rounds
        rows.append(
            f"| {modality} | TF SavedModel, float32 (the default) | {_size_mib(saved):.1f} | {saved_load:.2f} | "
            f"{items / seconds['saved']:,.1f} (1.00x) | 1.00000 / 1.00000 | 1.000 |"
        )
        for precision, (path, _, load) in variants.items():
            embeddings = np.concatenate(outputs[precision])
            cosine = np.sum(embeddings * reference, axis=1) / (
                np.maximum(np.linalg.norm(embeddings, axis=1) * np.linalg.norm(reference, axis=1), 1e-12)
            )
            rate = items / seconds[precision]
            rows.append(
                f"| {modality} | TFLite, {precision} | {_size_mib(path):.1f} | {load:.2f} | {rate:,.1f} "
                f"({rate * seconds['saved'] / items:.2f}x) | {cosine.min():.5f} / {np.median(cosine):.5f} | "
                f"{neighbour_recall(reference, embeddings):.3f} |"
            )
            print(rows[-1], flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--catalog", default="output/data/tuxpaint/catalog/catalog.tfrecord.gz")
    parser.add_argument("--threads", type=int, default=2, help="TFLite interpreter threads (TF uses every core)")
    parser.add_argument("--rounds", type=int, default=2, help="passes over the catalog for the throughput figures")
    args = parser.parse_args()
    catalog = list(tf.data.TFRecordDataset(args.catalog, compression_type="GZIP").as_numpy_iterator())
    lines = [
        f"# Content encoders: float16 / int8 TFLite variants vs the float32 SavedModel ({os.cpu_count()} cores, {time.strftime('%Y-%m-%d')})",
        "",
        f"Catalog: {args.catalog}. The network part of each encoder (tokenizing and image decoding stay in TF);",
        f"batches of {BATCH}; TFLite with {args.threads} threads; throughput over {args.rounds} passes, every variant on the",
        "same batch in turn. Cosine: each item's embedding against the float32 SavedModel's (min / median).",
        "Neighbour R@10: the share of each item's 10 nearest catalog items by content (float32) kept.",
        "",
        "| encoder | variant | size MiB | load s | items/s (vs SavedModel) | cosine min / median | neighbour R@10 |",
        "|---|---|---|---|---|---|---|",
    ]
    for modality, feature in (("text", F.ITEM_TEXT), ("image", F.IMAGE)):
        records = [r for r in catalog if _bytes(r, feature)]
        if records:
            lines += modality_rows(modality, records, args.threads, args.rounds)
    audio = registry.local_handle("audio")
    lines += [
        "",
        f"Audio (musicnn, {_size_mib(audio):.1f} MiB as exported) is not converted: its log-mel front end and TF1 graph "
        "(wrap_function) are the stage's cost, not its weights.",
        "",
        f"Command: `.venv/bin/python -m bench.encoder_quantization --catalog {args.catalog} --threads {args.threads} --rounds {args.rounds}`",
    ]
    results.write("encoder_quantization", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
