"""Read a .safetensors file into numpy arrays with the `safetensors` package's numpy API (no torch needed)."""

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file


def load(path: str) -> dict[str, np.ndarray]:
    """name -> array for every tensor in `path` (metadata is skipped).

    Raises FileNotFoundError for a missing file and ValueError naming the file
    for one that is not a readable .safetensors file (truncated, corrupt header).
    """
    try:
        return load_file(path)
    except SafetensorError as error:
        raise ValueError(f"{path} is not a readable .safetensors file: {error}") from error
