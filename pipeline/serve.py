"""Entry point: `python -m pipeline.serve --model URI [options]` (or `--like DIR`).

Everything that can be wrong is found before the service listens: a bad flag, a model it cannot
load, a port it cannot bind are one line on stderr and exit 2 (a model store that does not answer:
exit 3). Then uvicorn serves the app (service.app) until SIGTERM or Ctrl-C, which stop taking new
requests, answer those in flight, and exit 0.
"""

from __future__ import annotations

import logging
import signal
import socket
import sys

from pipeline.errors import ConfigError, RunFailed, report_bug


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    from service.flags import help_text, read_config

    if "--help" in argv or "-h" in argv:
        print(help_text())
        return 0
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("apache_beam", "google", "urllib3", "mlflow", "alembic", "uvicorn.error"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    stopped: list[int] = []
    try:
        config = read_config(argv)
        sock = listen(config.host, config.port)
        from service.served import load

        served = load(config)
        return serve(config, served, sock, stopped)
    except (ConfigError, RunFailed) as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("error: interrupted by SIGINT before the service started", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - a bug: one line for the person, the trace in a file
        return report_bug(e)


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the model loads: a port in use is exit 2 at once."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as e:
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


def serve(config, served, sock: socket.socket, stopped: list[int]) -> int:
    """Runs uvicorn on the bound socket until a stop signal; 0 once it drained."""
    import uvicorn

    from service.app import create_app
    from service.requestlog import open_log

    app = create_app(served, config, open_log(config, served))
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level="warning",
            access_log=config.access_log,
            timeout_graceful_shutdown=30,
            lifespan="on",
        )
    )
    # uvicorn drains on SIGINT and SIGTERM, then raises the signal again: here it is noted.
    previous = {s: signal.signal(s, lambda n, _f: stopped.append(n)) for s in (2, 15)}
    try:
        server.run(sockets=[sock])
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if not server.started:
        raise RunFailed("the service did not start (see the log above)")
    if stopped:
        logging.getLogger("service").info(
            "stopped by %s after answering the requests in flight", signal.Signals(stopped[0]).name
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
