"""Test session setup: Keras 2 for TFRS/TFT/TFX, set before anything imports TensorFlow."""

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
