"""The first schema of a user's dataset: inferred with TFDV, written for the user to curate.

The TFX convention (SchemaGen -> curate -> ImportSchemaGen): the first run
infers a schema from the data, writes it beside the data contract, and goes on
with it; the user then curates it (domains, ranges, presence) and every later
run imports it, so the ExampleValidator stops a
run whose data breaks it and names the split, feature and anomaly.
"""

from __future__ import annotations

import os

from towers import features as F

HEADER = """\
# Raw schema of dataset {name!r}: inferred by TFDV from its first build (all splits of {span}),
# then only ever read: every run imports it (ImportSchemaGen) and the ExampleValidator
# stops a run whose data breaks it, naming the split, the feature and the anomaly.
# Curate it: add domains (string_domain, int_domain, float_domain), tighten presence
# and value counts, and declare drift comparators to stop a run whose data moved since
# the last accepted span, e.g. in a feature: drift_comparator {{ infinity_norm {{ threshold: 0.1 }} }}
# Keep every feature the data contract declares; delete this file to infer it again.
"""


def infer(name: str, span_dir: str, roles: F.FeatureRoles, path: str) -> str:
    """Infers the raw schema of a built span's examples (every split: train, validation, eval) and writes it to `path`.

    Inferred as TFDV does, then made what the pipeline needs: scalar features dense
    with one value (shape [1]), `history` and the multi-valued columns lists (the
    history may be empty), and no string domains (an inferred domain lists only
    the values seen so far; the first new value would stop a later run).

    Returns `path`.
    """
    import tensorflow_data_validation as tfdv
    from google.protobuf import text_format

    from towers.contract import RECORD_FILE

    statistics = tfdv.generate_statistics_from_tfrecord(data_location=os.path.join(span_dir, "*", RECORD_FILE))
    schema = tfdv.infer_schema(statistics, infer_feature_shape=True)
    lists = set(roles.list_features)
    for feature in schema.feature:
        feature.ClearField("domain")
        if feature.HasField("string_domain"):
            feature.ClearField("string_domain")
        feature.presence.min_fraction = 1.0
        feature.presence.min_count = 1
        if feature.name in lists:
            feature.ClearField("shape")
            feature.ClearField("value_count")
            feature.value_count.min = 0  # an empty history (a first event), a row without tags
            if feature.name == F.HISTORY:
                feature.value_count.max = F.HISTORY_LENGTH
        else:
            feature.ClearField("value_count")
            feature.shape.Clear()
            feature.shape.dim.add().size = 1
    del schema.string_domain[:]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    scratch = path + ".partial"
    with open(scratch, "w") as f:
        f.write(HEADER.format(name=name, span=os.path.basename(span_dir)))
        f.write(text_format.MessageToString(schema))
    os.replace(scratch, path)  # a run killed mid-write leaves no half schema to import
    return path
