"""The floor of the stack fusink runs on: Flask views that parse the body and answer {}.

bench/run.py serves it with fusink's gunicorn.conf.py (`--sinks floor`), so its
rate is what gunicorn and Flask reach on this machine before any work is done. The
body is parsed with orjson, as fusink parses it (Flask's own json module takes about
2.5 times as long per event).
"""

import orjson
from flask import Flask, request

app = Flask(__name__)


@app.post("/ingest-batch")
def ingest_batch():
    orjson.loads(request.get_data())
    return {}


@app.get("/fuagent-sync-status")
def get_sync_status():
    return {}


@app.get("/healthz")
def get_health():
    return {}
