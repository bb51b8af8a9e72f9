"""The online accountant is one choice, fixed for a run: the genesis names it, a resume
cannot change it, and the audit re-accounts with a backend at least as tight.
"""

from __future__ import annotations

import pytest

from securefed.audit import audit_ledger
from securefed.cli import main
from securefed.config import parse_config
from securefed.errors import ConfigError
from securefed.federation import Federation, run_federation
from securefed.ledger import EntryKind, Ledger
from securefed.ledger.bodies import federation_created_body, spend_body
from securefed.privacy.accounting import Backend, epsilon_for
from securefed.privacy.events import DpSgdEvent, PrivacyUnit
from securefed.randomness import DeterministicRandom
from securefed.secagg.roster import IdentityKey

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

DELTA = 1e-5
EVENT = DpSgdEvent(sampling_rate=0.05, noise_multiplier=1.0, steps=200, unit=PrivacyUnit.RECORD)


def _ledger(path, *, label, accountant=None, recorded=None):
    """A one-spend ledger whose genesis names ``label`` (and ``accountant`` in its config)."""
    writer = IdentityKey.generate(DeterministicRandom(b"a" * 32))
    versions = {} if label is None else {"accounting_online": label}
    config = {} if accountant is None else {"privacy": {"accountant": accountant}}
    genesis = federation_created_body(
        federation_id="acct", securefed_version="test", roster_hash=bytes(32),
        protocol_versions=versions, config=config,
    )  # fmt: skip
    if recorded is None:
        recorded = epsilon_for([EVENT], delta=DELTA, backend=Backend(label or "rdp"))
    with Ledger.create(path, writer, federation=genesis) as ledger:
        ledger.append(EntryKind.SPEND, spend_body(
            owner_id=1, round_id=1, event=EVENT, delta=DELTA, epsilon_after=recorded))  # fmt: skip
    return writer.public_key


@pytest.mark.parametrize("label", ["pld", "prv", "rdp"])
def test_an_honest_ledger_audits_clean_on_its_independent_backend(tmp_path, label):
    # (A bare spend, with no round around it: only the accounting is looked at.)
    key = _ledger(tmp_path / "l.db", label=label, accountant=label)
    audit = audit_ledger(tmp_path / "l.db", key)
    assert audit.verification.ok
    assert not audit.under_reported
    assert not [f for f in audit.findings if "accountant" in f.reason]
    assert audit.online_backend == label
    assert audit.audit_backend == {"rdp": "pld", "pld": "prv", "prv": "pld"}[label]


@pytest.mark.parametrize(
    ("label", "accountant", "reason"),
    [
        (None, None, "unknown online accountant"),
        ("gdp", None, "unknown online accountant"),
        ("rdp", "pld", "the genesis names the rdp accountant"),
    ],
)
def test_a_missing_unknown_or_contradicted_accountant_is_a_finding(
    tmp_path, label, accountant, reason
):
    # Spends recorded on PLD, so that only the genesis is wrong.
    recorded = epsilon_for([EVENT], delta=DELTA, backend=Backend.PLD)
    key = _ledger(tmp_path / "l.db", label=label, accountant=accountant, recorded=recorded)
    audit = audit_ledger(tmp_path / "l.db", key)
    assert audit.verification.ok
    assert not audit.ok
    assert any(reason in f.reason for f in audit.findings)
    assert audit.online_backend == "rdp"  # the loosest is assumed; PLD re-accounts
    assert audit.audit_backend == "pld"


def test_the_audit_refuses_its_own_or_a_looser_backend_with_a_clear_error(tmp_path, capsys):
    key = _ledger(tmp_path / "l.db", label="pld", accountant="pld")
    with pytest.raises(ConfigError, match="must differ"):
        audit_ledger(tmp_path / "l.db", key, backend=Backend.PLD)
    with pytest.raises(ConfigError, match="looser"):
        audit_ledger(tmp_path / "l.db", key, backend=Backend.RDP)
    args = ["audit", "verify", str(tmp_path / "l.db"), "--pubkey", key.hex()]
    assert main([*args, "--backend", "rdp"]) == 2  # an error message, not a traceback
    assert "looser" in capsys.readouterr().err
    main([*args, "--backend", "prv"])  # runs (it fails on the bare spend's missing round)
    assert "independent" in capsys.readouterr().out


def _sections(ratings_csv, accountant):
    return {
        "federation": {"rounds": 3, "federation_id": "acct-fed"},
        "data": {"path": str(ratings_csv), "format": "csv", "partition": "silos", "silos": 3},
        "model": {"kind": "mf", "dim": 4},
        "training": {"sampling_rate": 0.2, "learning_rate": 0.5, "negatives": 2},
        "privacy": {"target_epsilon": 8.0, "accountant": accountant},
        "client_privacy": {"enabled": True, "noise_multiplier": 1.0, "budget_epsilon": 50.0},
        "update": {"clip_norm": 5.0},
        "secagg": {"quantization": {"bits": 20, "clip": 5.0}, "min_clients": 2},
        "evaluation": {"sampled_negatives": 20, "every": 3},
    }


@pytest.fixture(scope="module")
def ratings_csv(tmp_path_factory, ratings_writer):
    path = tmp_path_factory.mktemp("data") / "ratings.csv"
    return ratings_writer(path, seed=3, users=24, items=range(100, 140), per_user=(8, 12),
                          popularity=1.0)  # fmt: skip


def test_every_accountant_of_a_federation_is_the_configured_one(ratings_csv):
    sections = _sections(ratings_csv, "pld")
    fed = Federation(parse_config(sections), rng=DeterministicRandom(b"f" * 32))
    assert fed.federation_accountant is not None
    accountants = [
        fed.federation_accountant,
        *fed.server_view.values(),
        *(o.accountant for o in fed.owners.values()),
    ]
    assert {a.backend for a in accountants} == {Backend.PLD}
    assert fed.genesis_body()["protocol_versions"]["accounting_online"] == "pld"


def test_a_resume_cannot_change_the_configuration(ratings_csv, tmp_path, crash):
    sections = _sections(ratings_csv, "rdp")
    del sections["client_privacy"]
    writer = IdentityKey.generate(DeterministicRandom(b"w" * 32))
    crashed, crash_after_spends = crash
    with pytest.raises(crashed):
        run_federation(parse_config(sections), out_dir=tmp_path, rng=DeterministicRandom(bytes(32)),
                       writer_key=writer, on_spent=crash_after_spends(2))  # fmt: skip
    size = (tmp_path / "ledger.db").stat().st_size
    changed = {**sections, "privacy": {**sections["privacy"], "accountant": "pld"}}
    with pytest.raises(ConfigError, match=r"privacy\.accountant"):
        run_federation(parse_config(changed), out_dir=tmp_path, rng=DeterministicRandom(bytes(32)),
                       writer_key=writer, resume=True)  # fmt: skip
    assert (tmp_path / "ledger.db").stat().st_size == size  # nothing appended
    result = run_federation(parse_config(sections), out_dir=tmp_path,
                            rng=DeterministicRandom(bytes(32)), writer_key=writer,
                            resume=True)  # fmt: skip
    assert result.rounds[-1].round == 3


def test_a_field_added_since_the_ledger_is_no_change_only_at_its_default():
    # A ledger written before privacy.accountant existed resumes with the default
    # accountant (the behaviour it had), and with no other.
    from securefed.federation import _changed_keys

    default = {"privacy": {"accountant": "rdp", "delta": "1e-05"}, "new": {"x": "1"}}
    recorded = {"privacy": {"delta": "1e-05"}}
    assert _changed_keys(recorded, {**default}, default) == []
    pld = {"privacy": {"accountant": "pld", "delta": "1e-05"}, "new": {"x": "1"}}
    assert _changed_keys(recorded, pld, default) == ["privacy.accountant"]
    other = {"privacy": {"accountant": "rdp", "delta": "1e-06"}, "new": {"x": "2"}}
    assert _changed_keys(recorded, other, default) == ["new", "privacy.delta"]
    # A key the recorded configuration has is compared as it is.
    assert _changed_keys({"privacy": {"accountant": "rdp"}}, {"privacy": {"accountant": "pld"}},
                         default) == ["privacy.accountant"]  # fmt: skip
