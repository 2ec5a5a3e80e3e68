"""The floor of the stack fusink runs on: Flask views that parse the body and answer {}.

bench/run.py serves it with fusink's gunicorn.conf.py (`--sinks floor`), so its
rate is what gunicorn and Flask reach on this machine before any work is done.
"""

from flask import Flask, request

app = Flask(__name__)


@app.post("/ingest-batch")
def ingest_batch():
    request.get_json()
    return {}


@app.get("/fuagent-sync-status")
def get_sync_status():
    return {}


@app.get("/healthz")
def get_health():
    return {}
