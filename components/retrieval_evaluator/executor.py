"""RetrievalEvaluator executor: score the model's `evaluate` signatures on the eval split, check, bless.

Writes `metrics.json` to the evaluation artifact: Recall@10/50/100, NDCG@10
and catalog coverage@10 of retrieval alone and of retrieve-then-rank
(`recommend`), overall (with intra-list diversity@10 and category coverage@10)
and per slice (the model's `evaluation_features`), the
same for the last blessed model, and each check with its verdict. Every eval
example gets the user's full seen list (components.evaluation.SeenItems, the
exclusion the baselines use too). With the Baselines' output it adds the
comparison with every simple baseline and the best one (per event and per
user, 95% user-bootstrap intervals of the ratio), and new items scored among
all items and among new items only (retrieval). Eval records the model cannot
read are listed (record number and the model's error), left out of the
metrics, and block the blessing: the run goes on, the model is not pushed.
"""

import dataclasses
import json
import os
from collections.abc import Callable
from typing import Any, Optional

import absl.logging
import numpy as np
import tensorflow as tf
from tfx.components.evaluator import constants as evaluator_constants
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import path_utils

from components import baselines as baselines_component
from components import evaluation as ev
from components.retrieval_evaluator import spec
from components.retrieval_evaluator.thresholds import Thresholds
from towers import contract, metrics, scann_index
from towers import features as F
from towers.contract import METRICS_FILE

BATCH_SIZE = 1000
MAX_LISTED_PROBLEMS = 20
COVERAGE = ev.COVERAGE
RETRIEVAL = "retrieval"
RECOMMEND = "recommend"
SIGNATURES = {RETRIEVAL: contract.EVALUATE_SIGNATURE, RECOMMEND: contract.EVALUATE_RECOMMEND_SIGNATURE}


def load_model(model_uri: str):
    """The SavedModel of a Trainer output (text ops registered first: a fine-tuned text tower needs them)."""
    import tensorflow_text  # noqa: F401  (registers the ops)

    scann_index.load_ops()  # a ScaNN-indexed model needs the Scann ops
    return tf.saved_model.load(path_utils.serving_model_path(model_uri))


def _call(signature, records: list[bytes]) -> dict[str, np.ndarray]:
    return {name: value.numpy() for name, value in signature(examples=tf.constant(records)).items()}


def run_signatures(
    model, names: dict[str, str], records: list[bytes], prepare: Optional[Callable[[int, bytes], bytes]] = None
) -> tuple[dict[str, dict[str, np.ndarray]], list[str], np.ndarray]:
    """Calls each named signature on `records` in batches (each record passed through `prepare(number, record)` first).

    A batch the model rejects is retried record by record; records that still
    fail are left out and reported.

    Returns:
      (key -> output name -> values over the readable records, one problem line per unreadable record,
       the numbers of the readable records).
    """
    outputs: dict[str, dict[str, list]] = {key: {} for key in names}
    problems, kept = [], []
    for start in range(0, len(records), BATCH_SIZE):
        batch = records[start : start + BATCH_SIZE]
        if prepare is not None:
            batch = [prepare(start + offset, record) for offset, record in enumerate(batch)]
        try:
            results = [{key: _call(model.signatures[name], batch) for key, name in names.items()}]
            kept.extend(range(start, start + len(batch)))
        except tf.errors.InvalidArgumentError:
            results = []
            for offset, record in enumerate(batch):
                try:
                    results.append({key: _call(model.signatures[name], [record]) for key, name in names.items()})
                    kept.append(start + offset)
                except tf.errors.InvalidArgumentError as error:
                    problems.append(f"eval record {start + offset}: {error.message.splitlines()[0]}")
        for result in results:
            for key, values in result.items():
                for output, array in values.items():
                    outputs[key].setdefault(output, []).append(array)
    return (
        {key: {output: np.concatenate(arrays) for output, arrays in values.items()} for key, values in outputs.items()},
        problems,
        np.asarray(kept, np.int64),
    )


def coverage(top_ids: np.ndarray, catalog_size: int) -> float:
    """Share of the catalog that appears in at least one list of `top_ids` [n, k]."""
    return len(set(top_ids.reshape(-1).tolist()) - {b""}) / max(catalog_size, 1)


def summarize(per_example: dict[str, np.ndarray], catalog_size: int, mask: Optional[np.ndarray] = None) -> dict[str, float]:
    """Mean of each metric, coverage@10 and the count, over the examples in `mask` (default all)."""
    mask = np.ones(len(per_example[metrics.METRIC_NAMES[0]]), bool) if mask is None else mask
    out = ev.summarize(per_example, mask)
    out[COVERAGE] = coverage(per_example[contract.ITEM_IDS_OUTPUT][mask], catalog_size)
    return out


def by_slice(per_example: dict[str, np.ndarray], slices: dict[str, np.ndarray], catalog_size: int) -> dict[str, dict[str, dict]]:
    """slice feature -> value -> summarize() over the examples with that value."""
    return {
        feature: {value.decode(): summarize(per_example, catalog_size, values == value) for value in sorted(set(values.tolist()))}
        for feature, values in slices.items()
    }


def evaluate_model(
    model, records: list[bytes], with_slices: bool, prepare=None
) -> tuple[dict[str, Any], list[str], dict[str, dict[str, np.ndarray]], np.ndarray]:
    """{retrieval, recommend: {overall, by_slice}} for one model, the unreadable records, the per-record outputs and
    the numbers of the readable records."""
    names = dict(SIGNATURES)
    if with_slices:
        names["slices"] = contract.EVALUATION_FEATURES_SIGNATURE
    outputs, problems, kept = run_signatures(model, names, records, prepare)
    catalog_size = int(tf.size(model.catalog_ids))
    slices = {name: outputs["slices"][name] for name in F.EVAL_SLICE_FEATURES} if with_slices and outputs["slices"] else {}
    result = {}
    position = catalog_index(model)
    for key in SIGNATURES:
        if not outputs[key]:
            result[key] = {"overall": {"count": 0}, "by_slice": {}}
            continue
        top = positions_of(position, outputs[key][contract.ITEM_IDS_OUTPUT])
        result[key] = {
            "overall": {**summarize(outputs[key], catalog_size), **list_metrics(model, top)},
            "by_slice": by_slice(outputs[key], slices, catalog_size),
        }
        if key == RECOMMEND:
            result[key]["attribution"] = attribution(model, top)
    return result, problems, outputs, kept


def catalog_index(model) -> dict[bytes, int]:
    """Item id -> catalog position of a loaded model."""
    return {item: i for i, item in enumerate(model.catalog_ids.numpy().tolist())}


def positions_of(index: dict[bytes, int], top_ids: np.ndarray) -> np.ndarray:
    """Catalog positions of the ids in `top_ids` (-1: not in the catalog, or no item)."""
    return np.vectorize(lambda item: index.get(item, -1), otypes=[np.int64])(top_ids) if top_ids.size else top_ids.astype(np.int64)


def attribution(model, top_positions: np.ndarray) -> dict:
    """The mean modality weights (towers.explanations) of the items in the top-10 lists (catalog positions), overall
    and per item slice (new items: content only); {} for a model without them."""
    weights = getattr(model, "catalog_modality_weights", None)
    if weights is None:
        return {}
    weights = weights.numpy()
    positions = top_positions[:, : metrics.NDCG_K].reshape(-1)
    positions = positions[positions >= 0]
    if not len(positions):
        return {}
    out = {"modalities": [m.decode() for m in model.modality_names.numpy()], "overall": weights[positions].mean(axis=0).tolist()}
    out["by_slice"] = {}
    for name, table in model.catalog_slices.items():
        values = table.numpy()[positions]
        out["by_slice"][name] = {
            value.decode(): {"items": int((values == value).sum()), "weights": weights[positions[values == value]].mean(axis=0).tolist()}
            for value in sorted(set(values.tolist()))
        }
    return out


def list_metrics(model, positions: np.ndarray) -> dict[str, float]:
    """Intra-list diversity and category coverage of the top-10 lists (catalog positions [n, >= 10]), from the model's
    catalog embeddings and categories (a model exported before it had categories: NaN)."""
    categories = getattr(model, "catalog_categories", None)
    return {
        ev.DIVERSITY: ev.list_diversity(positions, np.asarray(model.catalog_embeddings.numpy(), np.float32)),
        ev.CATEGORY_COVERAGE: ev.category_coverage(positions, categories.numpy()) if categories is not None else float("nan"),
    }


def among_own_kind(
    model,
    records: list[bytes],
    held_out: ev.Events,
    seen: list[np.ndarray],
    index: dict[bytes, int],
    cold: np.ndarray,
    readable: np.ndarray,
) -> dict[str, dict]:
    """Retrieval Recall@K of new (cold) targets ranked among new items only, and of warm targets among warm items only.

    The cold-start literature's protocol (DropoutNet, Heater, GAR, ALDI); the
    production protocol (among all items) is the overall `by_freshness`.
    Query embeddings come from `embed_query`, item embeddings from the
    model's catalog table; exclusions are the same seen items. Only `readable` records (bool [n]) are scored.
    """
    embeddings = np.asarray(model.catalog_embeddings.numpy(), np.float32)
    truth = ev.positions(held_out.items, index)
    targets = ev.targets_by_freshness(truth, cold)
    out = {}
    for freshness, candidates in ((ev.COLD, cold), (ev.WARM, ~cold)):
        rows = np.flatnonzero(targets[freshness] & readable)
        per_event: dict[str, list] = {name: [] for name in metrics.METRIC_NAMES}
        for start in range(0, len(rows), BATCH_SIZE):
            batch = rows[start : start + BATCH_SIZE]
            queries = model.signatures[contract.EMBED_QUERY_SIGNATURE](examples=tf.constant([records[i] for i in batch]))[
                contract.EMBEDDINGS_OUTPUT
            ].numpy()
            top = ev.top_k(queries @ embeddings.T, [seen[i] for i in batch], max(metrics.RECALL_KS), candidates)
            for name, values in ev.hits(top, truth[batch]).items():
                per_event[name].append(values)
        out[freshness] = ev.summarize({name: np.concatenate(values) for name, values in per_event.items()}) if len(rows) else {"count": 0}
    return out


def evaluate_split(model, events: dict[str, ev.Events], records: list[bytes], split: str, with_slices: bool = True):
    """Scores one split (eval; validation for benchmark sweeps) with full seen-item exclusion.

    Args:
      model: the loaded recommender SavedModel.
      events: split name -> its events (train, validation, eval).
      records: the serialized examples of `split`, in the order of events[split].
      split: which split `records` are.
      with_slices: also the model's own slices (evaluation_features).
    Returns:
      (evaluate_model's result plus, per path, `by_freshness` (new vs warm targets among all items) and, for
       retrieval, `among_own_kind`; the unreadable records; the per-record outputs; the numbers of the readable
       records; `prepare`, which adds the seen items to a record: for scoring another model on the same events).
    """
    target = events[split]
    catalog_ids = model.catalog_ids.numpy()
    index = ev.catalog_index(catalog_ids)
    seen = ev.SeenItems(index, events[contract.TRAIN_SPLIT], *(e for name, e in events.items() if name != contract.TRAIN_SPLIT)).for_events(
        target
    )

    def prepare(number: int, record: bytes) -> bytes:
        return ev.with_seen_items(record, catalog_ids[seen[number]].tolist())

    result, problems, outputs, kept = evaluate_model(model, records, with_slices, prepare)
    cold = ev.cold_mask(len(catalog_ids), index, events[contract.TRAIN_SPLIT])
    truth = ev.positions(target.items, index)
    targets = ev.targets_by_freshness(truth, cold)
    for key in SIGNATURES:
        if outputs[key]:
            result[key]["by_freshness"] = {freshness: ev.summarize(outputs[key], mask[kept]) for freshness, mask in targets.items()}
    readable = np.zeros(len(records), bool)
    readable[kept] = True
    result[RETRIEVAL]["among_own_kind"] = among_own_kind(model, records, target, seen, index, cold, readable)
    return result, problems, outputs, kept, prepare


def compare(per_event: dict[str, dict[str, np.ndarray]], users: np.ndarray, best: str) -> dict:
    """User-bootstrap means and intervals of every path and baseline, and each model path's ratios to the best
    baseline and to most-popular, per metric.

    Args:
      per_event: name (model path or baseline) -> metric -> [n], aligned with `users`.
      users: user id per event.
      best: the best baseline's name (chosen on the validation split).
    """
    out = {}
    for metric in metrics.METRIC_NAMES:
        boot = ev.user_bootstrap({name: values[metric] for name, values in per_event.items()}, users)
        row = ev.public(boot)
        row["ratios"] = {
            path: {
                other: ev.ratio(boot, path, other)
                for other in dict.fromkeys((best, baselines_component.MOST_POPULAR))
                if other in per_event
            }
            for path in SIGNATURES
        }
        out[metric] = row
    return out


def beats_baseline_check(comparison: dict, best: str, best_label: str, gate: bool) -> dict:
    """The served recommend beats the best simple baseline on Recall@10: both 95% intervals of the ratio above 1."""
    name = metrics.recall_name(10)
    row = comparison[name]
    ratios = row["ratios"][RECOMMEND][best]
    passed = all(ratios[view]["ci"][0] > 1.0 for view in ("per_event", "per_user"))
    detail = "; ".join(
        f"{view.replace('_', ' ')} {row[view][RECOMMEND]['mean']:.4f} vs {row[view][best]['mean']:.4f} = {ratios[view]['ratio']:.2f}x "
        f"[95% CI {ratios[view]['ci'][0]:.2f}-{ratios[view]['ci'][1]:.2f}]"
        for view in ("per_event", "per_user")
    )
    return {
        "check": f"served recommend beats the best simple baseline ({best_label}) on {name}",
        "passed": passed,
        "gate": gate,
        "detail": detail,
    }


def checks(
    candidate: dict, baseline: Optional[dict], thresholds: Thresholds, tfma_blessed: Optional[bool], problems: list[str]
) -> list[dict]:
    """Every check the blessing needs: {'check', 'passed', 'gate', 'detail'} (gate False: reported, not blocking)."""
    overall = candidate[RETRIEVAL]["overall"]
    out = []
    for name, floor in ((metrics.recall_name(100), thresholds.min_recall_at_100), (metrics.recall_name(10), thresholds.min_recall_at_10)):
        value = overall.get(name, float("nan"))
        out.append({"check": f"{name} >= {floor}", "passed": bool(value >= floor), "detail": f"{value:.4f}"})
    if baseline is not None:
        name = metrics.recall_name(100)
        now, before = overall.get(name, float("nan")), baseline[RETRIEVAL]["overall"].get(name, float("nan"))
        out.append(
            {
                "check": f"{name} drop vs last blessed model <= {thresholds.max_regression}",
                "passed": bool(now >= before - thresholds.max_regression),
                "detail": f"{now:.4f} vs {before:.4f}",
            }
        )
    if tfma_blessed is not None:
        out.append(
            {
                "check": "TFMA Evaluator blessed the ranking model",
                "passed": tfma_blessed,
                "detail": "blessed" if tfma_blessed else "not blessed",
            }
        )
    out.append({"check": "every eval record readable", "passed": not problems, "detail": f"{len(problems)} unreadable"})
    return [{**check, "gate": True} for check in out]


def blessed(results: list[dict]) -> bool:
    """Every gating check passed."""
    return all(check["passed"] for check in results if check.get("gate", True))


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict: dict[str, list], output_dict: dict[str, list], exec_properties: dict[str, Any]) -> None:
        thresholds = Thresholds.from_json(exec_properties[spec.THRESHOLDS_KEY])
        if exec_properties.get(spec.MIN_RECALL_KEY) is not None:
            thresholds = dataclasses.replace(thresholds, min_recall_at_100=float(exec_properties[spec.MIN_RECALL_KEY]))
        model_artifact = artifact_utils.get_single_instance(input_dict[spec.MODEL_KEY])
        split_uri = {
            split: artifact_utils.get_split_uri(input_dict[spec.EXAMPLES_KEY], split)
            for split in (contract.TRAIN_SPLIT, contract.VALIDATION_SPLIT, contract.EVAL_SPLIT)
        }
        records = ev.read_serialized(split_uri[contract.EVAL_SPLIT])
        events = {split: ev.read_events(uri) for split, uri in split_uri.items()}
        held_out = events[contract.EVAL_SPLIT]
        absl.logging.info("RetrievalEvaluator: %d eval records", len(records))
        candidate, problems, outputs, kept, prepare = evaluate_split(load_model(model_artifact.uri), events, records, contract.EVAL_SPLIT)
        report: dict[str, Any] = {**candidate}
        baselines_artifacts = input_dict.get(spec.BASELINES_KEY) or []
        extra_checks = []
        if baselines_artifacts:
            baselines_report, baseline_arrays = baselines_component.read(baselines_artifacts[0].uri)
            best = baselines_report["best"]
            if not np.array_equal(baseline_arrays[F.ITEM_ID], held_out.items.astype(bytes)):
                raise ValueError("the Baselines' eval events differ from the eval split read here (another ExampleGen output?)")
            per_event = {key: {name: outputs[key][name] for name in metrics.METRIC_NAMES} for key in SIGNATURES if outputs[key]}
            per_event.update(
                {
                    name: {metric: baseline_arrays[f"{name}/{metric}"][kept] for metric in metrics.METRIC_NAMES}
                    for name in baselines_report["baselines"]
                }
            )
            report["baselines"] = baselines_report
            report["comparison"] = compare(per_event, held_out.users[kept], best)
            best_label = baselines_component.label(best, baselines_report["baselines"][best]["params"])
            extra_checks.append(beats_baseline_check(report["comparison"], best, best_label, thresholds.require_beat_baseline))
        last_blessed_artifacts = input_dict.get(spec.BASELINE_MODEL_KEY) or []
        last_blessed = None
        if last_blessed_artifacts:
            last_blessed = evaluate_model(load_model(last_blessed_artifacts[0].uri), records, with_slices=False, prepare=prepare)[0]
        tfma = input_dict.get(spec.TFMA_BLESSING_KEY) or []
        tfma_blessed = tfma[0].get_int_custom_property(evaluator_constants.ARTIFACT_PROPERTY_BLESSED_KEY) == 1 if tfma else None
        results = checks(candidate, last_blessed, thresholds, tfma_blessed, problems) + extra_checks
        is_blessed = blessed(results)
        report.update(
            {
                "last_blessed_model": last_blessed,
                "checks": results,
                "blessed": is_blessed,
                "num_eval_records": len(records),
                "num_eval_users": int(len(np.unique(held_out.users))),
                "num_validation_records": len(events[contract.VALIDATION_SPLIT]),
                "unreadable_records": len(problems),
                "unreadable_examples": problems[:MAX_LISTED_PROBLEMS],
            }
        )
        for problem in problems[:MAX_LISTED_PROBLEMS]:
            absl.logging.warning("RetrievalEvaluator: %s", problem)
        evaluation = artifact_utils.get_single_instance(output_dict[spec.EVALUATION_KEY])
        with tf.io.gfile.GFile(os.path.join(evaluation.uri, METRICS_FILE), "w") as f:
            json.dump(report, f, indent=2)
        self._write_blessing(
            artifact_utils.get_single_instance(output_dict[spec.BLESSING_KEY]), model_artifact, last_blessed_artifacts, is_blessed
        )
        for check in results:
            absl.logging.info(
                "RetrievalEvaluator: %s %s (%s)",
                "PASS" if check["passed"] else ("FAIL" if check["gate"] else "WARN"),
                check["check"],
                check["detail"],
            )

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
        if baseline_artifacts:  # the last blessed model (TFX's "baseline model")
            blessing.set_string_custom_property(c.ARTIFACT_PROPERTY_BASELINE_MODEL_URI_KEY, baseline_artifacts[0].uri)
            blessing.set_int_custom_property(c.ARTIFACT_PROPERTY_BASELINE_MODEL_ID_KEY, baseline_artifacts[0].id)
