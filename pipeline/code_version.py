"""A fingerprint of the project's own code, for TFX's cache key.

Transform and Trainer name their code by dotted path, which TFX cannot
fingerprint: a changed preprocessing_fn would silently reuse old outputs. The
pipeline passes this hash in their custom_config so that changed code re-runs
them and unchanged code is skipped.
"""

import hashlib
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CODE_PACKAGES = ("components", "towers", "mmdata")


def code_version(root: str = ROOT, packages: tuple[str, ...] = CODE_PACKAGES) -> str:
    """sha256 (first 16 hex digits) over every .py file of `packages`, by relative path."""
    digest = hashlib.sha256()
    for package in packages:
        for folder, _, files in sorted(os.walk(os.path.join(root, package))):
            for name in sorted(f for f in files if f.endswith(".py")):
                path = os.path.join(folder, name)
                digest.update(os.path.relpath(path, root).encode())
                with open(path, "rb") as f:
                    digest.update(f.read())
    return digest.hexdigest()[:16]
