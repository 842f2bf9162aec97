"""contrib/prosody/mod_gallery_discovery.lua against the real Prosody: a user's disco#info of their
own domain carries the form the Xabber apps read (FORM_TYPE urn:xabber:http:url)."""

from __future__ import annotations

from xml.etree import ElementTree as ET

import pytest
from slixmpp import JID

from tests.prosody import GALLERY_URL, Prosody, XmppUser, running_prosody

DISCO_INFO = "{http://jabber.org/protocol/disco#info}query"
XDATA = "{jabber:x:data}"
FORM_TYPE = "urn:xabber:http:url"
FIELD = "urn:xabber:http:url:mediagallery"


def forms(result: ET.Element) -> dict[str, dict[str, list[str]]]:
    """The data forms of a disco#info result, by FORM_TYPE: {var: [values]}, read from the XML."""
    found: dict[str, dict[str, list[str]]] = {}
    query = result.find(DISCO_INFO)
    assert query is not None, ET.tostring(result)
    for x in query.findall(f"{XDATA}x"):
        assert x.get("type") == "result"
        fields = {f.get("var", ""): [v.text or "" for v in f.findall(f"{XDATA}value")] for f in x.findall(f"{XDATA}field")}
        found[fields.get("FORM_TYPE", [""])[0]] = fields
    return found


async def own_domain_info(user: XmppUser) -> ET.Element:
    """What the apps ask on login: disco#info of the account's own domain."""
    iq = await user.client.plugin["xep_0030"].get_info(jid=JID(user.server.domain), timeout=10)
    assert iq["type"] == "result" and iq["from"] == JID(user.server.domain)
    return iq.xml


async def test_the_domain_advertises_the_gallery(xmpp_user):
    alice = await xmpp_user("alice")
    found = forms(await own_domain_info(alice))
    assert found[FORM_TYPE] == {"FORM_TYPE": [FORM_TYPE], FIELD: [f"{GALLERY_URL}/api/"]}
    hidden = [
        f
        for f in (await own_domain_info(alice)).iter(f"{XDATA}field")
        if f.get("var") == "FORM_TYPE" and f.findtext(f"{XDATA}value") == FORM_TYPE
    ]
    assert [f.get("type") for f in hidden] == ["hidden"]  # XEP-0068: FORM_TYPE is a hidden field


async def test_the_advertised_url_reaches_the_api(service, client, xmpp_user):
    """gallery_url = the service's public_url (a trailing slash is fine): the apps' URL + "v1/…" works."""
    with running_prosody(gallery_url=f"{service.url}/") as server:
        alice = await xmpp_user("alice", server=server)
        advertised = forms(await own_domain_info(alice))[FORM_TYPE][FIELD]
        assert advertised == [f"{service.url}/api/"]
        r = await client.get(f"{advertised[0]}v1/openapi.yaml")
        assert r.status_code == 200 and "openapi" in r.text
        r = await client.get(f"{advertised[0]}v1/files/")
        assert r.status_code == 401  # the files API itself, asking for a token


@pytest.mark.parametrize("url", ["", "files.example.org", "ftp://files.example.org"])
async def test_without_a_valid_url_nothing_is_advertised(url, xmpp_user):
    with running_prosody(gallery_url=url) as server:
        alice = await xmpp_user("alice", server=server)
        assert FORM_TYPE not in forms(await own_domain_info(alice))
        assert "no gallery is advertised" in server.log.read_text()


def test_prosody_logs_what_it_advertises(prosody: Prosody):
    assert "advertising the gallery at https://gallery.localhost/api/" in prosody.log.read_text()
