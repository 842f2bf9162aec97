"""XMPP: JID rules (`xmpp.jids`) and the service's own client that delivers codes (`xmpp.client`)."""
