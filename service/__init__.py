"""Online scoring with the batch job's contract: a FastAPI app over the scoring core.

`python -m pipeline.serve` loads a model (as the batch job decides, or exactly as a committed
night did) and answers `POST /predict` and `POST /invocations` with the batch predictions' columns
and values, and the batch job's rejections.
"""
