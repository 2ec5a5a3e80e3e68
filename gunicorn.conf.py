"""gunicorn settings: bind and workers from $PORT and $WEB_CONCURRENCY, JSON logs."""

import os

from app import embedded
from app.config import Settings

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
# Load the app once in the master: start-up errors stop the master with their
# message, and workers fork with the app already built.
preload_app = True
timeout = 30
graceful_timeout = 30
keepalive = 5
# Several instances may share a host; a per-user control socket would clash.
control_socket_disable = True
accesslog = None  # the app logs one JSON line per request, with its request id
errorlog = "-"
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
    """Start the embedded Redis in the master, so every worker shares one."""
    settings = Settings.from_env(os.environ, serving=False)
    if not settings.redis_url and not settings.redis_cluster_url:
        embedded.ensure_server(settings.embedded_redis_dir)
