"""mmtower: a multimodal two-tower recommender built on TensorFlow Extended.

Dependencies are pinned in requirements.lock and installed by `make setup`
(`pip install --no-deps -r requirements.lock`); this file declares only the
packages and the console script, so that pip never re-resolves the stack.
"""

from setuptools import find_packages, setup

setup(
    name="mmtower",
    version="0.1.0",
    description="Multimodal two-tower recommender on TFX",
    python_requires=">=3.11",
    packages=find_packages(include=["app*", "pipeline*", "components*", "towers*", "mmdata*", "serving*", "schemas*"]),
    package_data={"schemas": ["*/*.pbtxt"], "app": ["templates/*.html"]},
    include_package_data=True,
    entry_points={"console_scripts": ["mmtower = app.cli:main"]},
)
