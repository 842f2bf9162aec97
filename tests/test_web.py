"""The web page at /: its headers and files, GET about/, the evaluation set-up, and the page itself
in a real headless Chromium against the real service, with a real Prosody delivering the code."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import logging
import re
import types
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from selenium.webdriver.common.keys import Keys

import settings as settings_module
from server import Service
from services import evaluation
from settings import Settings, SettingsError
from tests.browser import PHONE, Page, fmt_bytes
from tests.helpers import WEBM, assert_error, opaque, server_env, start_server, stop_process, user_doc, wav
from tests.prosody import AUTH, CODE_REQUEST, TOKENS, configure

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "web"
XSS_NAME = "<img src=x onerror=alert(1)>.svg"
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><script>alert(2)</script></svg>'


@contextlib.asynccontextmanager
async def http(svc: Service) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=svc.url, timeout=30) as client:
        yield client


def csp(response: httpx.Response) -> dict[str, str]:
    policy = response.headers["Content-Security-Policy"]
    return {part.split()[0]: part.strip() for part in policy.split(";") if part.strip()}


# -- headers and files --------------------------------------------------------------------------


async def test_page_is_served_with_strict_headers(client):
    for path in ("/", "/web/app.js", "/web/api.js", "/web/dom.js", "/web/style.css", "/web/icon.svg"):
        r = await client.get(path)
        assert r.status_code == 200, path
        policy = csp(r)
        assert policy["default-src"] == "default-src 'none'"
        assert policy["script-src"] == "script-src 'self'"
        assert policy["frame-ancestors"] == "frame-ancestors 'none'"
        assert policy["img-src"].startswith("img-src 'self'")
        assert "unsafe" not in r.headers["Content-Security-Policy"]
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["Referrer-Policy"] == "no-referrer"
        assert r.headers["X-Frame-Options"] == "DENY"
        assert r.headers["Cache-Control"] == "no-cache"
    index = await client.get("/")
    assert index.headers["Content-Type"] == "text/html; charset=utf-8"
    assert index.content == (WEB / "index.html").read_bytes()
    assert (await client.get("/web/app.js")).headers["Content-Type"] == "text/javascript; charset=utf-8"
    again = await client.get("/", headers={"If-None-Match": index.headers["Etag"]})
    assert again.status_code == 304
    head = await client.head("/")
    assert head.status_code == 200 and head.content == b""


async def test_only_the_page_files_are_served(client):
    for path in (
        "/web/nothing.js",
        "/web/.hidden",
        "/web/..%2Fsettings.yaml",
        "/web/%2e%2e/server.py",
        "/web/logo",
        "/index.html",
    ):
        r = await client.get(path)
        assert_error(r, 404)
    assert_error(await client.post("/", content=b"x"), 405)
    assert_error(await client.delete("/web/app.js"), 405)
    (WEB / "notes.txt").write_text("not a page file")  # a stray file in web/ stays private
    try:
        assert_error(await client.get("/web/notes.txt"), 404)
    finally:
        (WEB / "notes.txt").unlink()


class _Markup(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self.in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if tag == "script":
            self.in_script = True
            if "src" not in names:
                self.problems.append("inline <script>")
        self.problems += [f"{tag} {name}=" for name in names if name.startswith("on") or name == "style"]

    def handle_endtag(self, tag: str) -> None:
        self.in_script = self.in_script and tag != "script"

    def handle_data(self, data: str) -> None:
        if self.in_script and data.strip():
            self.problems.append("inline script text")


def test_page_files_hold_no_inline_code_or_markup_sinks():
    parser = _Markup()
    parser.feed((WEB / "index.html").read_text())
    assert parser.problems == []
    for script in WEB.glob("*.js"):
        code = script.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "console.log"):
            assert sink not in code, f"{script.name} uses {sink}"
        assert "localStorage" not in code or script.name == "api.js"  # the token is kept in one place


async def test_about(client, service):
    r = await client.get("/api/v1/about/")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json() == {
        "title": "gallery",
        "logo": None,
        "code_hint": None,
        "api_jid": None,
        "evaluation": True,  # the test service: no XMPP, on 127.0.0.1
        "evaluation_jid": "demo@gallery.invalid",
        "max_file_size": service.settings.limits.max_file_size,
    }


async def test_web_settings(settings, tmp_path, prosody, make_service):
    logo = tmp_path / "logo.png"
    Image.new("RGB", (40, 20), "red").save(logo)
    settings.web = dataclasses.replace(
        settings.web, title="Team files", logo=str(logo), code_hint="Codes come from files.example.org."
    )
    configure(settings, prosody)
    async with http(await make_service()) as client:
        about = (await client.get("/api/v1/about/")).json()
        assert about["title"] == "Team files" and about["logo"] == "/web/logo"
        assert about["code_hint"] == "Codes come from files.example.org."
        assert about["api_jid"] == "gallery@localhost" and about["evaluation"] is False
        r = await client.get("/web/logo")
        assert r.status_code == 200 and r.headers["Content-Type"] == "image/png" and r.content == logo.read_bytes()
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        settings.web.logo = "https://cdn.example.org/logo.svg"
        policy = csp(await client.get("/"))
        assert policy["img-src"].endswith(" https://cdn.example.org")
        assert (await client.get("/api/v1/about/")).json()["logo"] == "https://cdn.example.org/logo.svg"


def test_web_settings_are_validated(tmp_path):
    env = {"GALLERY_WEB_TITLE": "Photos", "GALLERY_WEB_CODE_HINT": "ask the admin"}
    s = settings_module.load(Path("/nonexistent"), env=env)
    assert (s.web.title, s.web.code_hint, s.web.logo) == ("Photos", "ask the admin", "")
    for name, value in (("TITLE", ""), ("TITLE", "x" * 101), ("LOGO", "http://plain.example.org/l.png"), ("LOGO", "nope.png")):
        with pytest.raises(SettingsError, match=f"web.{name.lower()}"):
            settings_module.load(Path("/nonexistent"), env={f"GALLERY_WEB_{name}": value})


# -- the evaluation set-up ----------------------------------------------------------------------


def console_codes(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        m.group(1)
        for record in caplog.records
        if (m := re.search(r"EVALUATION SET-UP.* with the code (\d{6}) ", record.getMessage()))
    ]


def test_evaluation_only_without_xmpp_and_on_loopback():
    def on(**server: Any) -> bool:
        s = Settings()
        for key, value in server.items():
            section, name = key.split("__")
            setattr(getattr(s, section), name, value)
        return evaluation.enabled(s)

    for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"):
        assert on(server__host=host), host
    for host in ("0.0.0.0", "", "::", "192.0.2.7", "example.org", "2001:db8::1"):
        assert not on(server__host=host), host
    assert not on(server__host="127.0.0.1", xmpp__jid="gallery@example.org")
    assert not on(server__host="127.0.0.1", xmpp__component=types.SimpleNamespace(jid="upload.example.org"))
    assert on(server__host="127.0.0.1", xmpp__component=types.SimpleNamespace(jid=""))


async def test_evaluation_code_on_the_console_signs_in(make_service, caplog):
    caplog.set_level(logging.INFO)
    service = await make_service(auth={"code_interval": 0})
    async with http(service) as client:
        [code] = console_codes(caplog)
        assert f"open {service.url}/ and sign in as demo@gallery.invalid" in caplog.text
        r = await client.post(AUTH, json={"jid": "demo@gallery.invalid", "code": code, "device": "test"})
        assert r.status_code == 201, r.text
        headers = {"Authorization": f"Bearer {r.json()['token']}"}
        assert (await client.get("/api/v1/account/quota/", headers=headers)).status_code == 200
        assert_error(await client.post(AUTH, json={"jid": "demo@gallery.invalid", "code": code}), 403)  # single use
        # the page may ask for a new one: it goes to the console too
        r = await client.post(CODE_REQUEST, json={"jid": "demo@gallery.invalid"})
        assert r.status_code == 201 and r.json()["api_jid"] == "gallery.invalid"
        assert len(console_codes(caplog)) == 2
        wrong = f"{(int(console_codes(caplog)[-1]) + 1) % 10**6:06d}"
        assert_error(await client.post(AUTH, json={"jid": "demo@gallery.invalid", "code": wrong}), 403)
        # any other JID still has no way to get a code
        body = assert_error(await client.post(CODE_REQUEST, json={"jid": "alice@example.org"}), 503)
        assert "not configured" in body["error"]
    assert len(console_codes(caplog)) == 2


def test_a_newcomer_runs_server_py_and_signs_in(settings, tmp_path):
    """`python server.py` with the repository's settings.yaml (no xmpp.*, 127.0.0.1): the console
    says how to sign in, and that works; the page is at /."""
    proc, url = start_server(server_env(settings), tmp_path / "server.log")
    try:
        output = (tmp_path / "server.log").read_text()
        match = re.search(r"EVALUATION SET-UP .*: open (\S+)/ and sign in as (\S+) with the code (\d{6}) ", output)
        assert match, output
        assert match.group(1) == url and match.group(2) == "demo@gallery.invalid"
        with httpx.Client(base_url=url) as client:
            assert client.get("/").headers["Content-Type"] == "text/html; charset=utf-8"
            assert client.get("/api/v1/about/").json()["evaluation"] is True
            r = client.post(AUTH, json={"jid": match.group(2), "code": match.group(3)})
            assert r.status_code == 201, r.text
    finally:
        stop_process(proc)


async def test_evaluation_restart_prints_a_fresh_code(make_service, caplog):
    await make_service.stop(await make_service(auth={"code_interval": 300}))  # a restart does not wait for it
    async with http(await make_service()) as client:
        first, second = console_codes(caplog)
        assert_error(await client.post(CODE_REQUEST, json={"jid": "demo@gallery.invalid"}), 429)  # the usual limits
        if first != second:
            assert_error(await client.post(AUTH, json={"jid": "demo@gallery.invalid", "code": first}), 403)
        assert (await client.post(AUTH, json={"jid": "demo@gallery.invalid", "code": second})).status_code == 201


async def test_no_evaluation_when_xmpp_is_configured(settings, prosody, make_service, caplog):
    configure(settings, prosody)
    async with http(await make_service()) as client:
        assert console_codes(caplog) == [] and "EVALUATION SET-UP" not in caplog.text
        assert (await client.get("/api/v1/about/")).json()["evaluation"] is False
        for code in ("000000", "123456"):
            body = assert_error(await client.post(AUTH, json={"jid": "demo@gallery.invalid", "code": code}), 403)
            assert "no valid code" in body["error"]


async def test_no_evaluation_when_reachable_from_elsewhere(make_service, caplog):
    service = await make_service(server={"host": "0.0.0.0"})
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.settings.server.port}") as client:
        assert console_codes(caplog) == [] and "EVALUATION SET-UP" not in caplog.text
        about = (await client.get("/api/v1/about/")).json()
        assert about["evaluation"] is False and about["evaluation_jid"] is None
        assert_error(await client.post(CODE_REQUEST, json={"jid": "demo@gallery.invalid"}), 503)
        assert_error(await client.post(AUTH, json={"jid": "demo@gallery.invalid", "code": "000000"}), 403)


# -- the page in Chromium -----------------------------------------------------------------------


def jpeg(width: int, height: int, tint: tuple[int, int, int]) -> bytes:
    """A photo-like picture: two gradients across each other, tinted."""
    across = Image.linear_gradient("L").rotate(90).resize((width, height))
    down = Image.linear_gradient("L").resize((width, height))
    image = Image.merge("RGB", (across, down, Image.new("L", (width, height), 128)))
    image = Image.blend(image, Image.new("RGB", (width, height), tint), 0.45)
    out = io.BytesIO()
    image.save(out, "JPEG")
    return out.getvalue()


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    image = Image.new("RGB", (width, height), "navy")
    image.paste((255, 200, 0), (width // 2 - 20, 0, width // 2 + 20, height))
    image.save(out, "PNG")
    return out.getvalue()


def tiles(p: Page) -> dict[str, Any]:
    return {e.find_element("css selector", ".file-name").text: e for e in p.qa("#grid .tile")}


def wait_tiles(p: Page, names: set[str], within: float = 10) -> dict[str, Any]:
    p.until(lambda: set(tiles(p)) == names, f"tiles {sorted(names)}", within)
    return tiles(p)


def used(p: Page) -> int:
    return int(p.q("#quota-bar").get_attribute("data-used") or -1)


def idle(p: Page) -> None:
    """No API request in flight (one answered after a log out would be logged as a 401)."""
    p.until(lambda: p.q("body").get_attribute("data-pending") == "0", "the page idle")


def confirm(p: Page, expect: str) -> str:
    text = p.visible("#confirm-text").text
    assert expect in text, text
    p.click("#confirm-ok")
    p.hidden("#confirm")
    return text


def upload_states(p: Page) -> dict[str, tuple[str, str]]:
    """name -> (state, status text) of the newest upload of each name (the list is newest first)."""
    out: dict[str, tuple[str, str]] = {}
    for item in p.qa("#uploads .upload"):
        name = item.find_element("css selector", ".file-name").text
        out.setdefault(name, (item.get_attribute("data-state"), item.find_element("css selector", ".up-status").text))
    return out


def wait_uploads(p: Page, expected: dict[str, str], within: float = 20) -> dict[str, tuple[str, str]]:
    def done() -> dict | None:
        states = upload_states(p)
        return states if all(states.get(n, ("",))[0] == s for n, s in expected.items()) else None

    return p.until(done, f"uploads {expected}", within)


def login_errors(p: Page, service: Service) -> None:
    """What the sign-in form says to each refusal of the API."""
    p.fill("#jid", "not a jid@")
    p.click("#send-code")
    assert p.wait_text("#login-status", "is not a valid XMPP address").startswith("“not a jid@” is not a valid XMPP address")
    service.settings.auth.deny.append("denied.example")
    p.fill("#jid", "someone@denied.example")
    p.click("#send-code")
    p.wait_text("#login-status", "This service does not accept this address (denied.example)")
    service.settings.auth.deny.remove("denied.example")
    # five wrong codes for bob (offline: his code waits on the server, unread): the fifth is a 429
    p.fill("#jid", "bob@localhost")
    p.click("#send-code")
    p.visible("#auth-form")
    for attempt in range(5):
        p.fill("#code", f"{attempt:06d}")  # 1 chance in 200 000 of being his code
        p.click("#sign-in")
        if attempt < 4:
            p.wait_text("#login-status", f"wrong code ({4 - attempt} attempt")
    assert re.fullmatch(r"Too many wrong codes\. Request a new code in \d+ seconds?\.", p.wait_text("#login-status", "Too many"))
    p.visible("#code-form")  # back to the address: a new code is needed


def page_flow(p: Page, service: Service, jid: str, next_code: Any, call: Any, files: dict[str, Path]) -> None:
    """Everything a user does, in order. `next_code()` waits for the code Prosody delivered to the
    test user; `call(coro)` runs a coroutine on the service's loop."""
    url = service.url
    api = httpx.Client(base_url=url, timeout=30)
    p.d.get(url + "/")
    p.visible("#login")
    assert p.q("#evaluation").is_displayed() is False  # XMPP is configured
    login_errors(p, service)
    p.screenshot("web-login.png")
    p.fill("#jid", jid)
    p.click("#send-code")
    code = next_code()
    assert "a message from gallery@localhost in your XMPP client" in p.wait_text("#code-sent", jid)
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    p.fill("#code", wrong)
    p.click("#sign-in")
    assert "The code was not accepted: wrong code (4 attempts left)." in p.wait_text("#login-status", "not accepted")
    p.fill("#code", code)
    p.click("#sign-in")
    p.visible("#app")
    assert p.text("#who-jid") == jid
    stored = p.js("return [sessionStorage.getItem('gallery.session'), localStorage.getItem('gallery.session')]")
    assert stored[1] is None and '"token"' in stored[0]
    token = p.js("return JSON.parse(sessionStorage.getItem('gallery.session')).token")
    assert token not in p.d.current_url
    auth = {"Authorization": f"Bearer {token}"}
    p.wait_text("#quota-text", "0 bytes of")
    assert used(p) == 0 and p.visible("#empty")
    assert not p.q("#admin-tab").is_displayed()  # alice is no admin

    # upload: two large files over a throttled link (watch the progress, cancel one), then several
    p.d.set_network_conditions(offline=False, latency=5, download_throughput=10_000_000, upload_throughput=400_000)
    p.q("#picker").send_keys(f"{files['big.bin']}\n{files['cancel-me.bin']}")
    item = p.visible("#uploads .upload[data-state='sending']")
    p.until(lambda: 0 < int(p.js("return document.querySelector('#uploads progress').value")) < 600_000, "progress midway")
    seen = p.js("return [...document.querySelectorAll('#uploads progress')].map(e => [e.value, e.max])")
    assert any(0 < value < maximum for value, maximum in seen), seen
    cancel = next(e for e in p.qa("#uploads .upload") if "cancel-me.bin" in e.text)
    cancel.find_element("css selector", "button").click()
    wait_uploads(p, {"big.bin": "done", "cancel-me.bin": "cancelled"}, within=30)
    assert item.get_attribute("data-state") in ("done", "cancelled")
    p.d.delete_network_conditions()
    several = ["photo.jpg", "sunset.jpg", "clip.webm", "note.wav", "doc.bin", XSS_NAME]
    p.q("#picker").send_keys("\n".join(str(files[n]) for n in several))
    states = wait_uploads(p, dict.fromkeys(several, "done"))
    assert all(text == "Uploaded." for n, (_, text) in states.items() if n in several), states
    grid = wait_tiles(p, {"big.bin", *several})
    sizes = {name: files[name].stat().st_size for name in grid}
    p.until(lambda: used(p) == sum(sizes.values()), "quota after uploads")
    assert p.q("#quota-bar").get_attribute("aria-valuenow") != "0.0"

    # what the grid shows: a real thumbnail for the photo, icons by kind, names as text
    photo = grid["photo.jpg"].find_element("css selector", ".thumb img")
    p.until(lambda: p.js("return arguments[0].complete && arguments[0].naturalWidth", photo) > 0, "thumbnail loaded")
    assert grid["clip.webm"].find_elements("css selector", ".icon-video") or grid["clip.webm"].find_elements(
        "css selector", "img"
    )
    assert grid["doc.bin"].find_element("css selector", ".icon").text.upper() == "FILE"
    assert grid[XSS_NAME].find_element("css selector", ".file-name").text == XSS_NAME
    assert p.qa("img[src='x']") == [] and p.js("return document.querySelectorAll('[onerror]').length") == 0
    assert not p.alert_present()
    p.click("#clear-uploads")
    p.until(lambda: p.qa("#uploads .upload") == [], "finished uploads cleared")
    p.size((1280, 1100))
    p.js("window.scrollTo(0, 0)")
    p.screenshot("web-desktop.png")
    p.size(PHONE)
    p.js("document.querySelector('#filters').scrollIntoView()")
    sideways = "const d = document.documentElement; return d.scrollWidth - d.clientWidth"
    p.until(lambda: p.js(sideways) <= 0, "no sideways scrolling at 390 px")
    p.screenshot("web-phone.png")
    p.size((1280, 900))

    # filters: kind and date, then the list view
    p.set_value("#f-kind", "video")
    wait_tiles(p, {"clip.webm"})
    p.set_value("#f-kind", "image")
    wait_tiles(p, {"photo.jpg", "sunset.jpg", XSS_NAME})
    assert p.q("#f-kind-file").is_enabled() and p.q("#f-kind-file").get_attribute("hidden") is None  # type= is known
    p.set_value("#f-kind", "file")  # none of the other kinds
    wait_tiles(p, {"big.bin", "doc.bin"})
    p.set_value("#f-kind", "")
    p.set_value("#f-to", "2020-01-01")
    p.visible("#empty")
    wait_tiles(p, set())
    p.set_value("#f-to", "")
    p.set_value("#f-from", "2020-01-01")
    wait_tiles(p, {"big.bin", *several})
    p.set_value("#f-from", "")
    p.set_value("#f-sort", "-size")
    p.until(lambda: p.q("#grid .tile .file-name").text == "big.bin", "largest first")
    p.q("input[name='view'][value='list']").click()
    p.visible("#list")
    rows = p.qa("#list tbody tr")
    assert len(rows) == 7 and "big.bin" in rows[0].text and fmt_bytes(sizes["big.bin"]) in rows[0].text
    assert any(XSS_NAME in r.text and "never" in r.text for r in rows)
    p.q("input[name='view'][value='grid']").click()
    wait_tiles(p, {"big.bin", *several})

    # delete one, then several
    before = used(p)
    tiles(p)["doc.bin"].find_element("css selector", "button.danger").click()
    confirm(p, f"“doc.bin” ({fmt_bytes(sizes['doc.bin'])})")
    wait_tiles(p, {"big.bin", "photo.jpg", "sunset.jpg", "clip.webm", "note.wav", XSS_NAME})
    p.until(lambda: used(p) == before - sizes["doc.bin"], "quota after one delete")
    current = tiles(p)
    for name in ("clip.webm", "note.wav"):
        current[name].find_element("css selector", "input.pick").click()
    p.wait_text("#delete-selected", "Delete 2 selected files")
    p.click("#delete-selected")
    confirm(p, f"Delete 2 files ({fmt_bytes(sizes['clip.webm'] + sizes['note.wav'])})")
    images = ("photo.jpg", "sunset.jpg", XSS_NAME)
    wait_tiles(p, {"big.bin", *images})
    p.until(lambda: used(p) == sizes["big.bin"] + sum(sizes[n] for n in images), "quota after deleting two")

    # delete by filter: the confirmation says how many files and bytes
    p.set_value("#f-kind", "image")
    wait_tiles(p, set(images))
    p.click("#delete-filtered")
    text = confirm(p, f"3 files, {fmt_bytes(sum(sizes[n] for n in images))}")
    assert text.startswith("Delete all images")
    p.visible("#empty")
    p.set_value("#f-kind", "")
    wait_tiles(p, {"big.bin"})
    p.until(lambda: used(p) == sizes["big.bin"], "quota after delete by filter")
    remaining = api.get("/api/v1/files/", headers=auth).json()
    assert [f["name"] for f in remaining["items"]] == ["big.bin"]

    # the API's refusals, per file: too large, over quota, rate limited
    settings = service.settings
    settings.limits.max_file_size = 100_000  # the page still believes the limit at load time
    p.q("#picker").send_keys(str(files["doc.bin"]))
    states = wait_uploads(p, {"doc.bin": "refused"})
    assert "larger than this service accepts" in states["doc.bin"][1], states
    settings.limits.max_file_size = 104857600
    call(service.parts.users.set_quota(jid, sizes["big.bin"] + 100))  # note.wav needs 444 bytes
    p.q("#picker").send_keys(str(files["note.wav"]))
    states = wait_uploads(p, {"note.wav": "refused"})
    assert "not enough space left in your quota" in states["note.wav"][1], states
    call(service.parts.users.set_quota(jid, 1073741824))
    settings.limits.uploads_per_window, settings.limits.upload_window = 1, 60
    p.q("#picker").send_keys(f"{files['clip.webm']}\n{files['photo.jpg']}")
    p.until(lambda: any("too many uploads" in s for _, s in upload_states(p).values()), "a 429 shown")
    refused = next(e for e in p.qa("#uploads .upload[data-state='refused']") if "too many uploads" in e.text)
    assert re.search(r"try again in \d+ seconds", refused.text), refused.text
    assert refused.find_element("css selector", "button:not([hidden])").text == "Retry"
    settings.limits.uploads_per_window, settings.limits.upload_window = 1000, 10

    # avatars: upload shows the cropped result; delete
    p.click(".tabs button[data-tab='avatars']")
    p.visible("#avatars-empty")
    before = used(p)
    p.q("#avatar-picker").send_keys(str(files["face.png"]))
    p.visible("#avatar-result")
    assert p.text("#avatar-result-text").startswith("Cropped to 400×400; thumbnails 32, 48, 64, 96, 128, 192, 256, 384 px")
    img = p.q("#avatar-result-img")
    p.until(lambda: p.js("return arguments[0].naturalWidth", img) == 400, "cropped avatar shown")
    p.until(lambda: len(p.qa("#avatar-list .tile")) == 1, "avatar listed")
    assert p.until(lambda: used(p) > before, "quota counts the avatar")
    p.q("#avatar-list .tile button.danger").click()
    confirm(p, "Delete the avatar")
    p.visible("#avatars-empty")

    # devices: a second sign-in (over XMPP too), revoked from the page
    assert api.post(CODE_REQUEST, json={"jid": jid}).status_code == 201
    phone = api.post(AUTH, json={"jid": jid, "code": next_code(), "device": "Phone", "client": "Conversations"}).json()
    phone_auth = {"Authorization": f"Bearer {phone['token']}"}
    assert api.get(TOKENS, headers=phone_auth).status_code == 200
    p.click(".tabs button[data-tab='devices']")
    p.until(lambda: len(p.qa("#tokens tbody tr")) == 2, "two devices")
    mine = p.q("#tokens tbody tr[data-current='true']")
    assert "this device" in mine.text and "Chromium on Linux" in mine.text and "gallery web page" in mine.text
    other = p.q(f"#tokens tbody tr[data-id='{phone['token_id']}']")
    assert "Phone" in other.text and "Conversations" in other.text
    other.find_element("css selector", "button").click()
    p.until(lambda: len(p.qa("#tokens tbody tr")) == 1, "the phone signed out")
    assert api.get(TOKENS, headers=phone_auth).status_code == 401
    assert api.get(TOKENS, headers=auth).status_code == 200
    assert api.post(CODE_REQUEST, json={"jid": jid}).status_code == 201
    tablet = api.post(AUTH, json={"jid": jid, "code": next_code(), "device": "Tablet"}).json()
    p.click(".tabs button[data-tab='account']")
    p.click(".tabs button[data-tab='devices']")
    p.until(lambda: len(p.qa("#tokens tbody tr")) == 2, "the tablet listed")
    p.click("#revoke-others")
    confirm(p, "Sign out every other device?")
    p.until(lambda: len(p.qa("#tokens tbody tr")) == 1, "only this device left")
    assert p.q("#revoke-others").get_attribute("disabled") is not None
    assert api.get(TOKENS, headers={"Authorization": f"Bearer {tablet['token']}"}).status_code == 401

    # log out revokes the page's token
    idle(p)
    p.click("#logout")
    p.visible("#login")
    p.wait_text("#login-status", "You are signed out.")
    assert p.js("return sessionStorage.getItem('gallery.session')") is None
    assert api.get(TOKENS, headers=auth).status_code == 401

    # signed out from another device: the page notices at its next request and says so
    p.fill("#jid", jid)
    p.click("#send-code")
    p.fill("#code", next_code())
    p.click("#sign-in")
    p.visible("#app")
    assert api.post(CODE_REQUEST, json={"jid": jid}).status_code == 201
    other = api.post(AUTH, json={"jid": jid, "code": next_code(), "device": "Laptop"}).json()
    r = api.request("DELETE", TOKENS, params={"all": "true"}, headers={"Authorization": f"Bearer {other['token']}"})
    assert r.status_code == 204
    idle(p)
    p.click(".tabs button[data-tab='devices']")
    p.wait_text("#login-status", "Your session has ended")
    p.visible("#login")
    assert p.js("return sessionStorage.getItem('gallery.session')") is None
    api.close()


def admin_flow(p: Page, service: Service, admin: str, user: str, next_code: Any) -> None:
    """An admin sees the accounts and changes a quota."""
    p.fill("#jid", admin)
    p.click("#send-code")
    p.fill("#code", next_code())
    p.click("#sign-in")
    p.click("#admin-tab")
    rows = "#accounts tbody tr"
    row = p.until(lambda: next((r for r in p.qa(rows) if r.get_attribute("data-jid") == user), None), "the user's row")
    token = p.js("return JSON.parse(sessionStorage.getItem('gallery.session')).token")
    api = httpx.Client(base_url=service.url, headers={"Authorization": f"Bearer {token}"})
    before = {a["jid"]: a for a in api.get("/api/v1/account/list/").json()["items"]}[user]
    assert f"{fmt_bytes(before['used'])} of {fmt_bytes(before['quota'])}" in row.text
    field = row.find_element("css selector", "input")
    field.clear()
    field.send_keys("2")
    row.find_element("css selector", "button").click()
    p.wait_text("#app-status", f"The quota of {user} is now 2.1 MB.")
    listed = api.get("/api/v1/account/list/").json()
    api.close()
    assert {a["jid"]: a["quota"] for a in listed["items"]}[user] == 2 * 1024 * 1024
    idle(p)
    p.click("#logout")
    p.wait_text("#login-status", "You are signed out.")


def unexpected_console(entries: list[dict]) -> list[dict]:
    """Console entries other than the failed requests the flow provokes on purpose (Chromium logs
    every 4xx answer as an error): the wrong code, the admin probe, the refused uploads."""
    expected = (
        ("account/xmpp_auth/", 403),
        ("account/xmpp_auth/", 429),
        ("account/xmpp_code_request/", 400),
        ("account/xmpp_code_request/", 403),
        ("account/xmpp_code_request/", 503),
        ("account/list/", 403),
        ("account/tokens/", 401),  # the page's token was revoked from another device
        ("files/upload/", 413),
        ("files/upload/", 403),
        ("files/upload/", 429),
        ("files/?type=not-a-kind", 400),
    )

    def planned(entry: dict) -> bool:
        message = entry.get("message", "")
        return entry.get("source") == "network" and any(
            path in message and f"status of {status}" in message for path, status in expected
        )

    return [e for e in entries if e.get("level") in ("SEVERE", "WARNING") and not planned(e)]


@pytest.mark.slow
async def test_the_page_in_chromium(settings, prosody, tmp_path, xmpp_user, make_service, page):
    alice = await xmpp_user("alice")
    files = {
        "big.bin": opaque(900_000),
        "cancel-me.bin": opaque(900_000),
        "photo.jpg": jpeg(800, 600, (0, 128, 128)),
        "sunset.jpg": jpeg(1200, 800, (230, 110, 40)),
        "clip.webm": WEBM,
        "note.wav": wav(),
        "doc.bin": opaque(300_000),
        XSS_NAME: SVG,
        "face.png": png(640, 400),
    }
    folder = tmp_path / "upload"
    folder.mkdir()
    paths = {}
    for name, content in files.items():
        paths[name] = folder / name
        paths[name].write_bytes(content)
    loop = asyncio.get_running_loop()
    configure(settings, prosody)
    service = await make_service()

    def next_code() -> str:
        return asyncio.run_coroutine_threadsafe(alice.next_code(), loop).result(15)[0]

    def call(coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(15)

    await asyncio.to_thread(page_flow, page, service, alice.jid, next_code, call, paths)
    admin = await xmpp_user("admin")

    def admin_code() -> str:
        return asyncio.run_coroutine_threadsafe(admin.next_code(), loop).result(15)[0]

    await asyncio.to_thread(admin_flow, page, service, admin.jid, alice.jid, admin_code)
    noise = unexpected_console(await asyncio.to_thread(page.console))
    assert noise == [], "\n".join(e["message"] for e in noise)


@pytest.mark.slow
async def test_evaluation_sign_in_in_chromium(make_service, caplog, page):
    """The default test service (no XMPP, on 127.0.0.1) is an evaluation set-up."""
    service = await make_service()
    [code] = console_codes(caplog)

    def flow() -> None:
        dark = [{"name": "prefers-color-scheme", "value": "dark"}]
        page.d.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": dark})
        page.d.get(service.url + "/")
        banner = page.visible("#evaluation")
        assert "evaluation set-up" in banner.text and "demo@gallery.invalid" in banner.text
        page.fill("#jid", "alice@example.org")  # any other JID: no XMPP to send its code
        page.click("#send-code")
        page.wait_text("#login-status", "The service cannot send codes over XMPP right now")
        page.d.refresh()
        page.visible("#login")
        assert page.q("#jid").get_attribute("value") == "demo@gallery.invalid"
        background = page.js("return getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(17, 20, 24)", background  # the dark scheme
        # by keyboard alone: Tab to "I already have a code", Enter, type the code, Enter
        page.q("#jid").click()
        active = lambda: page.js("return document.activeElement.id")  # noqa: E731
        page.d.switch_to.active_element.send_keys(Keys.TAB)
        assert active() == "send-code"
        page.d.switch_to.active_element.send_keys(Keys.TAB)
        assert active() == "have-code"
        page.d.switch_to.active_element.send_keys(Keys.ENTER)
        page.until(lambda: active() == "code", "the code field focused")
        assert "printed on the service's console" in page.text("#code-sent")
        page.d.switch_to.active_element.send_keys(Keys.TAB)
        assert active() == "keep"
        page.d.switch_to.active_element.send_keys(Keys.SPACE)  # keep me signed in: localStorage
        page.q("#code").send_keys(code + Keys.ENTER)
        page.wait_text("#who-jid", "demo@gallery.invalid")
        page.visible("#empty")
        idle(page)
        page.screenshot("web-evaluation-dark.png")
        assert page.js("return sessionStorage.getItem('gallery.session')") is None
        page.d.refresh()
        page.wait_text("#who-jid", "demo@gallery.invalid")
        page.visible("#files")
        # drag and drop: a file dropped on the zone is uploaded
        page.js(
            "const dt = new DataTransfer(); dt.items.add(new File(['dropped text'], 'dropped.txt', {type: 'text/plain'}));"
            "document.querySelector('#drop').dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true}));"
        )
        wait_uploads(page, {"dropped.txt": "done"})
        wait_tiles(page, {"dropped.txt"})
        page.size(PHONE)
        page.screenshot("web-evaluation-phone.png")
        # delete the account: the confirmation names what goes
        page.click(".tabs button[data-tab='account']")
        page.wait_text("#account-summary", "1 file and 0 avatars")
        page.click("#delete-account")
        confirm(page, "Delete the account demo@gallery.invalid? This removes 1 file and 0 avatars (12 bytes)")
        page.wait_text("#login-status", "Your account and everything in it are deleted.")
        assert page.js("return localStorage.getItem('gallery.session')") is None
        page.d.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})

    await asyncio.to_thread(flow)
    assert await user_doc(service, "demo@gallery.invalid") is None
    noise = unexpected_console(await asyncio.to_thread(page.console))
    assert noise == [], "\n".join(e["message"] for e in noise)
