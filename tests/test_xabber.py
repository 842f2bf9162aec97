"""The Xabber apps' own calls, replayed as they send them (shared/clients/xabber.md, read from the
apps' sources), asserting exactly what each app reads from the answers. Login is replayed in
tests/test_xabber_login.py."""

from __future__ import annotations

import hashlib
import io
import json

from PIL import Image

from handlers import ROUTES
from tests.helpers import GIF, opaque, wav

API = "/api/v1/"
WEB_ORIGIN = "https://web.xabber.com"


def png(width: int = 300, height: int = 200) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 90)).save(out, "PNG")
    return out.getvalue()


def web_headers(token: dict) -> dict:
    """jQuery's $.ajax: the bearer, a JSON content type even on a GET, and the page's origin."""
    return {**token, "Content-Type": "application/json", "Origin": WEB_ORIGIN, "Accept": "application/json, */*; q=0.01"}


def ios_multipart(fields: list[tuple[str, str | None, str, bytes]], boundary: str = "alamofire.boundary.1f2e") -> tuple:
    """Alamofire's multipart: each part with its own Content-Type header, empty when unknown."""
    out = b""
    for name, filename, part_type, content in fields:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\nContent-Type: {part_type}\r\n\r\n".encode()
        out += content + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return {"Content-Type": f"multipart/form-data; boundary={boundary}"}, out


async def ios_upload(client, token, content: bytes, name: str, mime: str, metadata: dict | None = None, **extra: str):
    parts = [("file", name, mime, content), ("media_type", None, "", mime.encode()), ("context", None, "", b"file")]
    parts += [(key, None, "", value.encode()) for key, value in extra.items()]
    if metadata is not None:
        parts.append(("metadata", None, "", json.dumps(metadata).encode()))
    headers, body = ios_multipart(parts)
    return await client.post(API + "files/upload/", headers={**token, **headers}, content=body)


async def web_upload(client, token, content: bytes, name: str, part_type: str, **fields: str):
    """chats.js: file, metadata, size, media_type, then context for voices only."""
    data = {
        "metadata": fields.pop("metadata", "{}"),
        "size": str(len(content)),
        "media_type": fields.pop("media_type", part_type),
    }
    data.update(fields)
    files = {"file": (name, content, part_type)}
    return await client.post(API + "files/upload/", headers={**token, "Origin": WEB_ORIGIN}, files=files, data=data)


# -- CORS --------------------------------------------------------------------------------------------


async def test_every_api_route_answers_a_preflight_without_auth(client):
    for pattern, _handler in ROUTES:
        if not pattern.startswith("/api/v1/") or "openapi" in pattern:
            continue
        path = pattern.replace("/?", "/").replace("(?P<percent>[^/]+)", "25")
        r = await client.options(
            path,
            headers={
                "Origin": WEB_ORIGIN,
                "Access-Control-Request-Method": "DELETE",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
        assert r.status_code == 204, (path, r.status_code, r.text)
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        assert {"GET", "POST", "PUT", "DELETE"} <= {m.strip() for m in r.headers["Access-Control-Allow-Methods"].split(",")}
        allowed = {h.strip().lower() for h in r.headers["Access-Control-Allow-Headers"].split(",")}
        assert {"authorization", "content-type"} <= allowed
        assert int(r.headers["Access-Control-Max-Age"]) > 0
        assert "Access-Control-Allow-Credentials" not in r.headers


async def test_answers_and_errors_carry_the_origin_header(client, alice):
    r = await client.get(API + "files/stats/", headers=web_headers(alice))
    assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == "*"
    r = await client.get(API + "files/stats/", headers={"Origin": WEB_ORIGIN})
    assert r.status_code == 401 and r.headers["Access-Control-Allow-Origin"] == "*"
    assert "Retry-After" in r.headers["Access-Control-Expose-Headers"]


# -- uploads ------------------------------------------------------------------------------------------


async def test_web_slot_check_with_sha1_finds_own_copy(client, alice):
    data = opaque(5000)
    first = (await web_upload(client, alice, data, "doc.bin", "application/octet-stream")).json()
    sha1 = hashlib.sha1(data).hexdigest()
    r = await client.get(
        API + "files/slot/", headers=web_headers(alice), params={"size": 5000, "name": "again.bin", "hash": sha1}
    )
    body = r.json()
    assert r.status_code == 200 and body["quota"]
    assert body["file"] != first["file"] and body["hash"] == first["hash"]
    assert isinstance(body["id"], int) and body["name"] == "again.bin" and "created_at" in body and "thumbnail" in body
    # unknown content: the app must upload
    r = await client.get(API + "files/slot/", headers=web_headers(alice), params={"size": 5, "name": "n", "hash": "a" * 40})
    assert r.status_code == 200 and set(r.json()) == {"quota", "used"}


async def test_ios_upload_reads_integer_id_and_typed_fields(client, alice):
    r = await ios_upload(client, alice, opaque(3000), "notes.xyz", "", metadata={"meters": "1,2", "duration": "3"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert isinstance(body["id"], int) and not isinstance(body["id"], bool)
    assert isinstance(body["file"], str) and isinstance(body["name"], str) and isinstance(body["hash"], str)
    assert isinstance(body["quota"], int) and isinstance(body["used"], int)
    assert body["media_type"] == "application/octet-stream"  # an empty part type declares nothing
    assert body["thumbnails"] == []


async def test_web_voice_message_is_a_voice(client, alice):
    voice = wav()
    r = await web_upload(
        client, alice, voice, "voice.ogg", "audio/ogg", media_type="audio/ogg; codecs=opus+voice", context="voice"
    )
    assert r.status_code == 201 and r.json()["context"] == "voice"
    await web_upload(client, alice, wav(), "song.wav", "audio/wav")
    stats = (await client.get(API + "files/stats/", headers=web_headers(alice))).json()
    assert stats["voices"] == {"count": 1, "used": len(voice)}
    assert stats["audio"]["count"] == 1


async def test_avatar_through_files_upload(client, alice):
    # web: file, media_type, context=avatar; reads thumbnails[].url/width/height, hash, size
    r = await client.post(
        API + "files/upload/",
        headers=alice,
        files={"file": ("me.png", png(), "image/png")},
        data={"media_type": "image/png", "context": "avatar"},
    )
    assert r.status_code == 201, r.text
    web = r.json()
    assert web["is_avatar"] is True and web["thumbnails"] and web["size"] > 0 and web["hash"]
    assert all({"url", "width", "height"} <= set(t) for t in web["thumbnails"])
    # iOS: create_thumbnail (singular); AvatarResponse needs file, hash, name, quota, used, size, thumbnails
    headers, body = ios_multipart(
        [
            ("file", "xxxxx.png", "image/png", png(200, 200)),
            ("media_type", None, "", b"image/png"),
            ("create_thumbnail", None, "", b"true"),
            ("context", None, "", b"avatar"),
        ]
    )
    ios = (await client.post(API + "files/upload/", headers={**alice, **headers}, content=body)).json()
    for key, kind in (("file", str), ("hash", str), ("name", str), ("quota", int), ("used", int), ("size", int)):
        assert isinstance(ios[key], kind)
    assert [t["width"] for t in ios["thumbnails"]] == [32, 48, 64, 96, 128, 192]
    # an avatar everywhere: avatar/ lists it, the avatars bucket counts it, DELETE avatar/ removes it
    listed = (await client.get(API + "avatar/", headers=alice)).json()
    assert {i["id"] for i in listed["items"]} == {web["id"], ios["id"]}
    assert (await client.get(API + "files/", headers=alice)).json()["total_objects"] == 0
    assert (await client.get(API + "files/stats/", headers=alice)).json()["avatars"]["count"] == 2
    r = await client.request("DELETE", API + "avatar/", headers=alice, json={"id": ios["id"]})
    assert r.status_code == 200 and r.json()["deleted"] == 1


async def _gallery(client, token) -> dict[str, dict]:
    made = {
        "image": (await web_upload(client, token, GIF, "a.gif", "image/gif")).json(),
        "video": (await ios_upload(client, token, bytes.fromhex("1a45dfa3") + opaque(60), "v.webm", "video/webm")).json(),
        "voice": (await web_upload(client, token, wav(), "v.ogg", "audio/ogg", context="voice")).json(),
        "audio": (await ios_upload(client, token, wav(), "s.wav", "audio/wav")).json(),
        "file": (await ios_upload(client, token, opaque(700), "d.bin", "")).json(),
    }
    r = await client.post(
        API + "files/upload/", headers=token, files={"file": ("me.png", png(), "image/png")}, data={"context": "avatar"}
    )
    made["avatar"] = r.json()
    return made


async def test_gallery_tabs_filter_by_type_and_contexts(client, alice):
    made = await _gallery(client, alice)

    async def ids(**params) -> set[int]:
        r = await client.get(API + "files/", headers=web_headers(alice), params={"obj_per_page": 50, "order_by": "-id", **params})
        assert r.status_code == 200, r.text
        body = r.json()
        assert isinstance(body["total_pages"], int) and isinstance(body["total_objects"], int)
        return {item["id"] for item in body["items"]}

    assert await ids(type="image") == {made["image"]["id"]}
    assert await ids(type="video") == {made["video"]["id"]}
    assert await ids(type="audio") == {made["audio"]["id"]}
    assert await ids(type="file") == {made["file"]["id"]}
    assert await ids(contexts="voice") == {made["voice"]["id"]}
    assert await ids(contexts="avatar") == {made["avatar"]["id"]}
    every = {f["id"] for f in made.values()}
    r = await client.get(API + "files/?contexts=file&contexts=avatar&contexts=voice", headers=web_headers(alice))
    assert {i["id"] for i in r.json()["items"]} == every
    r = await client.get(API + "files/", headers=alice, params={"type": "picture"})
    assert r.status_code == 400 and "type" in r.json()["fields"]
    # the libraries read thumbnail.url unguarded on images and avatars
    for params in ({"type": "image"}, {"contexts": "avatar"}):
        for item in (await client.get(API + "files/", headers=alice, params={"order_by": "-id", **params})).json()["items"]:
            assert item["thumbnail"]["url"].startswith("http")
    stats = (await client.get(API + "files/stats/", headers=alice)).json()
    for name in ("total", "images", "files", "audio", "voices", "videos", "avatars"):
        assert {"used", "count"} <= set(stats[name])
    assert stats["audio"]["count"] == 1 and stats["voices"]["count"] == 1 and stats["files"]["count"] == 1
    filtered = (await client.get(API + "files/stats/", headers=alice, params={"type": "image"})).json()
    # stats cover avatars too (total is everything): the avatar is an image
    assert filtered["images"]["count"] == 1 and filtered["avatars"]["count"] == 1 and filtered["total"]["count"] == 2
    assert filtered["videos"]["count"] == 0 and filtered["files"]["count"] == 0


async def test_deletes_as_the_apps_send_them(client, alice):
    made = await _gallery(client, alice)
    r = await client.request(
        "DELETE", API + "files/", headers=web_headers(alice), json={"id": made["file"]["id"], "contexts": ["file", "voice"]}
    )
    assert r.status_code == 200 and r.json()["deleted"] == 1
    r = await client.request(
        "DELETE", API + "files/", headers=web_headers(alice), json={"id": made["avatar"]["id"], "contexts": ["avatar"]}
    )
    assert r.json()["deleted"] == 1
    r = await client.request(
        "DELETE", API + "files/", headers=alice, json={"file": made["voice"]["file"], "contexts": ["file", "voice"]}
    )
    assert r.json()["deleted"] == 1
    r = await client.request("DELETE", API + "files/", headers=alice, json={"id": str(made["image"]["id"])})  # iOS: {"id": Int}
    assert r.json()["deleted"] == 1
    # iOS "delete all": repeated context in the query string, an empty JSON body
    r = await client.request("DELETE", API + "files/?context=avatar&context=voice&context=file", headers=alice, json={})
    assert r.status_code == 200 and r.json()["deleted"] == 2  # the video and the audio: files without a context
    assert (await client.get(API + "files/stats/", headers=alice)).json()["total"]["count"] == 0


async def test_free_up_space_by_percent(client, alice):
    sizes = [4000, 3000, 2000, 1000]
    made = [(await ios_upload(client, alice, opaque(size), f"{size}.bin", "")).json() for size in sizes]
    # used = 10 000: 25 % is reached by the oldest file alone, 50 % by the two oldest
    r = await client.get(API + "files/percent/25/", headers=alice, params={"obj_per_page": 50})
    assert r.status_code == 200 and [i["id"] for i in r.json()["items"]] == [made[0]["id"]]
    r = await client.get(API + "files/percent/50/", headers=alice, params={"page": 1})
    body = r.json()
    assert body["total_pages"] == 1 and {i["id"] for i in body["items"]} == {made[0]["id"], made[1]["id"]}
    for bad in ("0", "101", "ten", "2.5"):
        r = await client.get(API + f"files/percent/{bad}/", headers=alice)
        assert r.status_code == 400, bad
    r = await client.request("DELETE", API + "files/percent/50", headers=alice, json={})  # iOS: no slash
    assert r.status_code == 200 and r.json()["deleted"] == 2 and r.json()["used"] == 3000
    r = await client.request("DELETE", API + "files/percent/100/", headers=web_headers(alice), json={})
    assert r.json()["deleted"] == 2
    r = await client.request("DELETE", API + "files/percent/100/", headers=alice, json={})
    assert r.status_code == 404
