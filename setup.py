"""Install requirements live here only; Dataflow's --setup_file ships this to the workers.

The ranges below say what the code supports; constraints.txt says what was tested. Each
requirement below is pinned to its constraints.txt version, so the Dataflow workers (which install
this package from its sdist) run the launcher's versions of everything a model or the pipeline
touches directly (scikit-learn's own scipy and threadpoolctl included). Transitive packages
beyond those follow the worker's resolver; to fix every one of them too, build a custom SDK
container (FROM apache/beam_python3.11_sdk, pip install -c constraints.txt .) and pass it as
--sdk_container_image.
"""

import pathlib
import re

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).resolve().parent


def _normalized(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def locked(requirements: list[str]) -> list[str]:
    """Each requirement pinned to the version in constraints.txt, where that file has it."""
    lock_file = HERE / "constraints.txt"
    if not lock_file.exists():
        return requirements
    pins = {}
    for line in lock_file.read_text().splitlines():
        m = re.fullmatch(r"([A-Za-z0-9._-]+)==([^\s;#]+)", line.strip())
        if m:
            pins[_normalized(m[1])] = m[2]
    out = []
    for req in requirements:
        name, extras = re.match(r"([A-Za-z0-9._-]+)(\[[^\]]*\])?", req).groups()
        version = pins.get(_normalized(name))
        out.append(f"{name}{extras or ''}=={version}" if version else req)
    return out


setup(
    name="beamscore",
    version="0.1.0",
    description="Columnar batch scoring of tabular ML models on Apache Beam",
    python_requires=">=3.11",
    packages=find_packages(
        include=[
            "pipeline",
            "pipeline.*",
            "scoring",
            "scoring.*",
            "service",
            "service.*",
            "transforms",
            "transforms.*",
            "models",
            "models.*",
        ]
    ),
    # The run report's page skeleton and styles (the commit stage renders it on the workers).
    package_data={"pipeline.report": ["assets/*"]},
    install_requires=locked(
        [
            "apache-beam[gcp]>=2.60,<3",
            # Pinned: a pickled model loads only with the scikit-learn it was saved with.
            "scikit-learn==1.9.1",
            # What unpickling a scikit-learn model imports besides scikit-learn itself.
            "scipy>=1.10,<2",
            "threadpoolctl>=3,<4",
            "joblib>=1.3,<2",
            "pandas>=2.2,<4",
            "pyarrow>=17,<26",
            "numpy>=1.26,<3",
            "google-cloud-storage>=2.14,<4",
            # runs:/ and models:/ model URIs; skops loads MLflow 3's default sklearn format.
            "mlflow>=3.1,<4",
            "skops>=0.10,<1",
            # The BigQuery sink's load jobs (also a dependency of apache-beam[gcp]).
            "google-cloud-bigquery>=3.20,<4",
            # OpenLineage run events (--openlineage_url); only the launcher sends them.
            "openlineage-python>=1.30,<2",
            # The online service (python -m pipeline.serve): FastAPI under uvicorn, with its
            # fast HTTP parser and event loop, and Prometheus metrics.
            "fastapi>=0.110,<1",
            "uvicorn>=0.30,<1",
            "httptools>=0.6,<1",
            "uvloop>=0.19,<1",
            "prometheus-client>=0.20,<1",
        ]
    ),
    extras_require={
        "test": locked(
            [
                "pytest>=8,<10",
                "pytest-xdist>=3.5,<4",
                "hypothesis>=6.100,<7",
                "ruff>=0.6,<1",
                # A real Cloud Storage server on loopback for the gs:// tests.
                "gcp-storage-emulator>=2024.1",
                # Drives Debian's Chromium (scripts/install_browser.sh) for the run report's tests.
                "playwright>=1.50,<2",
                # Checks the custom OpenLineage facets against their JSON schemas.
                "jsonschema>=4.18,<5",
                # The service's tests talk HTTP to a real uvicorn on loopback.
                "httpx>=0.27,<1",
            ]
        ),
        # The docs site (docs/, mkdocs.yml): `mkdocs build --strict` runs in ./run_tests.sh.
        "docs": locked(["mkdocs>=1.6,<2", "mkdocs-material>=9.5,<10"]),
        # Models of these libraries (README: Model kinds): native model files, their
        # scikit-learn wrappers and MLflow flavours. The launcher refuses such a model, naming
        # the extra, when its library cannot be imported.
        # xgboost-cpu: XGBoost without its CUDA libraries (about 5 MB against 700 MB); the same
        # `xgboost` module. A GPU install of xgboost serves as well.
        "xgboost": locked(["xgboost-cpu>=3.1,<4"]),
        "lightgbm": locked(["lightgbm>=4,<5"]),
        # --explain on scikit-learn tree models: shap's TreeExplainer (0.51 is the last release
        # for Python 3.11, the workers' and the Flex Template's Python).
        "explain": locked(["shap>=0.46,<1"]),
    },
    entry_points={
        "console_scripts": [
            "beamscore=pipeline.run:main",
            "beamscore-serve=pipeline.serve:main",
        ]
    },
)
