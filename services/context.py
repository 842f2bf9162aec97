"""The context every handler reaches through `self.ctx`: settings and the pluggable parts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from imaging import Imaging, NoImaging
from models.blobs import Blobs
from models.db import Database
from models.files import Files
from models.ratelimits import RateLimits
from models.tokens import Tokens
from models.users import Users
from services.files import FileManager
from settings import Settings
from storage.local import BlobStore


@dataclass
class Context:
    settings: Settings
    db: Database
    store: BlobStore
    imaging: Imaging = field(default_factory=NoImaging)
    xmpp: Any = None  # the XMPP client, when one is configured

    def __post_init__(self) -> None:
        s = self.settings
        self.users = Users(self.db.users, s.quota.default)
        self.tokens = Tokens(self.db.tokens, s.auth.token_ttl)
        self.files = Files(self.db.files)
        self.blobs = Blobs(self.db.blobs)
        self.ratelimits = RateLimits(self.db.ratelimits)
        self.file_manager = FileManager(self.files, self.blobs, self.users, self.store, self.imaging, s.public_url)

    def xmpp_state(self) -> str:
        return "disabled" if self.xmpp is None else self.xmpp.state
