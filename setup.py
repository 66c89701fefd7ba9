"""Install requirements live here only; Dataflow's --setup_file ships this to the workers."""

from setuptools import find_packages, setup

setup(
    name="beamscore",
    version="0.1.0",
    description="Columnar batch scoring of tabular ML models on Apache Beam",
    python_requires=">=3.11",
    packages=find_packages(
        include=["pipeline", "pipeline.*", "transforms", "transforms.*", "models", "models.*"]
    ),
    install_requires=[
        "apache-beam[gcp]>=2.60,<3",
        # Pinned: a pickled model loads only with the scikit-learn it was saved with.
        "scikit-learn==1.9.1",
        "joblib>=1.3,<2",
        "pandas>=2.2,<4",
        "pyarrow>=17,<26",
        "numpy>=1.26,<3",
        "google-cloud-storage>=2.14,<4",
        # runs:/ and models:/ model URIs; skops loads MLflow 3's default sklearn format.
        "mlflow>=3.1,<4",
        "skops>=0.10,<1",
    ],
    extras_require={
        "test": [
            "pytest>=8,<10",
            "pytest-xdist>=3.5,<4",
            "hypothesis>=6.100,<7",
            "ruff>=0.6,<1",
            # A real Cloud Storage server on loopback for the gs:// tests.
            "gcp-storage-emulator>=2024.1",
        ],
    },
    entry_points={"console_scripts": ["beamscore=pipeline.run:main"]},
)
