# The online service's image, for Cloud Run and Vertex AI custom containers (README: online
# serving). It serves on $PORT (Cloud Run) or $AIP_HTTP_PORT (Vertex AI; AIP_HEALTH_ROUTE and
# AIP_PREDICT_ROUTE are honoured too) the model named by BEAMSCORE_MODEL (a gs:// file or an MLflow
# URI), or as a committed night did with BEAMSCORE_LIKE=gs://bucket/out/2026-03-01. The same
# image runs a night small enough for one machine as a Cloud Run job: command `beamscore`, the
# batch job's flags as its arguments (DirectRunner, no Dataflow start-up).
# tests/service/test_image.py performs these steps in a fresh virtualenv and answers a request.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY setup.py constraints.txt MANIFEST.in ./
COPY pipeline pipeline
COPY transforms transforms
COPY models models
COPY scoring scoring
COPY service service
RUN pip install -c constraints.txt ".[xgboost,lightgbm,explain]"
RUN useradd --create-home --uid 10001 beamscore
USER 10001
ENV PORT=8080
EXPOSE 8080
CMD ["beamscore-serve", "--host", "0.0.0.0"]
