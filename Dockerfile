# The mmtower component image for Kubeflow / Vertex AI Pipelines and for Beam
# workers (Dataflow sdk_container_image, Flink/Spark environment_config).
# Same lock and the same exported encoders as `make setup`, at /opt/mmtower.
#   docker build -t REGISTRY/mmtower:VERSION .
#   mmtower compile --target kubeflow --image REGISTRY/mmtower:VERSION ...
FROM python:3.11-slim

ENV PIP_IGNORE_REQUIRES_PYTHON=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    TF_USE_LEGACY_KERAS=1 TF_CPP_MIN_LOG_LEVEL=3 PYTHONPATH=/opt/mmtower
RUN apt-get update && apt-get install -y --no-install-recommends tuxpaint-stamps-default && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/mmtower
COPY requirements.lock setup.py ./
RUN pip install --no-deps -r requirements.lock
COPY components/ components/
COPY mmdata/ mmdata/
COPY app/ app/
COPY pipeline/ pipeline/
COPY serving/ serving/
COPY towers/ towers/
COPY schemas/ schemas/
RUN pip install --no-deps --no-build-isolation -e . && mmtower encoders export --dir /opt/mmtower/encoders

# Beam's portable workers start from this entrypoint (apache/beam_python3.11_sdk's boot).
COPY --from=apache/beam_python3.11_sdk:2.61.0 /opt/apache/beam /opt/apache/beam
ENTRYPOINT ["/opt/apache/beam/boot"]
