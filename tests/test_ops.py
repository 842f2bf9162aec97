"""/healthz, the OpenAPI document, unknown routes and methods, settings."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from openapi_spec_validator import validate
from tornado.web import RequestHandler

import settings as settings_module
from handlers import ROUTES
from handlers.base import BaseHandler
from settings import SettingsError
from tests.helpers import assert_error, bearer, issue_token

ROOT = Path(__file__).resolve().parent.parent


async def test_healthz(client):
    r = await client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "db": "ok", "xmpp": "disabled", "component": "disabled", "storage": "ok"}


async def test_healthz_names_failing_storage(client, service):
    # About the local store's layout: its staging directory replaced by a file breaks writes.
    tmp = service.parts.store.tmp
    tmp.rename(tmp.with_name("moved"))
    tmp.write_text("not a directory")  # writes into tmp/ now fail, even for root
    r = await client.get("/healthz")
    assert r.status_code == 503
    assert r.json() == {
        "status": "unavailable",
        "db": "ok",
        "xmpp": "disabled",
        "component": "disabled",
        "storage": "unavailable",
    }
    tmp.unlink()
    tmp.with_name("moved").rename(tmp)
    assert (await client.get("/healthz")).status_code == 200


async def test_openapi_is_valid_and_served(client):
    r = await client.get("/api/v1/openapi.yaml")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/yaml")
    spec = yaml.safe_load(r.text)
    validate(spec)
    assert spec["openapi"].startswith("3.1")


def _route_to_openapi(pattern: str) -> str:
    path = pattern.removesuffix("/?")
    path = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", path)  # a named group is a named parameter
    path = path.replace(r"\.", ".")
    names = iter(["{slot_id}", "{name}"])
    path = re.sub(r"\(\?P<(\w+)>\[\^/\]\+\)", r"{\1}", path)
    path = re.sub(r"\(\[\^/\]\+\)", lambda _: next(names), path)
    return path + "/" if path.startswith("/api/v1/") and not path.endswith(".yaml") else path


def _methods(handler: type) -> set[str]:
    """The HTTP methods a handler class implements itself (not RequestHandler's 405 stubs, nor
    the CORS preflight every API route answers alike: documented once, in the document's
    description)."""
    methods = ("get", "post", "put", "delete", "head", "options")
    inherited = {getattr(RequestHandler, m) for m in methods} | {BaseHandler.options}
    return {m for m in methods if getattr(handler, m) not in inherited}


def test_every_route_is_documented():
    spec = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text())
    for pattern, handler in ROUTES:
        path = _route_to_openapi(pattern)
        assert path in spec["paths"], f"{pattern} ({handler.__name__}) is missing from docs/openapi.yaml as {path}"
        for method in _methods(handler):
            assert method in spec["paths"][path], f"{method.upper()} {path} is not documented"


async def test_trailing_slash_optional(client, alice):
    for path in ("/api/v1/files", "/api/v1/files/", "/api/v1/account/quota", "/api/v1/account/quota/"):
        assert (await client.get(path, headers=alice)).status_code == 200


async def test_unknown_route_and_method(client, alice):
    assert_error(await client.get("/nope"), 404)
    assert_error(await client.get("/api/v1/nothing/", headers=alice), 404)
    assert_error(await client.put("/api/v1/files/", headers=alice), 405)
    assert_error(await client.post("/api/v1/files/stats/", headers=alice), 405)


async def test_bad_authorization_headers(client):
    for value in ("", "Basic abc", "Bearer", "Bearer a b", "Bearer \u00e9t\u00e9".encode()):
        r = await client.get("/api/v1/files/", headers={"Authorization": value})
        assert_error(r, 401)
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    r = await client.get("/api/v1/files/")
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"


async def test_auth_keyword_case_insensitive(client, alice):
    token = alice["Authorization"].split()[1]
    assert (await client.get("/api/v1/files/", headers={"Authorization": f"BEARER {token}"})).status_code == 200


async def test_expired_and_revoked_tokens(client, service):
    issued = await issue_token(service.parts, "t@example.org")
    headers = bearer(issued.token)
    assert (await client.get("/api/v1/files/", headers=headers)).status_code == 200
    await service.parts.db.tokens.update_one({"_id": issued.token_id}, {"$set": {"expires": issued.expires.replace(year=2000)}})
    assert_error(await client.get("/api/v1/files/", headers=headers), 401)
    other = await issue_token(service.parts, "t@example.org")
    assert await service.parts.tokens.revoke("t@example.org", other.token_id)
    assert_error(await client.get("/api/v1/files/", headers=bearer(other.token)), 401)


async def test_tokens_stored_as_hashes(service):
    issued = await issue_token(service.parts, "h@example.org")
    doc = await service.parts.db.tokens.find_one({"_id": issued.token_id})
    assert issued.token not in str(doc)
    assert len(issued.token) >= 43  # 32 random bytes, url-safe


def test_settings_env_overrides_and_types(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("server:\n  port: 9000\nadmins: [a@x.org]\nlimits:\n  max_file_size: 10\n")
    s = settings_module.load(
        path, env={"GALLERY_SERVER_PORT": "9100", "GALLERY_ADMINS": "b@x.org, c@y.org", "GALLERY_XMPP_REQUIRE_TLS": "false"}
    )
    assert s.server.port == 9100 and s.admins == ["b@x.org", "c@y.org"] and s.limits.max_file_size == 10
    assert s.xmpp.require_tls is False
    assert s.public_url == "http://127.0.0.1:9100"
    several = settings_module.load(path, env={"GALLERY_SERVER_PROCESSES": "0", "GALLERY_STORAGE_BACKEND": "gridfs"})
    assert several.processes == (os.cpu_count() or 1) and several.storage.backend == "gridfs"
    assert settings_module.load(path, env={}).processes == 1 and s.storage.backend == "local"


@pytest.mark.parametrize(
    ("text", "env", "key"),
    [
        ("server:\n  port: 70000\n", {}, "server.port"),
        ("", {"GALLERY_SERVER_PORT": "eighty"}, "server.port"),
        ("limits:\n  max_file_size: 0\n", {}, "limits.max_file_size"),
        ("", {"GALLERY_XMPP_VERIFY_TLS": "maybe"}, "xmpp.verify_tls"),
        ("server:\n  colour: red\n", {}, "server.colour"),
        ("", {"GALLERY_SERVER_PUBLIC_URL": "ftp://x"}, "server.public_url"),
        ("", {"GALLERY_MONGODB_URI": "postgres://x"}, "mongodb.uri"),
        ("", {"GALLERY_XMPP_JID": "svc@x.org"}, "xmpp.password"),
        ("", {"GALLERY_SERVER_PROCESSES": "-1"}, "server.processes"),
        ("", {"GALLERY_STORAGE_BACKEND": "s3"}, "storage.backend"),
        ("storage:\n  gridfs_chunk_size: 100\n", {}, "storage.gridfs_chunk_size"),
    ],
)
def test_invalid_settings_name_the_key(tmp_path, text, env, key):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(SettingsError, match=re.escape(key)):
        settings_module.load(path, env=env)


def test_invalid_setting_stops_startup_with_one_line(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "GALLERY_SERVER_PORT": "nope"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "server.py")], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == ["gallery: invalid setting: server.port: expected an integer, got 'nope'"]
