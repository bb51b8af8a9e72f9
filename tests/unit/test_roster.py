"""Signed rosters: threshold verification, canonical encoding, lookups."""

from __future__ import annotations

import dataclasses

import pytest

from securefed.errors import IntegrityError, ProtocolError
from securefed.secagg.roster import IdentityKey, Roster, RosterEntry, SignedRoster


@pytest.fixture(scope="module")
def fed(helpers):
    return helpers.make_federation(5, label="roster")


def _trusted(fed):
    return [a.public_key for a in fed.authorities]


def test_threshold_verification(fed):
    assert fed.signed.verify(trusted=_trusted(fed), required=3) == fed.roster
    assert fed.signed.verify(trusted=_trusted(fed)[:2], required=2) == fed.roster
    with pytest.raises(IntegrityError):
        fed.signed.verify(trusted=_trusted(fed)[:2], required=3)
    with pytest.raises(ValueError, match="required"):
        fed.signed.verify(trusted=_trusted(fed), required=0)


def test_untrusted_signers_do_not_count(fed, helpers):
    strangers = [IdentityKey.generate(helpers.rng("stranger", i)) for i in range(3)]
    signed = SignedRoster.sign(fed.roster, strangers)
    with pytest.raises(IntegrityError):
        signed.verify(trusted=_trusted(fed), required=1)


def test_forged_signature_is_rejected(fed):
    key, sig = fed.signed.signatures[0]
    forged = dataclasses.replace(
        fed.signed,
        signatures=((key, bytes([sig[0] ^ 1]) + sig[1:]), *fed.signed.signatures[1:]),
    )
    with pytest.raises(IntegrityError):
        forged.verify(trusted=_trusted(fed), required=3)
    assert forged.verify(trusted=_trusted(fed), required=2) == fed.roster


def test_duplicate_signature_counts_once(fed):
    key, sig = fed.signed.signatures[0]
    doubled = dataclasses.replace(fed.signed, signatures=((key, sig), (key, sig)))
    with pytest.raises(IntegrityError):
        doubled.verify(trusted=_trusted(fed), required=2)


def test_modified_roster_breaks_signatures(fed, helpers):
    intruder = IdentityKey.generate(helpers.rng("intruder"))
    entries = (
        *fed.roster.entries[:-1],
        RosterEntry(client_id=5, name="client-5", identity_key=intruder.public_key),
    )
    tampered = SignedRoster(
        roster=Roster(federation_id=fed.roster.federation_id, version=1, entries=entries),
        signatures=fed.signed.signatures,
    )
    with pytest.raises(IntegrityError):
        tampered.verify(trusted=_trusted(fed), required=1)


def test_encoding_round_trip(fed):
    data = fed.roster.to_bytes()
    back = Roster.from_bytes(data)
    assert back == fed.roster
    assert back.digest() == fed.roster.digest()
    with pytest.raises(ProtocolError):
        Roster.from_bytes(b"X" + data[1:])
    with pytest.raises(ProtocolError):
        Roster.from_bytes(data[:-1])


def test_entries_sorted_and_order_independent(fed):
    shuffled = Roster(
        federation_id=fed.roster.federation_id,
        version=1,
        entries=tuple(reversed(fed.roster.entries)),
    )
    assert shuffled.to_bytes() == fed.roster.to_bytes()
    assert [e.client_id for e in shuffled.entries] == [1, 2, 3, 4, 5]


def test_lookup(fed):
    assert fed.roster.identity_key(2) == fed.identities[2].public_key
    assert 2 in fed.roster
    assert 99 not in fed.roster
    with pytest.raises(ProtocolError):
        fed.roster.identity_key(99)


def test_roster_validation(fed):
    entry = fed.roster.entries[0]
    with pytest.raises(ValueError, match="unique"):
        Roster(federation_id="f", version=1, entries=(entry, entry))
    with pytest.raises(ValueError, match="client_id"):
        RosterEntry(client_id=0, name="x", identity_key=bytes(32))
    with pytest.raises(ValueError, match="32 bytes"):
        RosterEntry(client_id=1, name="x", identity_key=bytes(31))
