"""The FastAPI app: the routes of the contract over a loaded model.

    POST /predict        {"instances": [...]} -> {"predictions", "errors", "model"}
    POST /invocations    MLflow's scoring formats -> as `mlflow models serve` answers
    GET  /healthz        alive;  GET /readyz: ready to score (503 before, and while stopping)
    GET  /model          what scores the rows, and how
    GET  /metrics        Prometheus

Every answer is JSON (but /metrics). Whatever the client sends is a 2xx or a 4xx with a one-line
`{"error": ...}` body (MLflow's `{"error_code", "message"}` on /invocations); a 500 is a bug, and
its body holds no traceback.
"""

from __future__ import annotations

import asyncio
import logging
import time

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from models.errors import one_line
from scoring.rows import dumps
from service import answers, bodies
from service.batcher import Batcher
from service.bodies import BadRequest
from service.flags import ServeConfig
from service.metrics import CONTENT_TYPE, Metrics
from service.served import Served

_LOG = logging.getLogger("service")
JSON = "application/json"
# Bodies up to this size are parsed on the event loop; larger ones on a thread.
_INLINE_BYTES = 256 << 10


class State:
    """What the routes share: the model, the scoring thread, the metrics, readiness."""

    def __init__(self, served: Served, config: ServeConfig, log=None):
        self.served = served
        self.config = config
        self.metrics = Metrics(
            served.spec.model.uri, served.spec.model.version, served.spec.model.sha256
        )
        self.scoring = answers.Scoring(served, self.metrics, log)
        self.batcher = Batcher(self.scoring, config.max_batch_rows)
        self.names = answers.output_names(served)
        self.log = log
        self.ready = False


def _json(status: int, value) -> Response:
    return Response(dumps(value), status_code=status, media_type=JSON)


def _error(status: int, message: str) -> Response:
    return _json(status, {"error": message})


def create_app(served: Served, config: ServeConfig, log=None) -> FastAPI:
    """The app serving this model; the scoring thread starts and stops with it."""
    state = State(served, config, log)

    async def lifespan(app: FastAPI):
        state.batcher.start()
        state.ready = True
        _LOG.info(
            "serving %s (version %s) on http://%s:%d, ready in %.2fs",
            served.spec.model.uri,
            served.spec.model.version,
            config.host,
            config.port,
            served.loaded_s,
        )
        yield
        state.ready = False  # uvicorn stopped taking requests and answered those in flight
        await asyncio.to_thread(state.batcher.stop)
        if log is not None:
            await asyncio.to_thread(log.close)

    app = FastAPI(
        title="beamscore",
        description="Online scoring with the batch job's contract",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.beamscore = state

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> Response:
        if e.status_code == 404:
            return _error(404, f"no route {request.url.path} (see GET /model, POST /predict)")
        if e.status_code == 405:
            return _error(405, f"{request.method} is not a method of {request.url.path}")
        return _error(e.status_code, one_line(e))

    @app.exception_handler(Exception)
    async def bug(request: Request, e: Exception) -> Response:
        _LOG.error("internal error answering %s %s", request.method, request.url.path, exc_info=e)
        return _error(500, f"internal error (a bug in beamscore): {one_line(e, with_type=True)}")

    async def score(request: Request, mlflow: bool) -> Response:
        try:
            body = await _body(request, config.max_body_bytes)
            _content_type(request)
            if len(body) > _INLINE_BYTES:
                document = await asyncio.to_thread(bodies.parse_json, body)
            else:
                document = bodies.parse_json(body)
            if mlflow:
                instances = bodies.mlflow_instances(document, config.max_rows)
                render = answers.mlflow_answer(instances)
            else:
                instances = bodies.vertex_instances(document, config.max_rows)
                render = answers.predict_answer(instances, served)
            answers.check_keys(instances, served, state.names)
        except BadRequest as e:
            if mlflow:
                return _json(e.status, {"error_code": "BAD_REQUEST", "message": e.message})
            return _error(e.status, e.message)
        if not instances:
            status, content = render(answers.EMPTY)
        else:
            status, content = await asyncio.wrap_future(state.batcher.submit(instances, render))
        return Response(content, status_code=status, media_type=JSON)

    async def predict(request: Request) -> Response:
        return await score(request, mlflow=False)

    async def invocations(request: Request) -> Response:
        return await score(request, mlflow=True)

    async def healthz() -> Response:
        return _json(200, {"status": "alive"})

    async def readyz() -> Response:
        if not state.ready:
            return _error(503, "not ready: starting or stopping")
        return _json(200, {"status": "ready", "model": served.spec.model.uri})

    async def model() -> Response:
        return _json(200, served.describe())

    async def metrics() -> Response:
        return Response(state.metrics.text(), media_type=CONTENT_TYPE)

    app.add_api_route("/predict", predict, methods=["POST"])
    if config.predict_route and config.predict_route != "/predict":
        app.add_api_route(config.predict_route, predict, methods=["POST"])
    app.add_api_route("/invocations", invocations, methods=["POST"])
    app.add_api_route("/healthz", healthz, methods=["GET"])
    app.add_api_route("/readyz", readyz, methods=["GET"])
    # MLflow's and SageMaker's health routes, and Vertex AI's (AIP_HEALTH_ROUTE): ready or not.
    for route in {"/ping", "/health", config.health_route} - {None, "/healthz", "/readyz"}:
        app.add_api_route(route, readyz, methods=["GET"])
    app.add_api_route("/model", model, methods=["GET"])
    app.add_api_route("/metrics", metrics, methods=["GET"])
    known = {r.path for r in app.routes}
    return _Measured(app, state.metrics, known)


async def _body(request: Request, limit: int) -> bytes:
    """The request's body, refused (413) once it is larger than the limit."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise BadRequest(
            413, f"the body is {int(length):,} bytes, more than --max_body_mb allows ({limit:,})"
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadRequest(413, f"the body is more than --max_body_mb allows ({limit:,} bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


def _content_type(request: Request) -> None:
    """JSON only (a missing content type is taken as JSON, as curl -d sends form type)."""
    value = request.headers.get("content-type", "")
    mime, _, params = value.partition(";")
    mime = mime.strip().lower()
    if mime and mime not in (JSON, "application/x-www-form-urlencoded", "text/json"):
        raise BadRequest(415, f"the content type is {value!r}: send application/json")
    charset = params.strip().lower().removeprefix("charset=").strip('"')
    if params.strip() and charset not in ("utf-8", "utf8"):
        raise BadRequest(415, f"the content type is {value!r}: send UTF-8 JSON")


class _Measured:
    """ASGI middleware: every answer counted by route and status, and timed."""

    def __init__(self, app: FastAPI, metrics: Metrics, known: set[str]):
        self.app = app
        self._metrics = metrics
        self._known = known

    def __getattr__(self, name: str):
        return getattr(self.app, name)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        route = scope["path"] if scope["path"] in self._known else "other"
        status = 500

        async def counted(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counted)
        finally:
            self._metrics.requests.labels(route, str(status)).inc()
            self._metrics.latency.labels(route).observe(time.perf_counter() - start)
