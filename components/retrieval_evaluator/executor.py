"""RetrievalEvaluator executor: score the model's `evaluate` signatures on the eval split, check, bless.

Writes `metrics.json` to the evaluation artifact: Recall@10/50/100, NDCG@10
and catalog coverage@10 of retrieval alone and of retrieve-then-rank
(`recommend`), overall and per slice (the model's `evaluation_features`), the
same for the baseline model, and each check with its verdict. Eval records the
model cannot read are listed (record number and the model's error), left out
of the metrics, and block the blessing: the run goes on, the model is not
pushed.
"""
import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Any, Optional

import absl.logging
import numpy as np
import tensorflow as tf
from tfx.components.evaluator import constants as evaluator_constants
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import path_utils

from components.retrieval_evaluator import spec
from towers import exporter, scann_index
from towers import features as F
from towers import metrics

EVAL_SPLIT = "eval"
METRICS_FILE = "metrics.json"
BATCH_SIZE = 1000
MAX_LISTED_PROBLEMS = 20
COVERAGE = f"coverage_at_{metrics.NDCG_K}"
RETRIEVAL = "retrieval"
RECOMMEND = "recommend"
SIGNATURES = {RETRIEVAL: exporter.EVALUATE_SIGNATURE, RECOMMEND: exporter.EVALUATE_RECOMMEND_SIGNATURE}


@dataclass(frozen=True)
class Thresholds:
    """When the RetrievalEvaluator blesses a model.

    Attributes:
      min_recall_at_100: floor on retrieval Recall@100.
      min_recall_at_10: floor on retrieval Recall@10.
      max_regression: allowed drop of retrieval Recall@100 (absolute) versus
        the baseline (last blessed) model on the same eval data.
    """

    min_recall_at_100: float = 0.05
    min_recall_at_10: float = 0.0
    max_regression: float = 0.02

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Thresholds":
        return cls(**json.loads(text))


def read_records(split_uri: str) -> list[bytes]:
    files = tf.io.gfile.glob(os.path.join(split_uri, "*"))
    return [record.numpy() for record in tf.data.TFRecordDataset(files, compression_type="GZIP")]


def load_model(model_uri: str):
    """The SavedModel of a Trainer output (text ops registered first: a fine-tuned text tower needs them)."""
    import tensorflow_text  # noqa: F401  (registers the ops)

    scann_index.load_ops()  # a ScaNN-indexed model needs the Scann ops
    return tf.saved_model.load(path_utils.serving_model_path(model_uri))


def _call(signature, records: list[bytes]) -> dict[str, np.ndarray]:
    return {name: value.numpy() for name, value in signature(examples=tf.constant(records)).items()}


def run_signatures(model, names: dict[str, str], records: list[bytes]) -> tuple[dict[str, dict[str, np.ndarray]], list[str]]:
    """Calls each named signature on `records` in batches.

    A batch the model rejects is retried record by record; records that still
    fail are left out and reported.

    Returns:
      (key -> output name -> values over the readable records, one problem line per unreadable record).
    """
    outputs: dict[str, dict[str, list]] = {key: {} for key in names}
    problems = []
    for start in range(0, len(records), BATCH_SIZE):
        batch = records[start : start + BATCH_SIZE]
        try:
            results = [{key: _call(model.signatures[name], batch) for key, name in names.items()}]
        except tf.errors.InvalidArgumentError:
            results = []
            for offset, record in enumerate(batch):
                try:
                    results.append({key: _call(model.signatures[name], [record]) for key, name in names.items()})
                except tf.errors.InvalidArgumentError as error:
                    problems.append(f"eval record {start + offset}: {error.message.splitlines()[0]}")
        for result in results:
            for key, values in result.items():
                for output, array in values.items():
                    outputs[key].setdefault(output, []).append(array)
    return {key: {output: np.concatenate(arrays) for output, arrays in values.items()} for key, values in outputs.items()}, problems


def coverage(top_ids: np.ndarray, catalog_size: int) -> float:
    """Share of the catalog that appears in at least one list of `top_ids` [n, k]."""
    return len(set(top_ids.reshape(-1).tolist()) - {b""}) / max(catalog_size, 1)


def summarize(per_example: dict[str, np.ndarray], catalog_size: int, mask: Optional[np.ndarray] = None) -> dict[str, float]:
    """Mean of each metric, coverage@10 and the count, over the examples in `mask` (default all)."""
    mask = np.ones(len(per_example[metrics.METRIC_NAMES[0]]), bool) if mask is None else mask
    out = {name: float(per_example[name][mask].mean()) if mask.any() else float("nan") for name in metrics.METRIC_NAMES}
    out[COVERAGE] = coverage(per_example[exporter.ITEM_IDS_OUTPUT][mask], catalog_size)
    out["count"] = int(mask.sum())
    return out


def by_slice(per_example: dict[str, np.ndarray], slices: dict[str, np.ndarray], catalog_size: int) -> dict[str, dict[str, dict]]:
    """slice feature -> value -> summarize() over the examples with that value."""
    return {
        feature: {value.decode(): summarize(per_example, catalog_size, values == value) for value in sorted(set(values.tolist()))}
        for feature, values in slices.items()
    }


def evaluate_model(model, records: list[bytes], with_slices: bool) -> tuple[dict[str, Any], list[str]]:
    """{retrieval, recommend: {overall, by_slice}} for one model, and the unreadable records."""
    names = dict(SIGNATURES)
    if with_slices:
        names["slices"] = exporter.EVALUATION_FEATURES_SIGNATURE
    outputs, problems = run_signatures(model, names, records)
    catalog_size = int(tf.size(model.catalog_ids))
    slices = {name: outputs["slices"][name] for name in F.EVAL_SLICE_FEATURES} if with_slices and outputs["slices"] else {}
    result = {}
    for key in SIGNATURES:
        if not outputs[key]:
            result[key] = {"overall": {"count": 0}, "by_slice": {}}
            continue
        result[key] = {"overall": summarize(outputs[key], catalog_size), "by_slice": by_slice(outputs[key], slices, catalog_size)}
    return result, problems


def checks(candidate: dict, baseline: Optional[dict], thresholds: Thresholds, tfma_blessed: Optional[bool], problems: list[str]) -> list[dict]:
    """Every check the blessing needs: {'check', 'passed', 'detail'}."""
    overall = candidate[RETRIEVAL]["overall"]
    out = []
    for name, floor in ((metrics.recall_name(100), thresholds.min_recall_at_100), (metrics.recall_name(10), thresholds.min_recall_at_10)):
        value = overall.get(name, float("nan"))
        out.append({"check": f"{name} >= {floor}", "passed": bool(value >= floor), "detail": f"{value:.4f}"})
    if baseline is not None:
        name = metrics.recall_name(100)
        now, before = overall.get(name, float("nan")), baseline[RETRIEVAL]["overall"].get(name, float("nan"))
        out.append({
            "check": f"{name} drop vs last blessed model <= {thresholds.max_regression}",
            "passed": bool(now >= before - thresholds.max_regression),
            "detail": f"{now:.4f} vs {before:.4f}",
        })
    if tfma_blessed is not None:
        out.append({"check": "TFMA Evaluator blessed the ranking model", "passed": tfma_blessed, "detail": "blessed" if tfma_blessed else "not blessed"})
    out.append({"check": "every eval record readable", "passed": not problems, "detail": f"{len(problems)} unreadable"})
    return out


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict: dict[str, list], output_dict: dict[str, list], exec_properties: dict[str, Any]) -> None:
        thresholds = Thresholds.from_json(exec_properties[spec.THRESHOLDS_KEY])
        if exec_properties.get(spec.MIN_RECALL_KEY) is not None:
            thresholds = dataclasses.replace(thresholds, min_recall_at_100=float(exec_properties[spec.MIN_RECALL_KEY]))
        model_artifact = artifact_utils.get_single_instance(input_dict[spec.MODEL_KEY])
        records = read_records(artifact_utils.get_split_uri(input_dict[spec.EXAMPLES_KEY], EVAL_SPLIT))
        absl.logging.info("RetrievalEvaluator: %d eval records", len(records))
        candidate, problems = evaluate_model(load_model(model_artifact.uri), records, with_slices=True)
        baseline_artifacts = input_dict.get(spec.BASELINE_MODEL_KEY) or []
        baseline = None
        if baseline_artifacts:
            baseline, _ = evaluate_model(load_model(baseline_artifacts[0].uri), records, with_slices=False)
        tfma = input_dict.get(spec.TFMA_BLESSING_KEY) or []
        tfma_blessed = tfma[0].get_int_custom_property(evaluator_constants.ARTIFACT_PROPERTY_BLESSED_KEY) == 1 if tfma else None
        results = checks(candidate, baseline, thresholds, tfma_blessed, problems)
        blessed = all(check["passed"] for check in results)
        report = {
            **candidate,
            "baseline": baseline,
            "checks": results,
            "blessed": blessed,
            "num_eval_records": len(records),
            "unreadable_records": len(problems),
            "unreadable_examples": problems[:MAX_LISTED_PROBLEMS],
        }
        for problem in problems[:MAX_LISTED_PROBLEMS]:
            absl.logging.warning("RetrievalEvaluator: %s", problem)
        evaluation = artifact_utils.get_single_instance(output_dict[spec.EVALUATION_KEY])
        with tf.io.gfile.GFile(os.path.join(evaluation.uri, METRICS_FILE), "w") as f:
            json.dump(report, f, indent=2)
        self._write_blessing(artifact_utils.get_single_instance(output_dict[spec.BLESSING_KEY]), model_artifact, baseline_artifacts, blessed)
        for check in results:
            absl.logging.info("RetrievalEvaluator: %s %s (%s)", "PASS" if check["passed"] else "FAIL", check["check"], check["detail"])

    @staticmethod
    def _write_blessing(blessing, model, baseline_artifacts: list, blessed: bool) -> None:
        """The Evaluator's blessing format: BLESSED/NOT_BLESSED file + custom properties (read by Pusher and the resolver)."""
        c = evaluator_constants
        name = c.BLESSED_FILE_NAME if blessed else c.NOT_BLESSED_FILE_NAME
        with tf.io.gfile.GFile(os.path.join(blessing.uri, name), "w") as f:
            f.write("")
        blessing.set_int_custom_property(c.ARTIFACT_PROPERTY_BLESSED_KEY, c.BLESSED_VALUE if blessed else c.NOT_BLESSED_VALUE)
        blessing.set_string_custom_property(c.ARTIFACT_PROPERTY_CURRENT_MODEL_URI_KEY, model.uri)
        blessing.set_int_custom_property(c.ARTIFACT_PROPERTY_CURRENT_MODEL_ID_KEY, model.id)
        if baseline_artifacts:
            blessing.set_string_custom_property(c.ARTIFACT_PROPERTY_BASELINE_MODEL_URI_KEY, baseline_artifacts[0].uri)
            blessing.set_int_custom_property(c.ARTIFACT_PROPERTY_BASELINE_MODEL_ID_KEY, baseline_artifacts[0].id)
