"""The context every handler reaches through `self.ctx`: settings and the pluggable parts."""

from __future__ import annotations

from dataclasses import dataclass, field

from imaging import Imaging, NoImaging
from models.blobs import Blobs
from models.codes import Codes
from models.db import Database
from models.files import Files
from models.ratelimits import RateLimits
from models.tokens import Tokens
from models.users import Users
from services.accounts import AccountManager
from services.admission import UploadGate
from services.avatars import AvatarManager
from services.files import FileManager
from services.metrics import Metrics
from settings import Settings
from storage.local import BlobStore
from xmpp.client import XmppClient


@dataclass
class Context:
    settings: Settings
    db: Database
    store: BlobStore
    imaging: Imaging = field(default_factory=NoImaging)
    xmpp: XmppClient | None = None  # the XMPP client, when one is configured (server.py starts it)

    def __post_init__(self) -> None:
        s = self.settings
        self.users = Users(self.db.users, s.quota.default)
        self.tokens = Tokens(self.db.tokens, s.auth.token_ttl)
        self.files = Files(self.db.files)
        self.blobs = Blobs(self.db.blobs)
        self.ratelimits = RateLimits(self.db.ratelimits)
        self.metrics = Metrics(self.xmpp_state)
        self.upload_gate = UploadGate(s.limits.concurrent_uploads_per_user, s.limits.concurrent_uploads)
        self.file_manager = FileManager(self.files, self.blobs, self.users, self.store, self.imaging, s.public_url)
        self.avatars = AvatarManager(self.file_manager, self.imaging, self.store)
        self.codes = Codes(self.db.codes, s.auth.code_ttl, s.auth.code_interval)
        self.accounts = AccountManager(
            s, self.users, self.tokens, self.codes, self.ratelimits, self.files, self.file_manager, self.xmpp
        )

    def xmpp_state(self) -> str:
        return "disabled" if self.xmpp is None else self.xmpp.state
