"""Property-based fuzzing of every operation in the service's own OpenAPI document."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from services.prosody_share import sign
from tests.helpers import ROOT, login, upload

ST = Path(sys.executable).with_name("st")
# /media/ gets a real file to serve; a code request answers 503 by contract (XMPP is not
# configured here); deleting the account or revoking tokens would end the run's own login; an
# XEP-0363 PUT needs a slot from the component, which this run has not (tests/test_component.py
# sends it every hostile request).
# The share PUT carries a token signed as Prosody signs it, for its own slot.
CONFIG = """
[parameters]
"path.slot_id" = "{slot_id}"
"path.name" = "{name}"

[[operations]]
include-name = "POST /api/v1/account/xmpp_code_request/"
checks.not_a_server_error.expected-statuses = ["2XX", "4XX", 503]

[[operations]]
include-name = "PUT /share/{{slot_id}}/{{name}}"

[operations.headers]
Authorization = "Bearer {share_token}"

[operations.parameters]
"path.slot_id" = "{share_slot}"

[[operations]]
include-name = "DELETE /api/v1/account/"
enabled = false

[[operations]]
include-name = "PUT /upload/{{slot_id}}/{{name}}"
enabled = false

[[operations]]
include-name = "DELETE /api/v1/account/tokens/"
enabled = false
"""
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


@pytest.mark.slow
@pytest.mark.timeout(600)  # schemathesis alone takes ~1 min here, several on a loaded machine
async def test_schemathesis_finds_no_server_errors_or_schema_violations(make_service, tmp_path):
    """Every operation, with a valid admin token, a fixed seed and a bounded number of examples.
    Left out: DELETE account/ and DELETE account/tokens/, which would end the run's own login
    (test_account.py covers both)."""
    admin = "fuzz@example.org"
    # /share/ is there to be fuzzed, its PUT with a token as Prosody signs it (for an empty file)
    claims = {"sub": admin, "slot": "fuzz-share-slot-01", "filename": "f.bin", "filesize": 0, "filetype": "text/plain"}
    share_token = sign("fuzz-share-secret", {**claims, "exp": int(time.time()) + 3600})
    service = await make_service(admins=[admin], prosody_share={"secret": "fuzz-share-secret"})
    try:
        headers = await login(service, admin)
        async with httpx.AsyncClient(base_url=service.url) as client:
            stored = (await upload(client, headers, b"fuzz me " * 1000, "fuzz target.txt")).json()
        config = tmp_path / "schemathesis.toml"
        config.write_text(
            CONFIG.format(slot_id=stored["slot_id"], name=stored["name"], share_token=share_token, share_slot=claims["slot"])
        )
        report = tmp_path / "events.ndjson"
        process = await asyncio.create_subprocess_exec(
            str(ST),
            "--config-file",
            str(config),
            "run",
            f"{service.url}/api/v1/openapi.yaml",
            "--url",
            service.url,
            "-H",
            f"Authorization: {headers['Authorization']}",
            "--checks",
            CHECKS,
            "--seed",
            "20261122",
            "--max-examples",
            os.environ.get("GALLERY_FUZZ_EXAMPLES", "60"),
            "--generation-database",
            "none",
            "--workers",
            "2",
            "--request-timeout",
            "30",
            "--no-color",
            "--report",
            "ndjson",
            "--report-ndjson-path",
            str(report),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(process.communicate(), 540)
    finally:
        await make_service.stop(service)
    text = output.decode("utf-8", "replace")
    Path(os.environ.get("GALLERY_FUZZ_LOG", "/dev/null")).write_text(text)
    assert process.returncode == 0, text[-20000:]
    spec = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text())
    methods = ("get", "post", "put", "delete", "head", "options", "patch")
    # every operation but the document schemathesis reads itself (GET /api/v1/openapi.yaml)
    total = sum(1 for item in spec["paths"].values() for method in item if method in methods) - 1
    left_out = CONFIG.count("enabled = false")
    assert f"Operations:       {total - left_out} selected / {total} total" in text, text[:2000]
    assert "Authentication failed" not in text, text[-5000:]
    assert "Traceback" not in report.read_text(errors="replace"), "a response leaked a traceback"
