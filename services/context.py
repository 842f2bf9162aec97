"""What the service is made of: its parts (database, models, store, imaging, XMPP) and the
managers built on them. Handlers see the managers only (`Context`); the parts are the managers'
and the maintenance commands'."""

from __future__ import annotations

from dataclasses import dataclass, field

from imaging import Imaging, NoImaging
from models.blobs import Blobs
from models.codes import Codes
from models.db import Database
from models.files import Files
from models.leases import Leases
from models.ratelimits import RateLimits
from models.sequences import IdSequence
from models.servers import Servers
from models.slots import Slots
from models.tokens import Tokens
from models.users import Users
from services.accounts import AccountManager
from services.avatars import AvatarManager
from services.files import FileManager
from services.health import HealthManager
from services.metrics import Metrics
from services.prosody_share import ProsodyShare
from services.slots import SlotManager
from settings import Settings
from storage import ContentStore
from xmpp.client import XmppClient
from xmpp.component import UploadComponent


@dataclass
class Parts:
    settings: Settings
    db: Database
    store: ContentStore
    imaging: Imaging = field(default_factory=NoImaging)
    xmpp: XmppClient | None = None  # the XMPP client, when one is configured (server.py starts it)
    component: UploadComponent | None = None  # the XEP-0363 component, when configured (likewise)

    def __post_init__(self) -> None:
        s = self.settings
        self.users = Users(self.db.users, s.quota.default)
        self.tokens = Tokens(self.db.tokens, s.auth.token_ttl)
        self.files = Files(self.db.files)
        self.blobs = Blobs(self.db.blobs)
        self.leases = Leases(self.db.leases)
        self.codes = Codes(self.db.codes, s.auth.code_ttl, s.auth.code_interval)
        self.ratelimits = RateLimits(self.db.ratelimits)
        self.file_ids = IdSequence(self.db.db["sequences"], "files")
        self.slots = Slots(self.db.slots)
        self.servers = Servers(self.db.servers)

    def xmpp_state(self) -> str:
        return "disabled" if self.xmpp is None else self.xmpp.state

    def component_state(self) -> str:
        return "disabled" if self.component is None else self.component.state

    @property
    def code_sender(self) -> XmppClient | None:
        """Who sends login codes: the client account, else the component."""
        return self.xmpp if self.xmpp is not None else self.component


@dataclass
class Context:
    """What every handler reaches through `self.ctx`: settings and the managers."""

    settings: Settings
    files: FileManager
    avatars: AvatarManager
    accounts: AccountManager
    health: HealthManager
    metrics: Metrics
    slots: SlotManager
    prosody_share: ProsodyShare

    @classmethod
    def build(cls, p: Parts) -> Context:
        s = p.settings
        metrics = Metrics(p.xmpp_state)
        p.db.commands.count = metrics.count_command
        files = FileManager(
            p.files,
            p.blobs,
            p.users,
            p.ratelimits,
            p.file_ids,
            p.leases,
            p.store,
            p.imaging,
            s.limits,
            s.public_url,
            retention=s.retention,
        )
        slots = SlotManager(s, p.slots, p.users, files)
        if p.component is not None:
            p.component.serve(slots)
        return cls(
            settings=s,
            files=files,
            avatars=AvatarManager(files, p.imaging, p.store),
            accounts=AccountManager(s, p.users, p.tokens, p.codes, p.ratelimits, p.files, files, p.code_sender),
            health=HealthManager(p.db, p.store, p.xmpp_state, p.component_state),
            metrics=metrics,
            slots=slots,
            prosody_share=ProsodyShare(s.prosody_share.secret, s.auth, p.files, p.users, files),
        )
