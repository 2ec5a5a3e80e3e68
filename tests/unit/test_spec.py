"""The OpenAPI document: built from the app, committed, served byte for byte."""

import json
import os
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urljoin

import pytest

from app import create_app, spec
from app.cli import spec_command

REPO = Path(__file__).resolve().parents[2]
SPECCHECK = REPO.parent / "shared" / "speccheck" / "check_spec.sh"


def status_operation_reached(document: dict, spec_url: str) -> str:
    """The URL fuagent calls for the checkpoint, resolved its way."""
    server = document["servers"][0]
    base = urljoin(spec_url, server["url"])
    return urljoin(base, server["x-fuagent-status-endpoint"])


def test_committed_spec_is_up_to_date(runner):
    result = runner.invoke(spec_command, ["--check", "--output", str(REPO / "openapi.json")])
    assert result.exit_code == 0, result.output


def test_served_spec_is_the_committed_file_byte_for_byte(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.data == (REPO / "openapi.json").read_bytes()


def test_status_extension_reaches_the_status_operation(app):
    document = spec.build(app)
    reached = status_operation_reached(document, "http://sink.example/openapi.json")
    assert reached == "http://sink.example/fuagent-sync-status"
    assert "get" in document["paths"]["/fuagent-sync-status"]


def test_public_url_prefix_is_kept_when_fuagent_resolves_the_status(settings, redis):
    from dataclasses import replace

    app = create_app(replace(settings, public_url="https://host/v1"), redis)
    document = spec.build(app)
    reached = status_operation_reached(document, "https://host/v1/openapi.json")
    assert reached == "https://host/v1/fuagent-sync-status"
    assert document["servers"][0]["url"] + "fuagent-sync-status" == reached


def test_paths_follow_the_configured_endpoints(settings, redis):
    from dataclasses import replace

    app = create_app(replace(settings, ingest_path="/in", status_path="/cp"), redis)
    document = spec.build(app)
    assert document["paths"]["/in"]["post"]["operationId"] == "ingestBatch"
    assert document["paths"]["/cp"]["get"]["operationId"] == "getSyncStatus"
    assert document["servers"][0]["x-fuagent-status-endpoint"] == "cp"


def test_every_operation_is_documented_and_secured_or_public(app):
    document = spec.build(app)
    public = {"/healthz", "/readyz", "/openapi.json", "/metrics"}
    ids = []
    for path, operations in document["paths"].items():
        for operation in operations.values():
            ids.append(operation["operationId"])
            assert operation["tags"] and operation["summary"]
            assert (operation["security"] == []) == (path in public), path
    assert len(ids) == len(set(ids))


def test_spec_command_writes_only_when_changed(runner, tmp_path):
    target = tmp_path / "openapi.json"
    first = runner.invoke(spec_command, ["--output", str(target)])
    assert first.exit_code == 0 and "wrote" in first.output
    mtime = os.stat(target).st_mtime_ns
    second = runner.invoke(spec_command, ["--output", str(target)])
    assert "unchanged" in second.output
    assert os.stat(target).st_mtime_ns == mtime
    json.loads(target.read_text())


def test_spec_check_fails_on_a_stale_file(runner, tmp_path):
    target = tmp_path / "openapi.json"
    target.write_text("{}\n")
    result = runner.invoke(spec_command, ["--check", "--output", str(target)])
    assert result.exit_code == 1
    assert "stale" in result.output


def test_app_writes_spec_file_at_start_when_configured(settings, redis, tmp_path):
    from dataclasses import replace

    target = tmp_path / "openapi.json"
    create_app(replace(settings, spec_file=str(target)), redis)
    assert target.read_bytes() == (REPO / "openapi.json").read_bytes()


def test_generated_typescript_client_type_checks():
    if not SPECCHECK.exists() or not shutil.which("npm"):
        if os.environ.get("CI"):
            pytest.fail(f"{SPECCHECK} or npm is missing")
        pytest.skip("the spec checker from ../shared is not here")
    result = subprocess.run(
        [str(SPECCHECK), str(REPO / "openapi.json")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1].startswith("SPECCHECK PASS")
