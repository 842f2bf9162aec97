"""The concurrent-upload limits as leases in MongoDB: shared by every process, gone with a dead one."""

from __future__ import annotations

import asyncio

import pytest

from models.db import Database, utcnow
from models.leases import Leases
from services import admission
from services.admission import UploadGate
from services.errors import RateLimited, Unavailable


@pytest.fixture
async def db(settings):
    database = Database(settings.mongodb.uri, settings.mongodb.database)
    await database.ensure_indexes()
    yield database
    await database.close()


async def test_per_user_limit_holds_across_gates(db):
    """Three gates (three processes' worth) admit at most `per_user` of one user's uploads at once,
    however the attempts race."""
    gates = [UploadGate(Leases(db.leases), 3, 100) for _ in range(3)]
    for _round in range(5):
        results = await asyncio.gather(*(gates[i % 3].enter("u@example.org") for i in range(12)), return_exceptions=True)
        admitted = [r for r in results if r is None]
        assert len(admitted) == 3  # exact: one per slot
        assert all(isinstance(r, RateLimited) for r in results if r is not None)
        assert await db.leases.count_documents({"scope": "user"}) == 3
        assert sum(g.active["u@example.org"] for g in gates) == len(admitted)
        for g in gates:
            for _ in range(g.active["u@example.org"]):
                g.leave("u@example.org")
        for g in gates:
            await g.drain(5)
            g.closed = False
        assert await Leases(db.leases).count(utcnow()) == 0


async def test_global_limit_holds_across_gates(db):
    gates = [UploadGate(Leases(db.leases), 10, 4) for _ in range(2)]
    results = await asyncio.gather(*(gates[i % 2].enter(f"user{i}@example.org") for i in range(10)), return_exceptions=True)
    admitted = [r for r in results if r is None]
    assert len(admitted) <= 4  # (a burst may be refused whole: insert first, count second)
    assert all(isinstance(r, Unavailable) for r in results if r is not None)
    # the other gate's uploads count here: one at the limit refuses
    while sum(g.active.total() for g in gates) < 4:
        owner = f"late{sum(g.active.total() for g in gates)}@example.org"
        await gates[0].enter(owner)
    with pytest.raises(Unavailable):
        await gates[1].enter("one-more@example.org")
    for g in gates:
        await g.close()
    assert await Leases(db.leases).count(utcnow()) == 0


async def test_a_dead_holders_leases_stop_counting(db, monkeypatch):
    """A process that died (never renews, never gives back) blocks the user only until its leases
    expire; a live holder's renewals keep its own leases counting."""
    monkeypatch.setattr(admission, "LEASE_SECONDS", 1)
    monkeypatch.setattr(admission, "RENEW_SECONDS", 0.3)
    dead = UploadGate(Leases(db.leases), 1, 100)
    await dead.enter("d@example.org")
    dead._renewer.cancel()  # it died: nothing renews its lease any more
    live = UploadGate(Leases(db.leases), 1, 100)
    with pytest.raises(RateLimited):
        await live.enter("d@example.org")
    await asyncio.sleep(1.2)
    await live.enter("d@example.org")  # the dead holder's lease expired
    await asyncio.sleep(1.5)  # longer than a lease: renewed meanwhile
    other = UploadGate(Leases(db.leases), 1, 100)
    with pytest.raises(RateLimited):
        await other.enter("d@example.org")
    # the dead holder's one lease (its slot) was freed by the taker, whose renewed lease holds it
    assert await db.leases.count_documents({"holder": dead.holder}) == 0
    held = await db.leases.find_one({"_id": "d@example.org:0"})
    assert held is not None and held["holder"] == live.holder and held["expires"] > utcnow()
    await live.close()
    await other.close()
    assert await db.leases.count_documents({"holder": live.holder}) == 0


async def test_refused_enter_leaves_no_lease(db):
    gate = UploadGate(Leases(db.leases), 1, 100)
    await gate.enter("r@example.org")
    other = UploadGate(Leases(db.leases), 1, 100)
    for _ in range(3):
        with pytest.raises(RateLimited):
            await other.enter("r@example.org")
    assert await db.leases.count_documents({"holder": other.holder}) == 0
    gate.closed = True
    with pytest.raises(Unavailable):
        await gate.enter("s@example.org")
    gate.leave("r@example.org")
    assert await gate.drain(5) == 0
    assert await db.leases.count_documents({}) == 0


async def test_an_upload_holds_one_lease_document_and_costs_three_commands(db):
    """The global limit counts the per-user slots (no second lease per upload): one document per
    upload in flight, and entering and leaving cost the slot's insert, the count and the slot's
    delete."""
    sent: list[str] = []
    db.commands.count = sent.append
    gate = UploadGate(Leases(db.leases), 4, 2)
    await gate.enter("a@example.org")
    await gate.enter("b@example.org")
    assert await db.leases.count_documents({}) == 2  # one document per upload in flight
    assert await Leases(db.leases).count(utcnow()) == 2
    with pytest.raises(Unavailable):  # two in flight: the global limit (2) is reached
        await gate.enter("c@example.org")
    sent.clear()
    gate.leave("a@example.org")
    assert await gate.drain(5) == 1
    gate.closed = False
    await gate.enter("c@example.org")  # room again
    gate.leave("c@example.org")
    gate.leave("b@example.org")
    assert await gate.drain(5) == 0
    db.commands.count = lambda name: None
    assert sent == ["delete", "insert", "aggregate", "delete", "delete"]
    assert await db.leases.count_documents({}) == 0


async def test_uploads_entering_together_share_the_global_count(db):
    """The counts of uploads entering at once go as one (group commit): fewer counts than
    uploads, and the limit still holds (each count began after its upload's slot was in)."""
    sent: list[str] = []
    db.commands.count = sent.append
    gate = UploadGate(Leases(db.leases), 4, 6)
    results = await asyncio.gather(*(gate.enter(f"u{i}@example.org") for i in range(12)), return_exceptions=True)
    db.commands.count = lambda name: None
    admitted = [r for r in results if r is None]
    assert len(admitted) <= 6 and all(isinstance(r, Unavailable) for r in results if r is not None)
    assert sent.count("insert") == 12 and sent.count("aggregate") < 12
    await gate.close()
    assert await db.leases.count_documents({}) == 0


async def test_a_process_never_tries_the_slots_it_holds(db):
    """An owner's uploads in flight in one process: the next one goes straight to a free slot
    (one insert and the count), whichever slot the random start names."""
    gate = UploadGate(Leases(db.leases), 8, 100)
    sent: list[str] = []
    db.commands.count = sent.append
    try:
        for _ in range(8):
            sent.clear()
            await gate.enter("busy@example.org")
            assert sent == ["insert", "aggregate"]
        with pytest.raises(RateLimited):  # all eight held here: refused
            await gate.enter("busy@example.org")
    finally:
        db.commands.count = lambda name: None
    assert await db.leases.count_documents({"holder": gate.holder}) == 8
    await gate.close()
    assert await db.leases.count_documents({}) == 0


async def test_a_slot_taken_again_before_its_give_back_returns_stays_renewed(parts, monkeypatch):
    """Two slots: another process holds one, upload A here the other. Upload B here finds both held
    and waits; A ends, its give-back deletes the slot but its reply is slow; B takes that slot
    meanwhile. B's lease must still be renewed after A's give-back returns."""
    monkeypatch.setattr(admission, "LEASE_SECONDS", 1)
    monkeypatch.setattr(admission, "RENEW_SECONDS", 0.3)
    monkeypatch.setattr(admission, "SLOT_WAIT", 0.3)
    elsewhere = UploadGate(Leases(parts.db.leases), 2, 100)
    gate = UploadGate(Leases(parts.db.leases), 2, 100)
    real_drop = gate.leases.drop

    async def slow_drop(lease: str, holder: str) -> None:
        await real_drop(lease, holder)
        await asyncio.sleep(1.0)  # the reply is slow to come back

    gate.leases.drop = slow_drop
    await elsewhere.enter("o@example.org")
    await gate.enter("o@example.org")
    (a_slot,) = gate._held["o@example.org"]
    b = asyncio.ensure_future(gate.enter("o@example.org"))  # both slots held: B waits SLOT_WAIT
    await asyncio.sleep(0.1)
    gate.leave("o@example.org")  # A ends during B's wait
    await b
    assert gate._held["o@example.org"] == [a_slot]  # B took A's slot before A's give-back returned
    await asyncio.sleep(2.2)  # A's give-back returned; longer than a lease: B's must be renewed
    other = UploadGate(Leases(parts.db.leases), 2, 100)
    try:
        elsewhere.leave("o@example.org")
        await elsewhere.drain(5)
        await other.enter("o@example.org")  # the slot elsewhere gave back
        with pytest.raises(RateLimited):
            await other.enter("o@example.org")  # B's: still held
    finally:
        await gate.close()
        await other.close()
        await elsewhere.close()
