"""gunicorn settings: bind and workers from $PORT and $WEB_CONCURRENCY, JSON logs."""

import os
import shutil
import tempfile

from gunicorn.glogging import Logger

# prometheus_client chooses multiprocess mode when it is first imported, which is
# when the master preloads the app, after this file has run (so nothing above
# imports app). Each run gets a fresh directory for the workers' metric files,
# unless PROMETHEUS_MULTIPROC_DIR names one.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="fusink-metrics-")
    # Read back by on_exit; a USR2 re-exec starts from the original environment.
    os.environ["FUSINK_METRICS_DIR_OWNER"] = str(os.getpid())
os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# gunicorn's asyncio worker with the Flask app called in its loop (app/worker.py).
worker_class = "app.worker.FlaskWorker"
# uvloop, when installed, can hand the worker a client's next request before gunicorn
# 27.0.1 has reset its parser, and a request larger than the C parser keeps for that
# case closes the connection; asyncio's loop runs the reset first.
asgi_loop = "asyncio"
# Every request is called in its worker's loop, whose Redis commands go out together
# (app/worker.py); above 1, batches of 8 KiB or more go to this many threads instead.
threads = int(os.environ.get("GUNICORN_THREADS", "1"))
# Load the app once in the master: start-up errors stop the master with their
# message, and workers fork with the app already built.
preload_app = True
timeout = 30
graceful_timeout = 30
keepalive = 5
# Each worker listens on its own SO_REUSEPORT socket, so the kernel spreads
# connections over the workers; with one shared socket a single worker can end up
# holding every keep-alive connection of a load balancer while the others idle.
reuse_port = True
# Several instances may share a host; a per-user control socket would clash.
control_socket_disable = True
accesslog = None  # the app logs one JSON line per request, with its request id
errorlog = "-"
# The C HTTP/1.1 parser (gunicorn_h1c, a dependency) instead of the Python one.
http_parser = "fast"


class AppLogsRequests(Logger):
    """gunicorn's logger without its access line: the app writes its own, and with
    logconfig_dict set gunicorn would build every line only to drop it."""

    access_log_enabled = False

    def access(self, resp, req, environ, request_time):
        pass


logger_class = AppLogsRequests
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "app.logs.JsonFormatter"}},
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "stream": "ext://sys.stderr",
        }
    },
    "root": {"level": "INFO", "handlers": ["stderr"]},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": [], "propagate": True},
        # The app logs each request itself, with its request id and stream.
        "gunicorn.access": {"level": "WARNING", "handlers": [], "propagate": False},
    },
}


def on_starting(server):
    """Refuse a port another process listens on, start the embedded Redis (one for
    every worker), and log where fusink listens."""
    from app import serving

    serving.start(server)


def child_exit(server, worker):
    """Let /metrics drop the live values of a worker that has exited."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    """Remove the metrics directory this run created."""
    if os.environ.get("FUSINK_METRICS_DIR_OWNER") == str(os.getpid()):
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
