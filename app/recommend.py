"""`mmtower recommend`: top-K for one user from the newest pushed model, in process."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from mmdata.records import Manifest, read_records, split_dir
from towers import contract
from towers import features as F
from towers.contract import CATALOG_FILE, TRAIN_SPLIT, USERS_FILE, RunPaths, latest_version_dir


class SetupError(RuntimeError):
    """Something a previous command should have produced is missing."""


class RequestError(ValueError):
    """A request the model cannot answer as asked (e.g. history naming items it does not know)."""


def with_fresh_history(user: dict, fresh: list[str], known_items) -> dict:
    """The user's query features with `fresh` (the items they interacted with since the data was built,
    oldest first) after their stored history: the next recommendation follows a click without retraining.

    Only the latest F.HISTORY_LENGTH items count. Raises RequestError naming the items not in `known_items`.
    """
    unknown = [item for item in fresh if item not in known_items]
    if unknown:
        raise RequestError(f"--history names {len(unknown)} item(s) not in the catalog: {', '.join(map(repr, unknown[:5]))}")
    return {**user, F.HISTORY: (list(user.get(F.HISTORY, [])) + list(fresh))[-F.HISTORY_LENGTH :]}


def new_user(user_id: str, dtypes: dict) -> dict:
    """Query features of a user the data does not know: no history yet, attributes unknown (an empty string,
    out of every vocabulary; NaN for a float, which the z-score maps to the mean; 0 for an integer)."""
    user = {F.USER_ID: user_id, F.HISTORY: []}
    for name, dtype in dtypes.items():
        if name not in contract.CALLER_INPUTS and name not in F.QUERY_BASE:
            user[name] = "" if dtype.name == "string" else float("nan") if dtype.is_floating else 0
    return user


def check_dataset(paths: RunPaths) -> None:
    """SetupError when the newest push under the serving folder came from another dataset's pipeline."""
    from serving import publish

    newest = publish.newest(paths.serving_dir, publish.PUSH)
    pushed_by = (newest or {}).get("pipeline")
    if pushed_by and pushed_by != paths.pipeline_name:
        raise SetupError(
            f"the models under {paths.serving_dir} were pushed by {pushed_by}, not {paths.pipeline_name}: pass the dataset "
            f"they were trained on (--dataset {pushed_by.removeprefix('mmtower-')}), or give each dataset its own --output"
        )


LOCAL_SERVER = "http://127.0.0.1:8501"  # where `mmtower serve` and TF Serving answer REST by default


def local_server(paths: RunPaths, url: str = LOCAL_SERVER, timeout: float = 0.5) -> str | None:
    """`url` when a server there serves this output's newest pushed recommender version, else None.

    Asked over REST, which needs no TensorFlow import: with a server running, `mmtower recommend` answers in
    about a second instead of loading TensorFlow and the SavedModel (8.5 s measured on the tuxpaint model)."""
    import json
    import urllib.request

    newest = latest_version_dir(paths.serving_model_dir())
    if newest is None:
        return None
    try:
        with urllib.request.urlopen(f"{url}/v1/models/{contract.RECOMMENDER}", timeout=timeout) as response:
            status = json.load(response)
        available = {int(s["version"]) for s in status.get("model_version_status", []) if s.get("state") == "AVAILABLE"}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # no server, or not TF Serving's API
        return None
    return url if int(os.path.basename(newest)) in available else None


def load_model(paths: RunPaths):
    """The newest pushed SavedModel under <output>/serving/<model>/ (trained on paths.dataset)."""
    import tensorflow as tf

    check_dataset(paths)
    version_dir = latest_version_dir(paths.serving_model_dir())
    if version_dir is None:
        if os.path.exists(paths.metadata_path):  # a run happened: its model was not blessed, so nothing was pushed
            raise SetupError(
                f"no pushed model under {paths.serving_model_dir()}: the runs into {paths.output} produced no blessed model "
                f"(`mmtower report --output {paths.output}` shows the failed checks); a quick demo run can lower the floors "
                "with --min-auc / --min-recall"
            )
        raise SetupError(
            f"no pushed model under {paths.serving_model_dir()}: run `mmtower run --output {paths.output}` (or `make run`) first"
        )
    print(
        f"Loading TensorFlow and the SavedModel {version_dir} in process (~8 s; with `mmtower serve --output "
        f"{paths.output}` running, this command asks it instead and answers in about a second)...",
        flush=True,
    )
    return tf.saved_model.load(version_dir), version_dir


def _read(paths: RunPaths, relative: str) -> list[dict]:
    path = os.path.join(paths.data_dir, relative)
    if not os.path.exists(path):
        raise SetupError(f"{path} is missing: run `mmtower run --dataset {paths.dataset} --output {paths.output}` first")
    return read_records(path)


def query_arrays(dtypes: dict, user: dict, timestamp: int) -> dict:
    """Query-feature inputs (numpy, batch of one) for one user with their latest items.

    `dtypes`: input name -> tf.DType of the signature; it names the query
    features the dataset has (user attributes vary). Its other inputs
    (`exclude_seen`, `item_ids`) are the caller's.
    """
    import numpy as np

    values = {**user, F.TIMESTAMP: timestamp}
    query = [name for name in dtypes if name not in contract.CALLER_INPUTS]
    missing = sorted(name for name in query if name not in values)
    if missing:
        raise SetupError(
            f"the model asks for {', '.join(missing)}, which this dataset's users do not have: it was trained on another dataset"
        )
    inputs = {}
    for name in query:
        dtype = dtypes[name]
        if name != F.HISTORY:
            inputs[name] = np.array(
                [values[name].encode() if dtype.name == "string" else values[name]],
                dtype=object if dtype.name == "string" else dtype.as_numpy_dtype,
            )
    inputs[F.HISTORY] = padded_history(values[F.HISTORY])
    return inputs


def padded_history(items: list[str]):
    """The latest F.HISTORY_LENGTH items, padded with '' (the model drops it) to that fixed length: every request
    then has the same shape, so a batching server (TF Serving's --enable_batching, serving.batching) can batch them."""
    import numpy as np

    latest = [item.encode() for item in list(items)[-F.HISTORY_LENGTH :]]
    return np.array([latest + [b""] * (F.HISTORY_LENGTH - len(latest))], dtype=object)


def query_inputs(signature, user: dict, timestamp: int) -> dict:
    """query_arrays as tensors, for a signature of a model loaded in process."""
    import tensorflow as tf

    specs = signature.structured_input_signature[1]
    arrays = query_arrays({name: spec.dtype for name, spec in specs.items()}, user, timestamp)
    return {name: tf.constant(value, dtype=specs[name].dtype) for name, value in arrays.items()}


def recommend_remote(
    client, user: dict, k: int, timestamp: int | None = None, exclude_seen: bool = True, rank: bool = True
) -> list[tuple[str, float]]:
    """recommend() through a TF Serving API client (serving.client): the `recommender` model's signatures."""
    return top_items(remote_outputs(client, user, timestamp, exclude_seen, rank), k)


def remote_outputs(
    client, user: dict, timestamp: int | None = None, exclude_seen: bool = True, rank: bool = True, diversity: Diversity | None = None
) -> dict:
    """The `recommend` (rank; `recommend_diverse` with `diversity`) or `query` signature's outputs for one user from
    a server, as numpy arrays."""
    import numpy as np

    from towers.contract import RECOMMENDER

    signature = _signature_name(rank, diversity)
    signatures = client.metadata(RECOMMENDER)
    if signature not in signatures:
        raise RequestError(f"the served recommender has no {signature!r} signature (exported before it existed): push a new model")
    dtypes = {name: _dtype(info) for name, info in signature_def_inputs(signatures[signature]).items()}
    inputs = query_arrays(dtypes, user, int(timestamp or time.time()))
    if rank:
        inputs[contract.EXCLUDE_SEEN_INPUT] = np.array([exclude_seen])
    if diversity is not None:
        inputs.update({name: np.array([value]) for name, value in diversity.inputs().items()})
    return dict(client.predict(RECOMMENDER, inputs, signature=signature))


@dataclass(frozen=True)
class Diversity:
    """recommend_diverse's controls (towers.diversity): MMR's weight on novelty (0..1) and items per category (0: no cap)."""

    weight: float = 0.0
    max_per_category: int = 0

    def __post_init__(self):
        if not 0.0 <= self.weight <= 1.0 or self.max_per_category < 0:
            raise RequestError(f"diversity must be in [0, 1] and max per category >= 0, got {self.weight} and {self.max_per_category}")

    def inputs(self) -> dict:
        import numpy as np

        return {contract.DIVERSITY_INPUT: np.float32(self.weight), contract.MAX_PER_CATEGORY_INPUT: np.int64(self.max_per_category)}


def _signature_name(rank: bool, diversity: Diversity | None) -> str:
    if diversity is not None and not rank:
        raise RequestError("diversity re-orders the ranked list: it cannot be combined with --retrieval-only")
    return (
        contract.RECOMMEND_DIVERSE_SIGNATURE
        if diversity is not None
        else contract.RECOMMEND_SIGNATURE
        if rank
        else contract.QUERY_SIGNATURE
    )


def top_items(outputs: dict, k: int) -> list[tuple[str, float]]:
    """(item_id, score) of the first query's top k, from a recommend/query signature's outputs."""
    ids = [v.decode() for v in outputs[contract.ITEM_IDS_OUTPUT][0][:k]]
    return list(zip(ids, outputs[contract.SCORES_OUTPUT][0][:k].tolist()))


def explanations(outputs: dict, k: int, titles: dict) -> list[str]:
    """One line per item of the first query's top k: the history items nearest it and its modality mix
    (towers.explanations), e.g. "because you had Toy Story (1995), Heat (1995); mostly metadata 48%, id 31%"."""
    lines = []
    for row in range(min(k, len(outputs[contract.ITEM_IDS_OUTPUT][0]))):
        because = [v.decode() for v in outputs[contract.BECAUSE_ITEMS_OUTPUT][0][row] if v]
        text = f"because you had {', '.join(titles.get(item) or item for item in because)}" if because else "no history item near it"
        if contract.MODALITY_WEIGHTS_OUTPUT in outputs:
            names = [v.decode() for v in outputs[contract.MODALITIES_OUTPUT][0]]
            shares = sorted(zip(outputs[contract.MODALITY_WEIGHTS_OUTPUT][0][row].tolist(), names), reverse=True)
            text += "; mostly " + ", ".join(f"{name} {share:.0%}" for share, name in shares if share >= 0.1)
        lines.append(text)
    return lines


@dataclass(frozen=True)
class RestDtype:
    """What query_arrays reads of a tf.DType (`name`, `as_numpy_dtype`), from REST metadata without TensorFlow."""

    name: str
    as_numpy_dtype: object


_REST_DTYPES = {
    "DT_STRING": ("string", object),
    "DT_INT64": ("int64", "int64"),
    "DT_INT32": ("int32", "int32"),
    "DT_FLOAT": ("float32", "float32"),
    "DT_DOUBLE": ("float64", "float64"),
    "DT_BOOL": ("bool", "bool"),
}


def _dtype(info):
    """tf.DType of a TensorInfo (a proto, or REST's JSON form with "dtype": "DT_STRING": then, for the common
    dtypes, a RestDtype, so that asking a server over REST imports no TensorFlow)."""
    if isinstance(info, dict) and info.get("dtype") in _REST_DTYPES:
        import numpy as np

        name, numpy_dtype = _REST_DTYPES[info["dtype"]]
        return RestDtype(name, object if numpy_dtype is object else np.dtype(numpy_dtype).type)
    import tensorflow as tf
    from tensorflow.core.framework import types_pb2

    return tf.as_dtype(types_pb2.DataType.Value(info["dtype"]) if isinstance(info, dict) else info.dtype)


def signature_def_inputs(signature_def) -> dict:
    """Input name -> TensorInfo (gRPC metadata: a proto; REST metadata: its JSON form)."""
    return signature_def["inputs"] if isinstance(signature_def, dict) else dict(signature_def.inputs)


def recommend(
    model, user: dict, k: int, timestamp: int | None = None, exclude_seen: bool = True, rank: bool = True
) -> list[tuple[str, float]]:
    """(item_id, score) best first: the `recommend` signature (retrieve, then rank; score = sigmoid of the
    ranker's engagement logit + the item-graph score), or with rank=False the `query` signature (retrieval alone, dot-product score)."""
    return top_items(recommend_outputs(model, user, timestamp, exclude_seen, rank), k)


def recommend_outputs(
    model, user: dict, timestamp: int | None = None, exclude_seen: bool = True, rank: bool = True, diversity: Diversity | None = None
) -> dict:
    """The `recommend` (rank; `recommend_diverse` with `diversity`) or `query` signature's outputs for one user from
    a loaded model, as numpy arrays."""
    import tensorflow as tf

    name = _signature_name(rank, diversity)
    if name not in model.signatures:
        raise RequestError(f"the pushed recommender has no {name!r} signature (exported before it existed): run the pipeline again")
    signature = model.signatures[name]
    extra = {contract.EXCLUDE_SEEN_INPUT: tf.constant([exclude_seen])} if rank else {}
    if diversity is not None:
        specs = signature.structured_input_signature[1]
        extra.update({key: tf.constant([value], dtype=specs[key].dtype) for key, value in diversity.inputs().items()})
    outputs = signature(**query_inputs(signature, user, int(timestamp or time.time())), **extra)
    return {key: value.numpy() for key, value in outputs.items()}


def _signature_dtypes(model) -> dict:
    specs = model.signatures[contract.RECOMMEND_SIGNATURE].structured_input_signature[1]
    return {name: spec.dtype for name, spec in specs.items()}


def query_dtypes(client) -> dict:
    """Input name -> tf.DType of the served recommender's `recommend` signature."""
    from towers.contract import RECOMMENDER

    signature_def = client.metadata(RECOMMENDER)[contract.RECOMMEND_SIGNATURE]
    return {name: _dtype(info) for name, info in signature_def_inputs(signature_def).items()}


def stored_user_id(manifest: Manifest, user_id: str, key_file: str | None = None) -> str:
    """The id the data and the model know `user_id` by: itself, or, when the data holds pseudonyms and it is not
    one of them already, its pseudonym with the run's key (towers.privacy)."""
    from towers import privacy

    if not manifest.pseudonym_key_id or privacy.is_pseudonym(user_id):
        return user_id
    key = privacy.load_key(key_file)
    if privacy.key_id(key) != manifest.pseudonym_key_id:
        raise SetupError(
            "the data's user ids were pseudonymised with another key than this one "
            f"(${privacy.KEY_ENV} or --pseudonym-key): give the run's key, or run again to rebuild with this one"
        )
    return privacy.pseudonym(key, user_id)


def popular_items(paths: RunPaths, k: int) -> list[tuple[str, float]]:
    """Most-popular fallback: (item_id, training interactions) best first."""
    from components.evaluation import read_events

    counts: dict[str, int] = {}
    for item in read_events(split_dir(paths.data_dir, TRAIN_SPLIT)).items:
        counts[item.decode()] = counts.get(item.decode(), 0) + 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]


def main(
    output: str,
    dataset: str,
    user_id: str,
    k: int,
    exclude_seen: bool = True,
    rank: bool = True,
    server: str | None = None,
    protocol: str = "grpc",
    history: list[str] | None = None,
    explain: bool = False,
    diversity: Diversity | None = None,
    pseudonym_key: str | None = None,
    in_process: bool = False,
) -> int:
    """Prints the top k for a user; `server`: ask a TF Serving API endpoint instead of loading the model here.

    Without `server`, a server on this machine (LOCAL_SERVER) that serves this output's newest model is asked
    (fast: no TensorFlow import); `in_process`: load the model here even then.

    `explain`: under each ranked item, the history items nearest it and its modality mix (towers.explanations).
    `diversity`: re-order the ranked list by MMR and cap items per category (the `recommend_diverse` signature).
    `pseudonym_key`: the key file, when the data holds pseudonyms (towers.privacy): `user_id` may be the raw id
    (this command is then the serving edge: only the pseudonym reaches the model or the server) or the pseudonym.

    `history`: items the user interacted with since the data was built (oldest first); they join the stored
    history in the request, so the list follows them without retraining. A user the data does not know gets
    the most popular items, or, with `history`, recommendations from that history alone.
    """
    paths = RunPaths(os.path.abspath(output), dataset)
    if not server and not in_process:
        server = local_server(paths)
        if server:
            check_dataset(paths)
            protocol = "rest"
    if server:
        from serving.client import connect

        client = connect(server, protocol)
        source = f"{server} ({'REST' if protocol == 'rest' or server.startswith('http') else 'gRPC'})"
    else:
        model, source = load_model(paths)
    users = {row[F.USER_ID]: row for row in _read(paths, USERS_FILE)}
    manifest = Manifest.read(paths.data_dir)
    display = manifest.roles.display_name
    titles = {row[F.ITEM_ID]: row.get(display, "") for row in _read(paths, CATALOG_FILE)}
    stored_id = stored_user_id(manifest, user_id, pseudonym_key)
    if stored_id in users or history:
        user = users.get(stored_id)
        if user is None:
            dtypes = query_dtypes(client) if server else _signature_dtypes(model)
            user = new_user(stored_id, dtypes)
            print(f"User {user_id!r} is not in dataset {dataset}: recommending from the --history items alone.")
        if history:
            user = with_fresh_history(user, history, titles)
        how = "retrieved and ranked" if rank else "retrieved"
        print(f"Top {k} for user {user_id} from {source} ({how}{', already seen items included' if not exclude_seen else ''}):")
        if history:
            print(f"  history in the request: {', '.join(user[F.HISTORY])}")
        if diversity is not None:
            print(f"  diversity {diversity.weight:g} (MMR), at most {diversity.max_per_category or 'any number of'} items per category")
        if server:
            outputs = remote_outputs(client, user, exclude_seen=exclude_seen, rank=rank, diversity=diversity)
        else:
            outputs = recommend_outputs(model, user, exclude_seen=exclude_seen, rank=rank, diversity=diversity)
        results, score_label = top_items(outputs, k), "engagement" if rank else "score"
        why = explanations(outputs, k, titles) if explain and contract.BECAUSE_ITEMS_OUTPUT in outputs else []
        if explain and not why:
            print("  (no explanations: --retrieval-only, or a model exported before they existed)")
    else:
        print(f"User {user_id!r} is not in dataset {dataset} ({len(users)} users); showing the {k} most popular items instead.")
        results, score_label, why = popular_items(paths, k), "interactions", []
    for position, (item_id, score) in enumerate(results, start=1):
        print(f"{position:>3}. {titles.get(item_id, '?'):<60} {score_label} {score:.4f}  (item {item_id})")
        if why:
            print(f"     {why[position - 1]}")
    return 0
