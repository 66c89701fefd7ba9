"""The flags of `python -m pipeline.serve`, and the environment a container platform sets.

`SERVE_FLAGS` is the one list of them (--help, the docs' reference). The model flags are the
batch job's own (pipeline.flags.MODEL_FLAGS): the same words score the same way.
"""

from __future__ import annotations

import dataclasses
import os

import pyarrow as pa

from pipeline.errors import ConfigError
from pipeline.flags import (
    MODEL_FLAGS,
    Flag,
    OneLineParser,
    absolute,
    bounded_number,
    name_list,
    sha256_hex,
    switch,
    type_overrides,
)
from scoring.decide import UNKNOWN_CATEGORIES

# The model from the environment (a container image's one configuration): --model's default.
MODEL_VARIABLE = "BEAMSCORE_MODEL"
LIKE_VARIABLE = "BEAMSCORE_LIKE"
DEFAULT_PORT = 8080

SERVE_FLAGS = (
    dataclasses.replace(
        MODEL_FLAGS["model"],
        required=False,
        help=MODEL_FLAGS["model"].help
        + f" (default: {MODEL_VARIABLE}; required unless --like is given)",
    ),
    Flag(
        "like",
        "DIR",
        "serve as the committed night in DIR did (local or gs://): its manifest's model, pinned by "
        "its SHA-256, its decided feature and key types, its unknown-category rule and its "
        f"--explain (default: {LIKE_VARIABLE}); the model flags are then not given",
    ),
    MODEL_FLAGS["model_sha256"],
    MODEL_FLAGS["allow_version_mismatch"],
    MODEL_FLAGS["features"],
    MODEL_FLAGS["column_types"],
    MODEL_FLAGS["unknown_categories"],
    MODEL_FLAGS["explain"],
    MODEL_FLAGS["mlflow_tracking_uri"],
    Flag(
        "host",
        "H",
        "the address to listen on (0.0.0.0 for every interface, as a container needs)",
        default="127.0.0.1",
    ),
    Flag(
        "port",
        "P",
        f"the port to listen on (default: AIP_HTTP_PORT, then PORT, then {DEFAULT_PORT})",
    ),
    Flag("max_rows", "N", "the most rows (instances) one request may hold", default="10000"),
    Flag("max_body_mb", "MB", "the largest request body, in MiB", default="32"),
    Flag(
        "max_batch_rows",
        "N",
        "the most rows scored in one model call when concurrent requests are scored together "
        "(a request is never split; a row's outcome does not depend on its batch)",
        default="4096",
    ),
    Flag("access_log", "", "log one line per request (default: off)"),
    Flag(
        "log_dir",
        "DIR",
        "write the rows scored and rejected (local or gs://) in the batch output's layout, one "
        "committed segment per --log_rotate_s: DIR/<run_date>/<run_id>-<n>/{predictions,errors,"
        "manifest.json}; the last one at shutdown (default: off)",
    ),
    Flag("log_rotate_s", "S", "seconds per request-log segment", default="300"),
)

USAGE = (
    "usage: python -m pipeline.serve --model URI [--explain K] [--unknown_categories ...] "
    "[--features ...] [--host H] [--port P] | --like DIR [--host H] [--port P]"
)

_EPILOG = """\
Routes: POST /predict ({"instances": [{column: value, ...}, ...]}), POST /invocations (MLflow's
scoring formats), GET /healthz, GET /readyz, GET /model, GET /metrics (Prometheus).
Environment: PORT (Cloud Run), AIP_HTTP_PORT, AIP_HEALTH_ROUTE and AIP_PREDICT_ROUTE (Vertex AI
custom containers), BEAMSCORE_MODEL, BEAMSCORE_LIKE, MLFLOW_TRACKING_URI.
exit codes: 0 stopped (SIGTERM or Ctrl-C, after the requests in flight were answered); 2 bad
configuration (a bad flag, a model it cannot load, a port it cannot listen on), before it
listens; 3 a model store that does not answer; 4 internal error (a bug)."""


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    """The service's flags, checked, with their defaults applied.

    Attributes:
        model: the model URI (None with --like).
        like: the committed night to serve as (None: decided from the model).
        model_sha256: the model's pinned SHA-256.
        allow_version_mismatch: load a model saved with another library version.
        features: --features.
        overrides: --column_types.
        unknown_categories: reject or score.
        explain: --explain's value (None: off).
        tracking_uri: the MLflow server for runs:/ and models:/ URIs.
        host: where to listen.
        port: the port.
        max_rows: the most instances in a request.
        max_body_bytes: the largest request body.
        max_batch_rows: the most rows in one model call.
        access_log: log each request.
        log_dir: the request log's directory (None: off).
        log_rotate_s: seconds per request-log segment.
        predict_route: POST route of /predict's answer (AIP_PREDICT_ROUTE adds another).
        health_route: GET route answering as /healthz does (AIP_HEALTH_ROUTE).
    """

    model: str | None
    like: str | None
    model_sha256: str | None
    allow_version_mismatch: bool
    features: tuple[str, ...] | None
    overrides: dict[str, pa.DataType]
    unknown_categories: str
    explain: str | None
    tracking_uri: str | None
    host: str
    port: int
    max_rows: int
    max_body_bytes: int
    max_batch_rows: int
    access_log: bool
    log_dir: str | None = None
    log_rotate_s: float = 300.0
    predict_route: str | None = None
    health_route: str | None = None


def parser() -> OneLineParser:
    """argparse over SERVE_FLAGS: a bad word is one line, exit 2."""
    p = OneLineParser(add_help=False, allow_abbrev=False)
    for flag in SERVE_FLAGS:
        if flag.switch:
            p.add_argument(f"--{flag.name}", nargs="?", const="true", default="false")
        else:
            p.add_argument(f"--{flag.name}", default=flag.default)
    return p


def help_text() -> str:
    """What --help prints: every flag with its meaning and default, routes, exit codes."""
    lines = [USAGE, "", "Serves a model online with the batch job's contract.", ""]
    for flag in SERVE_FLAGS:
        lines += flag.help_lines()
    return "\n".join([*lines, "", _EPILOG])


def read_config(argv: list[str], env: dict[str, str] | None = None) -> ServeConfig:
    """Checks every flag and the container's environment; raises ConfigError (exit 2)."""
    env = os.environ if env is None else env
    args, rest = parser().parse_known_args(argv)
    for word in rest:
        if word.startswith("-"):
            raise ConfigError(f"unknown flag {word.split('=', 1)[0]} (see --help and the README)")
        raise ConfigError(f"unexpected word {word!r} on the command line (see --help)")
    seen: set[str] = set()
    for word in argv:
        flag = word.split("=", 1)[0]
        if flag.startswith("--"):
            if flag in seen:
                raise ConfigError(f"{flag} is given more than once")
            seen.add(flag)
    like = args.like or env.get(LIKE_VARIABLE) or None
    model = args.model or (None if like else env.get(MODEL_VARIABLE)) or None
    if like and args.model:
        raise ConfigError(
            "--like DIR serves the model its night pinned; leave --model out (or serve --model "
            "without --like)"
        )
    if like:
        given = [
            f"--{name}"
            for name in ("model_sha256", "features", "column_types", "explain")
            if getattr(args, name) is not None
        ]
        if args.unknown_categories != UNKNOWN_CATEGORIES[0]:
            given.append("--unknown_categories")
        if given:
            raise ConfigError(
                f"--like DIR scores as its night decided; {', '.join(given)} would change that: "
                "leave them out"
            )
    if not model and not like:
        raise ConfigError(f"--model is required (or --like DIR, or {MODEL_VARIABLE})")
    if args.unknown_categories not in UNKNOWN_CATEGORIES:
        raise ConfigError(
            f"--unknown_categories {args.unknown_categories!r} is not one of "
            f"{', '.join(UNKNOWN_CATEGORIES)}"
        )
    tracking_uri = args.mlflow_tracking_uri or env.get("MLFLOW_TRACKING_URI") or None
    if model and model.startswith(("models:/", "runs:/")) and not tracking_uri:
        raise ConfigError(
            f"--model {model} is in an MLflow registry: say which with --mlflow_tracking_uri "
            "or MLFLOW_TRACKING_URI"
        )
    port = args.port or env.get("AIP_HTTP_PORT") or env.get("PORT") or DEFAULT_PORT
    return ServeConfig(
        model=absolute(model) if model else None,
        like=absolute(like).rstrip("/") if like else None,
        model_sha256=sha256_hex(args.model_sha256),
        allow_version_mismatch=switch("--allow_version_mismatch", args.allow_version_mismatch),
        features=name_list("--features", args.features),
        overrides=type_overrides(args.column_types),
        unknown_categories=args.unknown_categories,
        explain=args.explain,
        tracking_uri=tracking_uri,
        host=args.host,
        port=bounded_number("--port", port, int, 0, 65535),
        max_rows=bounded_number("--max_rows", args.max_rows, int, 1, 10_000_000),
        max_body_bytes=int(
            bounded_number("--max_body_mb", args.max_body_mb, float, 0.001, 4096) * 2**20
        ),
        max_batch_rows=bounded_number("--max_batch_rows", args.max_batch_rows, int, 1, 10_000_000),
        access_log=switch("--access_log", args.access_log),
        log_dir=absolute(args.log_dir).rstrip("/") if args.log_dir else None,
        log_rotate_s=bounded_number("--log_rotate_s", args.log_rotate_s, float, 0.1, 86400),
        predict_route=_route("AIP_PREDICT_ROUTE", env),
        health_route=_route("AIP_HEALTH_ROUTE", env),
    )


def _route(variable: str, env) -> str | None:
    """A route a container platform names (Vertex AI), which must be a path."""
    value = env.get(variable)
    if not value:
        return None
    if not value.startswith("/") or any(c.isspace() for c in value):
        raise ConfigError(f"{variable}={value!r} is not a URL path (it must start with /)")
    return value
