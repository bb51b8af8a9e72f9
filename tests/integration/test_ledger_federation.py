"""The ledger of a simulated federation: order, verification, audit, budget stop, crash.

Every test runs the real client and server code on a small data set (30 users,
3 silos) and checks the ledger file it leaves, independently of the writer.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from securefed.audit import audit_ledger
from securefed.cli import main
from securefed.config import parse_config
from securefed.errors import IntegrityError, ProtocolError
from securefed.federation import Federation, read_ledger_state, run_federation
from securefed.ledger import EntryKind, Ledger, verify_ledger
from securefed.ledger.bodies import dp_sgd_event
from securefed.ledger.canonical import parse_decimal, parse_uint
from securefed.privacy.accounting import Backend, epsilon_for
from securefed.randomness import DeterministicRandom
from securefed.secagg.roster import IdentityKey
from securefed.server.recorder import RoundRecorder

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def ratings_csv(tmp_path_factory, ratings_writer):
    # 30 users x 8-15 interactions over 60 items; popular items are more likely.
    path = tmp_path_factory.mktemp("data") / "ratings.csv"
    return ratings_writer(path, seed=11, users=30, items=range(100, 160), per_user=(8, 16),
                          popularity=1.0)  # fmt: skip


def _sections(ratings_csv, **sections):
    base = {
        "federation": {"rounds": 3, "federation_id": "ledger-fed"},
        "data": {"path": str(ratings_csv), "format": "csv", "partition": "silos", "silos": 3},
        "model": {"kind": "mf", "dim": 8},
        "training": {"sampling_rate": 0.15, "learning_rate": 0.5, "negatives": 2},
        "privacy": {"target_epsilon": 8.0},
        "update": {"clip_norm": 5.0},
        "secagg": {"quantization": {"bits": 20, "clip": 5.0}, "min_clients": 2},
        "evaluation": {"sampled_negatives": 20, "every": 3},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    return base


def _config(ratings_csv, **sections):
    return parse_config(_sections(ratings_csv, **sections))


def _entries(path: Path):
    key = bytes.fromhex((path.parent / "ledger.pub").read_text())
    report = verify_ledger(path, key)
    report.raise_for_failure()
    return report.entries


def _owner_keys(run: Path) -> dict[int, bytes]:
    data = json.loads((run / "owner_keys.json").read_text())
    return {int(k): bytes.fromhex(v) for k, v in data.items()}


@pytest.fixture(scope="module")
def finished_run(ratings_csv, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    seen = {}

    def on_start(fed):
        seen["fed"] = fed

    result = run_federation(_config(ratings_csv), out_dir=out, on_start=on_start)
    return out, result, seen["fed"]


def test_a_finished_run_leaves_a_sealed_ledger_that_verifies_and_audits(finished_run):
    out, result, fed = finished_run
    key = bytes.fromhex((out / "ledger.pub").read_text())
    owner_keys = _owner_keys(out)
    audit = audit_ledger(out / "ledger.db", key, owner_keys=owner_keys, require_seal=True)
    assert audit.ok, audit.verification.reason
    assert audit.verification.sealed
    assert audit.online_backend == "rdp"
    assert audit.audit_backend == "pld"
    assert [c.owner_id for c in audit.owners] == sorted(fed.owners) == [1, 2, 3]
    for check in audit.owners:
        assert len(check.series) == 3  # one spend per round
        # The online (RDP) figure bounds the independent (PLD) one from above.
        assert check.independent <= check.recorded
        assert check.recorded == pytest.approx(fed.owners[check.owner_id].epsilon())
        assert check.recorded <= check.budget
    # Three silos with identical plans: one history, accounted once per prefix.
    assert audit.distinct_histories == 3
    assert audit.verification.countersignatures == 9
    assert [r.released for r in audit.rounds] == [True, True, True]
    assert result.stop_reason.startswith("federation finished")
    # The JSON Lines export is the same sealed ledger.
    export = audit_ledger(out / "ledger.jsonl", key, owner_keys=owner_keys, require_seal=True)
    assert export.ok
    assert export.verification.head == audit.verification.head


def test_every_spend_is_durable_and_countersigned_before_its_round_is_released(finished_run):
    out, _, _ = finished_run
    entries = _entries(out / "ledger.db")
    kinds = [e.kind for e in entries]
    assert kinds[0] is EntryKind.FEDERATION_CREATED
    assert kinds[-1] is EntryKind.SEAL
    released: dict[int, int] = {}
    spent: dict[int, set[int]] = {}
    countersigned: set[int] = set()
    for e in entries:
        body = e.fields()
        if e.kind is EntryKind.SPEND:
            r = parse_uint(body["round_id"])
            assert r not in released, "a spend after its round's release"
            spent.setdefault(r, set()).add(parse_uint(body["owner_id"]))
        elif e.kind is EntryKind.COUNTERSIGNATURE:
            countersigned.add(parse_uint(body["entry_seq"]))
        elif e.kind is EntryKind.AGGREGATE_RELEASED:
            r = parse_uint(body["round_id"])
            assert r not in released, "a round released twice"
            released[r] = e.seq
            assert spent[r] == {1, 2, 3}
            spend_seqs = [
                s.seq
                for s in entries
                if s.kind is EntryKind.SPEND and parse_uint(s.fields()["round_id"]) == r
            ]
            assert all(seq in countersigned for seq in spend_seqs)
    assert sorted(released) == [1, 2, 3]
    # Each round's recorded plan is the mechanism recorded for it.
    plans = {parse_uint(e.fields()["round_id"]): e.fields()["plan"] for e in entries
             if e.kind is EntryKind.ROUND_PLANNED}  # fmt: skip
    for e in entries:
        if e.kind is EntryKind.MECHANISM:
            body = e.fields()
            plan = plans[parse_uint(body["round_id"])]
            for name in ("noise_multiplier", "sampling_rate", "steps", "clip_norm", "unit"):
                assert plan[name] == body[name]


def test_owners_hold_receipts_and_heads_that_pin_the_ledger(finished_run):
    out, _, fed = finished_run
    key = bytes.fromhex((out / "ledger.pub").read_text())
    receipts = [r for o in fed.owners.values() for r in o.receipts]
    assert len(receipts) == 9
    heads = {o.head for o in fed.owners.values()}
    assert len(heads) == 1  # every owner received the same head after the last round
    (head,) = heads
    report = verify_ledger(out / "ledger.db", key, later_head=head, receipts=receipts)
    assert report.ok
    # The ledger cut just before the head no longer matches what the owners hold.
    cut = out.parent / "cut.jsonl"
    cut.write_bytes(b"".join(e.to_json_line() for e in report.entries[: head[0]]))
    assert not verify_ledger(cut, key, later_head=head).ok
    # Cut before the last countersigned spend: that owner's receipt catches it.
    last = max(r.entry_seq for r in receipts)
    cut.write_bytes(b"".join(e.to_json_line() for e in report.entries[:last]))
    assert verify_ledger(cut, key).ok  # self-consistent on its own
    assert not verify_ledger(cut, key, receipts=receipts).ok


def test_the_global_model_hash_in_the_ledger_is_the_final_model(finished_run):
    out, _, fed = finished_run
    entries = _entries(out / "ledger.db")
    last = [e for e in entries if e.kind is EntryKind.AGGREGATE_RELEASED][-1]
    weights = np.ascontiguousarray(fed.coordinator.weights, dtype="<f4").tobytes()
    expected = hashlib.sha256(b"securefed/global-model/v1|" + weights).hexdigest()
    assert last.fields()["model_hash"] == expected


def test_an_owner_bound_to_a_ledger_will_not_train_before_its_spend_is_durable(ratings_csv):
    fed = Federation(_config(ratings_csv, federation={"rounds": 1}))
    owner = fed.owners[1]
    owner.bind_ledger()
    plan = fed.coordinator.plan(1, unit=fed.config.privacy.unit,
                                noise_multiplier=fed.noise_multiplier)  # fmt: skip
    accepted = owner.accept(plan)
    with pytest.raises(ProtocolError, match="not durable"):
        owner.train_round(
            accepted, fed.coordinator.weights, optimizer=fed.config.training.optimizer
        )


def test_an_owner_countersigns_only_its_own_exact_spend(ratings_csv, tmp_path):
    fed = Federation(_config(ratings_csv, federation={"rounds": 1}))
    writer = IdentityKey.generate()
    ledger = Ledger.create(tmp_path / "l.db", writer, federation=fed.genesis_body())
    recorder = RoundRecorder(ledger)
    fed.bind_ledger(recorder)
    plan = fed.coordinator.plan(1, unit=fed.config.privacy.unit,
                                noise_multiplier=fed.noise_multiplier)  # fmt: skip
    a0 = fed.owners[1].accept(plan)
    a1 = fed.owners[2].accept(plan)
    recorder.planned(plan, cohort=[1, 2], cohort_rate=1.0, accepted=[1, 2], event=a0.event)
    delta = fed.config.privacy.delta
    # The writer under-reports owner 0's epsilon: the owner refuses to countersign.
    low = recorder.spend(1, event=a0.event, delta=delta, epsilon_after=a0.epsilon_after / 2)
    with pytest.raises(ProtocolError, match="does not record its spend"):
        fed.owners[1].countersign_spend(low, ledger_id=recorder.ledger_id)
    # Owner 2's entry is not owner 1's.
    e2 = recorder.spend(2, event=a1.event, delta=delta, epsilon_after=a1.epsilon_after)
    with pytest.raises(ProtocolError):
        fed.owners[1].countersign_spend(e2, ledger_id=recorder.ledger_id)
    receipt = fed.owners[2].countersign_spend(e2, ledger_id=recorder.ledger_id)
    recorder.countersignature(receipt)
    # A spend recorded twice, or for an owner that did not accept, is refused by the writer.
    with pytest.raises(ProtocolError):
        recorder.spend(2, event=a1.event, delta=delta, epsilon_after=a1.epsilon_after)
    with pytest.raises(ProtocolError):
        recorder.spend(3, event=a1.event, delta=delta, epsilon_after=a1.epsilon_after)
    ledger.close()


def test_the_recorder_refuses_a_release_before_the_spends_or_a_second_release(
    ratings_csv, tmp_path
):
    fed = Federation(_config(ratings_csv, federation={"rounds": 1}))
    ledger = Ledger.create(tmp_path / "l.db", IdentityKey.generate(), federation=fed.genesis_body())
    recorder = RoundRecorder(ledger)
    plan = fed.coordinator.plan(1, unit=fed.config.privacy.unit,
                                noise_multiplier=fed.noise_multiplier)  # fmt: skip
    accepted = fed.owners[1].accept(plan)
    recorder.planned(plan, cohort=[1], cohort_rate=1.0, accepted=[1], event=accepted.event)
    weights = fed.coordinator.weights
    with pytest.raises(ProtocolError, match="no recorded spend"):
        recorder.released(mean=np.zeros(3), weight=1, new_weights=weights, survivors=[1])
    recorder.spend(1, event=accepted.event, delta=1e-5, epsilon_after=accepted.epsilon_after)
    recorder.released(mean=np.zeros(3), weight=1, new_weights=weights, survivors=[1])
    with pytest.raises(ProtocolError, match="already released"):
        recorder.released(mean=np.zeros(3), weight=1, new_weights=weights, survivors=[1])
    with pytest.raises(ProtocolError, match="not after"):
        recorder.planned(plan, cohort=[1], cohort_rate=1.0, accepted=[1], event=accepted.event)
    ledger.close()


def test_budgets_stop_the_simulation_cleanly_and_are_recorded(ratings_csv, tmp_path):
    # About 1.0-1.4 per round against a budget of 2.5: two rounds fit, the third never starts.
    config = _config(
        ratings_csv,
        federation={"rounds": 6},
        privacy={"target_epsilon": None, "noise_multiplier": 2.0, "budget_epsilon": 2.5},
    )
    out = tmp_path / "run"
    result = run_federation(config, out_dir=out)
    assert "budget is exhausted" in result.stop_reason
    assert len(result.rounds) < 6
    key = bytes.fromhex((out / "ledger.pub").read_text())
    audit = audit_ledger(out / "ledger.db", key, owner_keys=_owner_keys(out), require_seal=True)
    assert audit.ok
    # Budget overshoot: zero, by the independent figure as well as the recorded one.
    for check in audit.owners:
        assert check.recorded <= 2.5
        assert check.independent <= 2.5
        assert not check.over_budget
    stops = audit.budget_stops
    assert {s["owner_id"] for s in stops} == {"1", "2", "3"}
    assert all(s["scope"] == "owner" for s in stops)
    # The last round that fits ran: one more round would have overspent.
    per_round = audit.owners[0].series[0].recorded
    spent = audit.owners[0].recorded
    assert spent + per_round * 0.9 > 2.5 - max(0.025, 0.02)


def test_the_audit_catches_an_under_reported_epsilon(ratings_csv, tmp_path):
    fed = Federation(_config(ratings_csv, federation={"rounds": 1}))
    writer = IdentityKey.generate()
    ledger = Ledger.create(tmp_path / "l.db", writer, federation=fed.genesis_body())
    recorder = RoundRecorder(ledger)
    plan = fed.coordinator.plan(1, unit=fed.config.privacy.unit,
                                noise_multiplier=fed.noise_multiplier)  # fmt: skip
    accepted = fed.owners[1].accept(plan)
    recorder.planned(plan, cohort=[1], cohort_rate=1.0, accepted=[1], event=accepted.event)
    true_eps = epsilon_for([accepted.event], delta=1e-5, backend=Backend.PLD)
    recorder.spend(1, event=accepted.event, delta=1e-5, epsilon_after=true_eps * 0.9 - 0.02)
    recorder.seal("test")
    ledger.close()
    audit = audit_ledger(tmp_path / "l.db", writer.public_key)
    assert audit.verification.ok
    assert not audit.ok
    assert [c.owner_id for c in audit.under_reported] == [1]
    # The command line says so and exits non-zero.
    code = main(["audit", "verify", str(tmp_path / "l.db"), "--pubkey", writer.public_key.hex()])
    assert code == 1


def test_cli_audit_verify_passes_a_good_ledger_and_names_a_tampered_entry(
    finished_run, tmp_path, capsys
):
    out, _, _ = finished_run
    pub = str(out / "ledger.pub")
    args = ["audit", "verify", str(out / "ledger.db"), "--pubkey", pub, "--require-seal"]
    assert main([*args, "--owner-keys", str(out / "owner_keys.json")]) == 0
    printed = capsys.readouterr().out
    assert "AUDIT PASSED" in printed
    assert "independent" in printed
    # Flip one byte of one spend entry's body (in a copy made through the JSON export).
    ledger = verify_ledger(out / "ledger.db", bytes.fromhex((out / "ledger.pub").read_text()))
    spend = next(e for e in ledger.entries if e.kind is EntryKind.SPEND)
    lines = [e.to_json_line() for e in ledger.entries]
    target = lines[spend.seq]
    digit = target.index(b'"steps":"') + len(b'"steps":"')
    flipped = bytes([target[digit] ^ 0x01])
    lines[spend.seq] = target[:digit] + flipped + target[digit + 1 :]
    bad = tmp_path / "tampered.jsonl"
    bad.write_bytes(b"".join(lines))
    assert main(["audit", "verify", str(bad), "--pubkey", pub]) == 1
    printed = capsys.readouterr().out
    assert f"FAILED at entry {spend.seq}" in printed
    assert main(["audit", "verify", str(bad), "--pubkey", "00" * 31]) == 2


_CRASH_SCRIPT = textwrap.dedent(
    """
    import os, sys, json
    from pathlib import Path
    from securefed.config import parse_config
    from securefed.federation import run_federation
    from securefed.randomness import DeterministicRandom
    from securefed.secagg.roster import IdentityKey

    sections, out, crash_round = json.loads(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])

    def on_spent(round_id):
        if round_id == crash_round:
            os._exit(9)  # killed: the spends of this round are durable, nothing released

    run_federation(
        parse_config(sections),
        out_dir=out,
        rng=DeterministicRandom(bytes(32)),
        writer_key=IdentityKey.generate(DeterministicRandom(b"w" * 32)),
        on_spent=on_spent,
    )
    """
)


def test_a_crash_between_spend_and_release_counts_the_spend_and_releases_nothing_twice(
    ratings_csv, tmp_path
):
    sections = _sections(ratings_csv, federation={"rounds": 4})
    out = tmp_path / "run"
    script = tmp_path / "crash.py"
    script.write_text(_CRASH_SCRIPT)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(  # noqa: S603 - our own script
        [sys.executable, str(script), json.dumps(sections), str(out), "2"],
        env=env,
        capture_output=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 9, done.stderr.decode()[-2000:]
    writer = IdentityKey.generate(DeterministicRandom(b"w" * 32))
    # What the killed process left: round 2 planned and spent, round 1 only released.
    with Ledger.open(out / "ledger.db", writer, pinned_key=writer.public_key) as ledger:
        state = read_ledger_state(ledger)
    assert state.last_planned == 2
    assert state.last_released == 1
    assert {r for r, _ in state.spends[1]} == {1, 2}
    # Restart from the ledger and the checkpoint.
    result = run_federation(
        parse_config(sections),
        out_dir=out,
        rng=DeterministicRandom(bytes(32)),
        writer_key=writer,
        resume=True,
    )
    assert [r.round for r in result.rounds] == [3, 4]
    audit = audit_ledger(out / "ledger.db", writer.public_key, owner_keys=_owner_keys(out),
                         require_seal=True)  # fmt: skip
    assert audit.ok, audit.verification.reason
    released = [r.round_id for r in audit.rounds if r.released]
    assert released == [1, 3, 4]  # round 2 abandoned, never released, never re-run
    for check in audit.owners:
        assert [p.round_id for p in check.series] == [1, 2, 3, 4]  # round 2's spend counted
        events = [
            dp_sgd_event(e.fields())
            for e in audit.verification.entries
            if e.kind is EntryKind.SPEND and parse_uint(e.fields()["owner_id"]) == check.owner_id
        ]
        assert len(events) == 4
    # The owners' own accountants after the restart include the abandoned round.
    last_spend = [e for e in audit.verification.entries if e.kind is EntryKind.SPEND][-1].fields()
    assert result.rounds[-1].epsilon_max == pytest.approx(
        parse_decimal(last_spend["epsilon_after"])
    )


def test_resume_refuses_a_checkpoint_the_ledger_does_not_record(ratings_csv, tmp_path):
    sections = _sections(ratings_csv, federation={"rounds": 2})
    out = tmp_path / "run"
    writer = IdentityKey.generate(DeterministicRandom(b"v" * 32))

    def crash(round_id):
        if round_id == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_federation(parse_config(sections), out_dir=out, rng=DeterministicRandom(bytes(32)),
                       writer_key=writer, on_spent=crash)  # fmt: skip
    saved = torch.load(out / "checkpoint.pt", weights_only=True)
    saved["weights"] = saved["weights"] + 1.0
    torch.save(saved, out / "checkpoint.pt")
    with pytest.raises(IntegrityError):
        run_federation(parse_config(sections), out_dir=out, rng=DeterministicRandom(bytes(32)),
                       writer_key=writer, resume=True)  # fmt: skip


def test_the_audit_agrees_with_opacus_prv_as_the_independent_backend(finished_run):
    # PRV is a separate implementation (Opacus), not dp_accounting: it re-accounts the
    # same spends within the tolerance of the online RDP figures.
    out, _, _ = finished_run
    key = bytes.fromhex((out / "ledger.pub").read_text())
    pld = audit_ledger(out / "ledger.db", key, require_seal=True)
    prv = audit_ledger(out / "ledger.db", key, require_seal=True, backend=Backend.PRV)
    assert prv.ok
    assert prv.audit_backend == "prv"
    for a, b in zip(pld.owners, prv.owners, strict=True):
        assert abs(a.independent - b.independent) <= max(0.01 * a.independent, 0.02)
    with pytest.raises(ValueError, match="differ from the online"):
        audit_ledger(out / "ledger.db", key, backend=Backend.RDP)


def test_final_only_audit_checks_each_owners_last_spend(finished_run):
    out, _, _ = finished_run
    key = bytes.fromhex((out / "ledger.pub").read_text())
    audit = audit_ledger(out / "ledger.db", key, every_spend=False)
    assert audit.ok
    assert not audit.every_spend
    for check in audit.owners:
        assert all(math.isnan(p.independent) for p in check.series[:-1])
        assert check.independent == check.series[-1].independent <= check.recorded


def test_an_owner_refuses_a_head_that_goes_back_and_a_spend_at_or_before_its_head(
    ratings_csv, tmp_path
):
    fed = Federation(_config(ratings_csv, federation={"rounds": 1}))
    writer = IdentityKey.generate()
    ledger = Ledger.create(tmp_path / "l.db", writer, federation=fed.genesis_body())
    recorder = RoundRecorder(ledger)
    fed.bind_ledger(recorder)
    owner = fed.owners[1]
    plan = fed.coordinator.plan(1, unit=fed.config.privacy.unit,
                                noise_multiplier=fed.noise_multiplier)  # fmt: skip
    accepted = owner.accept(plan)
    recorder.planned(plan, cohort=[1], cohort_rate=1.0, accepted=[1], event=accepted.event)
    entry = recorder.spend(1, event=accepted.event, delta=fed.config.privacy.delta,
                           epsilon_after=accepted.epsilon_after)  # fmt: skip
    # A head at or past the spend (as if the ledger had been cut and rewritten from
    # there): the owner will not countersign an entry its head already covers.
    owner.receive_head((entry.seq, entry.entry_hash))
    with pytest.raises(ProtocolError, match="does not record its spend"):
        owner.countersign_spend(entry, ledger_id=recorder.ledger_id)
    with pytest.raises(ProtocolError, match="went back"):
        owner.receive_head((entry.seq - 1, entry.prev_hash))
    assert owner.head == (entry.seq, entry.entry_hash)
    ledger.close()
