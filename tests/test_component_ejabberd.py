"""The XEP-0363 component against ejabberd 23.01 (ejabberd_service) as well as Prosody."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from slixmpp import JID

from server import Service
from settings import Settings
from tests.ejabberd import Ejabberd, ejabberd  # noqa: F401 - the fixture
from tests.helpers import GIF, wait_until
from tests.prosody import XmppUser, configure_component
from tests.test_component import UPLOAD_NS, _bytes, _listing, refused


@pytest.fixture
async def gallery(settings: Settings, ejabberd: Ejabberd, tmp_path: Path) -> AsyncIterator[Service]:  # noqa: F811
    configure_component(settings, ejabberd)  # type: ignore[arg-type]
    service = Service(settings, data_dir=tmp_path / "data")
    await service.start()
    assert service.parts is not None and service.parts.component is not None
    component = service.parts.component
    await wait_until(lambda: component.state == "connected", 10, "the component's session")
    yield service
    await service.stop()


@pytest.fixture
async def alice(ejabberd: Ejabberd) -> AsyncIterator[XmppUser]:  # noqa: F811
    user = XmppUser(ejabberd, "alice")  # type: ignore[arg-type]
    user.client.register_plugin("xep_0363")
    await user.connect()
    yield user
    await user.disconnect()


async def test_ejabberd_lists_the_component_and_slixmpp_uploads_through_it(gallery, alice, ejabberd):  # noqa: F811
    items = await alice.client.plugin["xep_0030"].get_items(jid=JID(ejabberd.domain), timeout=10)
    assert ejabberd.component_jid in [item[0] for item in items["disco_items"]["items"]]
    url = await alice.client.plugin["xep_0363"].upload_file(
        "via ejabberd.gif", input_file=_bytes(GIF), domain=JID(ejabberd.domain), timeout=10
    )
    async with httpx.AsyncClient() as c:
        got = await c.get(url)
        assert got.status_code == 200 and got.content == GIF
    files = await _listing(gallery, alice.jid)
    assert [(f["name"], f["context"]) for f in files] == [("via ejabberd.gif", "message")]


async def test_errors_reach_the_client_through_ejabberd(gallery, alice, ejabberd):  # noqa: F811
    limit = gallery.settings.limits.max_file_size
    kind, condition, text, error = await refused(alice, ejabberd.component_jid, "big.bin", limit + 1)
    assert (kind, condition) == ("modify", "not-acceptable") and str(limit) in text
    size = error.find(f"{{{UPLOAD_NS}}}file-too-large/{{{UPLOAD_NS}}}max-file-size")
    assert size is not None and size.text == str(limit)


async def test_login_codes_from_the_component_through_ejabberd(gallery, alice):
    async with httpx.AsyncClient(base_url=gallery.url, timeout=30) as http:
        r = await http.post("/api/v1/account/xmpp_code_request/", json={"jid": alice.jid})
        assert r.status_code == 201, r.text
        code, msg = await alice.next_code()
        assert msg["from"] == JID(gallery.settings.xmpp.component.jid)
        r = await http.post("/api/v1/account/xmpp_auth/", json={"jid": alice.jid, "code": code})
        assert r.status_code == 201, r.text
