"""The HTML privacy report (securefed.report) and the standalone audit script.

Audit results are built by hand around real verification reports of tiny real
ledgers; the run directory is fabricated. The script tests run
``audits/privacy_budget.py`` end to end, so they also exercise
``securefed.audit.audit_ledger``.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import re
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from securefed.audit import AuditResult, EpsilonCheck, RoundRecord, SpendPoint
from securefed.errors import DataError
from securefed.ledger import EntryKind, Ledger, VerificationReport, bodies, verify_ledger
from securefed.privacy.accountant import Budget, OwnerAccountant
from securefed.privacy.events import DpSgdEvent, PrivacyUnit
from securefed.randomness import DeterministicRandom
from securefed.report import render_report, write_report
from securefed.secagg.roster import IdentityKey

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "audits" / "privacy_budget.py"
NOW = datetime(2025, 1, 2, 3, 4, tzinfo=UTC)
HOSTILE = "<script>alert('fed')</script>"
DELTA = 1e-5
EVENT = DpSgdEvent(sampling_rate=0.05, noise_multiplier=1.1, steps=20, unit=PrivacyUnit.RECORD)
OWNERS = (1, 2, 3)
ROUNDS = (1, 2, 3)


def key(label: str) -> IdentityKey:
    return IdentityKey.generate(DeterministicRandom(hashlib.sha256(label.encode()).digest()))


WRITER = key("report-writer")


def make_ledger(path: Path, *, federation_id: str = "fed-1", seal: bool = True) -> None:
    """Three owners, three rounds, spends recorded with the online (RDP) accountant."""
    config = {
        "federation": {"federation_id": federation_id, "rounds": str(len(ROUNDS))},
        "evaluation": {"sampled_negatives": "99"},
        "privacy": {"target_epsilon": "8.0", "delta": repr(DELTA)},
    }
    fed = bodies.federation_created_body(
        federation_id=federation_id,
        securefed_version="0.1.0",
        roster_hash=bytes(32),
        protocol_versions={"ledger": "1", "accounting_online": "rdp"},
        config=config,
    )
    # Every owner spends the same each round: one online accountant serves them all.
    accountant = OwnerAccountant(unit=PrivacyUnit.RECORD, budget=Budget(epsilon=8.0, delta=DELTA))
    owner_keys = {o: key(f"report-owner-{o}") for o in OWNERS}
    with Ledger.create(path, WRITER, federation=fed) as led:
        for r in ROUNDS:
            led.append(
                EntryKind.ROUND_PLANNED,
                bodies.round_planned_body(
                    round_id=r,
                    cohort=OWNERS,
                    sampling_rate=1.0,
                    protection=bodies.ProtectionMode.SECAGG,
                    plan_hash=bytes(32),
                    accepted=OWNERS,
                ),
            )
            led.append(
                EntryKind.MECHANISM,
                bodies.mechanism_body(round_id=r, event=EVENT, clip_norm=1.0),
            )
            epsilon = accountant.spend(EVENT)
            for o in OWNERS:
                spent = led.append(
                    EntryKind.SPEND,
                    bodies.spend_body(
                        owner_id=o,
                        round_id=r,
                        event=EVENT,
                        delta=DELTA,
                        epsilon_after=epsilon,
                    ),
                )
                led.countersign(spent.seq, owner_keys[o])
            if r == 2:
                led.append(
                    EntryKind.DROPOUTS,
                    bodies.dropouts_body(round_id=r, stage="masked_input", dropped=[3]),
                )
            led.append(
                EntryKind.AGGREGATE_RELEASED,
                bodies.aggregate_released_body(
                    round_id=r, aggregate_hash=bytes(32), model_hash=bytes(32)
                ),
            )
        if seal:
            led.seal(reason="done")


def flip_epsilon(path: Path) -> None:
    """Change one digit of the first recorded epsilon_after: a forged spend."""
    data = bytearray(path.read_bytes())
    marker = b'"epsilon_after":"'
    at = data.index(marker) + len(marker)
    data[at] = ord("9") if data[at] != ord("9") else ord("8")
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def ledgers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("ledgers")
    good = base / "good.db"
    make_ledger(good)
    bad = base / "bad.db"
    bad.write_bytes(good.read_bytes())
    flip_epsilon(bad)
    hostile = base / "hostile.db"
    make_ledger(hostile, federation_id=HOSTILE, seal=False)
    return {"good": good, "bad": bad, "hostile": hostile}


@pytest.fixture(scope="module")
def good_report(ledgers: dict[str, Path]) -> VerificationReport:
    report = verify_ledger(ledgers["good"], WRITER.public_key)
    assert report.ok
    return report


def check(
    owner_id: int | None,
    recorded: float,
    independent: float,
    *,
    budget: float | None = 8.0,
    rounds: tuple[int, ...] = ROUNDS,
) -> EpsilonCheck:
    n = len(rounds)
    series = tuple(
        SpendPoint(
            round_id=r, recorded=recorded * (i + 1) / n, independent=independent * (i + 1) / n
        )
        for i, r in enumerate(rounds)
    )
    return EpsilonCheck(
        scope="owner" if owner_id is not None else "federation",
        owner_id=owner_id,
        unit=PrivacyUnit.RECORD,
        delta=DELTA,
        recorded=recorded,
        independent=independent,
        tolerance=max(0.01 * independent, 0.02),
        budget=budget,
        series=series,
    )


def rounds_of(ids: tuple[int, ...] = ROUNDS) -> tuple[RoundRecord, ...]:
    mechanism = {
        "round_id": "0",
        "mechanism": "dp_sgd",
        "unit": "record",
        "sampling_rate": "0.05",
        "noise_multiplier": "1.1",
        "steps": "20",
        "clip_norm": "1.0",
    }
    return tuple(
        RoundRecord(
            round_id=r,
            cohort=3,
            accepted=3,
            protection="secagg",
            dropouts={"masked_input": 1} if r == 2 else {},
            released=True,
            mechanism={**mechanism, "round_id": str(r)},
        )
        for r in ids
    )


def audit_of(
    report: VerificationReport,
    *,
    owners: tuple[EpsilonCheck, ...] | None = None,
    federation: EpsilonCheck | None = None,
    rounds: tuple[RoundRecord, ...] | None = None,
    stops: tuple[dict[str, str], ...] = (),
) -> AuditResult:
    return AuditResult(
        verification=report,
        online_backend="rdp",
        audit_backend="pld",
        owners=owners if owners is not None else tuple(check(o, 2.0, 1.9) for o in OWNERS),
        federation=federation,
        rounds=rounds if rounds is not None else rounds_of(),
        budget_stops=stops,
        config={"federation": {"federation_id": "fed-1", "rounds": "3"}},
        distinct_histories=1,
    )


def metrics_line(r: int, *, evaluated: bool = True) -> str:
    row = {
        "round": r,
        "cohort": 3,
        "survivors": 3 - (r == 2),
        "dropouts": {"masked_input": int(r == 2), "unmask": 0},
        "refused": {"budget": 0, "policy": int(r == 3)},
        "metrics": {
            "sampled_hr10": 0.3 + r / 100,
            "sampled_ndcg10": 0.2,
            "full_hr10": 0.03,
            "full_ndcg10": 0.01,
            "full_auc": 0.8,
            "sampled_auc": 0.8,
        }
        if evaluated
        else None,
        "epsilon_max": 0.5 * r,
        "epsilon_median": "inf" if r == 99 else 0.4 * r,
        "bytes_up_per_client": 1.0,
        "wall_seconds": 0.1,
    }
    return json.dumps(row, sort_keys=True)


def fabricate_run(run: Path) -> Path:
    run.mkdir()
    (run / "config.toml").write_text(
        '[federation]\nfederation_id = "fed-1"\nrounds = 3\n[evaluation]\nsampled_negatives = 99\n'
    )
    (run / "metrics.jsonl").write_text(
        "".join(metrics_line(r, evaluated=r != 1) + "\n" for r in ROUNDS)
    )
    (run / "summary.json").write_text(
        json.dumps(
            {
                "final_test": {"sampled_hr10": 0.5432, "full_hr10": 0.0312, "full_auc": 0.8},
                "noise_multiplier": 1.1,
                "planned_epsilon_max": 2.0,
                "owners": 3,
                "parameters": 1234,
            }
        )
    )
    return run


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run directory a test may change."""
    return fabricate_run(tmp_path / "run")


@pytest.fixture(scope="module")
def standard(
    tmp_path_factory: pytest.TempPathFactory, good_report: VerificationReport
) -> tuple[Path, AuditResult, str]:
    """A run directory no test changes, its audit and its rendered page (rendered once)."""
    run = fabricate_run(tmp_path_factory.mktemp("standard") / "run")
    audit = audit_of(good_report)
    return run, audit, render_report(run, audit, now=NOW)


def section(page: str, number: int) -> str:
    start = page.index(f"<h2>{number}. ")
    end = page.find("<h2>", start + 1)
    return page[start : end if end != -1 else len(page)]


# -- the report --------------------------------------------------------------------------------


def test_verified_report_has_every_section_in_order(
    standard: tuple[Path, AuditResult, str], good_report: VerificationReport
) -> None:
    _, _, page = standard
    assert re.search(r'class="verdict ok">VERIFIED<', page)
    assert "FAILED" not in page
    positions = [page.index(f"<h2>{n}. ") for n in range(2, 8)]
    assert positions == sorted(positions)
    header = page[: positions[0]]
    assert "VERIFIED" in header
    assert "fed-1" in header
    assert good_report.ledger_id is not None
    assert good_report.ledger_id.hex() in header
    assert "2025-01-02 03:04 UTC" in header
    assert good_report.countersignatures == len(OWNERS) * len(ROUNDS)
    assert f"<dt>countersignatures checked</dt><dd>{len(OWNERS) * len(ROUNDS)}</dd>" in header
    assert "online: rdp; audit: pld" in header
    assert "<dt>sealed</dt><dd>yes</dd>" in header
    privacy = section(page, 2)
    assert privacy.count('<span class="ok">OK</span>') == len(OWNERS)
    # No client-level noise: the federation sentence instead of a federation row.
    assert "No client-level noise" in privacy
    assert "= <b>1.9</b>" in privacy
    mechanism = section(page, 4)
    assert "rounds 1\N{EN DASH}3" not in mechanism  # round 2 had a dropout: not identical
    assert all(f"<td>round {r}</td>" in mechanism for r in ROUNDS)
    assert "No BUDGET_EXHAUSTED" in section(page, 5)
    assert "protocols/ledger.md \N{SECTION SIGN}8.3" in section(page, 6)
    final = section(page, 7)
    assert "sampled: 99 negatives" in final
    assert "full ranking" in final
    assert "0.5432" in final


def test_html_is_self_contained_with_embedded_plots(
    standard: tuple[Path, AuditResult, str],
) -> None:
    _, _, page = standard
    images = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)">', page)
    assert len(images) == 3  # epsilon; utility; dropouts and refusals
    assert all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    assert "http://" not in page
    assert "https://" not in page
    assert "<script" not in page.lower()
    sources = re.findall(r"\b(?:src|href)=\"([^\"]*)\"", page)
    assert sources == [f"data:image/png;base64,{i}" for i in images]
    assert "<link" not in page
    assert "@import" not in page
    assert "url(" not in page


def test_output_is_deterministic_except_for_the_date(
    standard: tuple[Path, AuditResult, str],
) -> None:
    run, audit, page = standard
    later = render_report(run, audit, now=datetime(2026, 5, 6, tzinfo=UTC))
    assert later != page
    assert later.replace("2026-05-06 00:00", "2025-01-02 03:04") == page


def test_write_report_writes_only_report_html(
    tmp_path: Path, standard: tuple[Path, AuditResult, str]
) -> None:
    run, audit, page = standard
    before = {p: p.read_bytes() for p in run.iterdir()}
    written = write_report(run, audit, now=NOW)
    try:
        assert written == run / "report.html"
        assert set(run.iterdir()) - set(before) == {written}
        assert all(p.read_bytes() == data for p, data in before.items())
        assert written.read_text(encoding="utf-8") == page
    finally:
        written.unlink()
    with pytest.raises(ValueError, match="run_dir or out"):
        write_report(None, audit)


def test_identical_consecutive_rounds_are_merged(good_report: VerificationReport) -> None:
    records = tuple(replace(r, dropouts={}) for r in rounds_of((1, 2, 3, 5)))
    page = render_report(None, audit_of(good_report, rounds=records), now=NOW)
    mechanism = section(page, 4)
    assert "<td>rounds 1\N{EN DASH}3</td>" in mechanism
    assert "<td>round 5</td>" in mechanism  # not contiguous with round 3: its own row
    assert "No run directory was given" in page


def test_failed_verification_names_the_first_bad_entry(
    standard: tuple[Path, AuditResult, str], ledgers: dict[str, Path]
) -> None:
    run, _, _ = standard
    report = verify_ledger(ledgers["bad"], WRITER.public_key)
    assert not report.ok
    assert report.first_bad is not None
    page = render_report(run, audit_of(report), now=NOW)
    assert re.search(r'class="verdict bad">FAILED<', page)
    assert "VERIFIED" not in page
    assert f"failed at entry <b>{report.first_bad}</b>" in page
    assert report.reason.split(":")[0] in page
    assert f"only the {report.first_bad} verified entries" in page


def test_under_reported_and_over_budget_owners_are_flagged(
    standard: tuple[Path, AuditResult, str], good_report: VerificationReport
) -> None:
    run, _, _ = standard
    owners = (check(1, 2.0, 1.9), check(2, 1.0, 2.5), check(3, 9.5, 9.0))
    stop = {
        "round_id": "3",
        "scope": "owner",
        "owner_id": "3",
        "epsilon_spent": "9.5",
        "epsilon_budget": "8.0",
        "delta": "1e-05",
    }
    audit = audit_of(good_report, owners=owners, stops=(stop,))
    assert not audit.ok
    page = render_report(run, audit, now=NOW)
    assert re.search(r'class="verdict bad">FAILED<', page)
    assert "under-reported for 1: owner 2" in page
    assert "above the budget for 1: owner 3" in page
    rows = section(page, 2).split("<tr>")
    owner_rows = {int(re.sub(r"<.*?>", "", row.split("</td>")[0])): row for row in rows[2:]}
    assert "UNDER-REPORTED" in owner_rows[2]
    assert "OVER BUDGET" in owner_rows[3]
    assert ">OK<" in owner_rows[1]
    stops = section(page, 5)
    assert "<td>3</td><td>owner</td><td>3</td><td>9.5</td><td>8.0</td><td>1e-05</td>" in stops


def test_federation_row_when_client_level_noise(good_report: VerificationReport) -> None:
    fed = check(None, 3.0, 2.9, budget=4.0)
    page = render_report(None, audit_of(good_report, federation=fed), now=NOW)
    privacy = section(page, 2)
    assert "Federation (client-level)" in privacy
    assert "<tr><td>federation</td>" in privacy
    assert "No client-level noise" not in privacy


def test_many_owners_are_summarised_and_collapsed(good_report: VerificationReport) -> None:
    owners = tuple(check(o, 1.0 + o / 100, 1.0 + o / 100) for o in range(1, 41))
    owners = (*owners[:-1], check(40, 0.5, 1.0))  # low but under-reported: listed anyway
    page = render_report(None, audit_of(good_report, owners=owners), now=NOW)
    privacy = section(page, 2)
    assert "40 owners." in privacy
    assert "<details><summary>All 40 owners</summary>" in privacy
    visible = privacy.split("<details>")[0]
    assert visible.count("<tr>") == 1 + 10 + 1  # header, top 10, the flagged owner
    assert "<tr><td>39</td>" in visible  # the highest
    assert "<tr><td>40</td>" in visible  # flagged
    assert "<tr><td>1</td>" not in visible
    assert privacy.split("<details>")[1].count("<tr>") == 1 + 40


def test_large_federation_report_stays_small(good_report: VerificationReport) -> None:
    rounds = tuple(range(1, 51))
    owners = tuple(
        check(o, 4.0 + (o % 17) / 10, 3.9 + (o % 17) / 10, rounds=rounds[o % 7 :])
        for o in range(1, 611)
    )
    audit = audit_of(good_report, owners=owners, rounds=rounds_of(rounds))
    page = render_report(None, audit, now=NOW)
    assert len(page.encode()) < 2_000_000
    assert "610 owners." in page


def test_user_strings_are_escaped(
    standard: tuple[Path, AuditResult, str], ledgers: dict[str, Path]
) -> None:
    run, _, _ = standard
    report = verify_ledger(ledgers["hostile"], WRITER.public_key)
    assert report.ok
    page = render_report(run, audit_of(report), now=NOW)
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(&#x27;fed&#x27;)&lt;/script&gt;" in page
    # The run's config.toml names "fed-1", the ledger another federation: flagged.
    assert "config.toml names another federation (fed-1)" in page
    # Unsealed and no later head: verification's warning is shown.
    assert "not sealed and no later head" in page
    assert '<dt>sealed</dt><dd><span class="warn">no</span></dd>' in page


def test_hostile_names_in_run_files(run_dir: Path, good_report: VerificationReport) -> None:
    # Names reach the tables (escaped) and the plots (literal text, never matplotlib math).
    name = "x$\\undefined$<b>y</b>"
    row = json.loads(metrics_line(1))
    row["refused"] = {name: 1}
    row["metrics"] = {name: 0.5}
    (run_dir / "metrics.jsonl").write_text(json.dumps(row) + "\n")
    (run_dir / "summary.json").write_text(json.dumps({"final_test": {name: 0.5}}))
    page = render_report(run_dir, audit_of(good_report), now=NOW)
    assert "<b>y</b>" not in page
    assert "&lt;b&gt;y&lt;/b&gt;" in section(page, 7)
    assert page.count("data:image/png;base64,") == 3


def test_the_config_fallback_is_escaped_too(tmp_path: Path, ledgers: dict[str, Path]) -> None:
    # Verification fails at entry 0 (another pinned key): the id comes from config.toml.
    report = verify_ledger(ledgers["good"], key("someone else").public_key)
    assert report.first_bad == 0
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text(f"[federation]\nfederation_id = {json.dumps(HOSTILE)}\n")
    page = render_report(run, audit_of(report, owners=(), rounds=()), now=NOW)
    assert "<script" not in page.lower()
    assert "&lt;script&gt;" in page
    assert "config.toml, not verified" in page
    assert "The ledger records no data owner" in page


def test_malformed_metrics_line_raises_naming_the_line(
    run_dir: Path, good_report: VerificationReport
) -> None:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    bad = lines[1].replace('"cohort": 3', '"cohort": "three"')
    (run_dir / "metrics.jsonl").write_text("\n".join([lines[0], bad, lines[2]]) + "\n")
    with pytest.raises(DataError, match=r"metrics\.jsonl line 2: cohort"):
        render_report(run_dir, audit_of(good_report), now=NOW)
    (run_dir / "metrics.jsonl").write_text(lines[0] + "\n{not json\n" + lines[2] + "\n")
    with pytest.raises(DataError, match=r"metrics\.jsonl line 2"):
        render_report(run_dir, audit_of(good_report), now=NOW)


@pytest.mark.parametrize(
    ("name", "content"),
    [("summary.json", "[1, 2]"), ("summary.json", "{"), ("config.toml", "rounds = = 3")],
)
def test_malformed_run_files_raise_naming_the_file(
    run_dir: Path, good_report: VerificationReport, name: str, content: str
) -> None:
    (run_dir / name).write_text(content)
    with pytest.raises(DataError, match=re.escape(name)):
        render_report(run_dir, audit_of(good_report), now=NOW)


def test_missing_run_directory_raises(tmp_path: Path, good_report: VerificationReport) -> None:
    with pytest.raises(DataError, match="no run directory"):
        render_report(tmp_path / "absent", audit_of(good_report), now=NOW)


def test_missing_metrics_still_renders_the_audit(
    run_dir: Path, good_report: VerificationReport
) -> None:
    (run_dir / "metrics.jsonl").unlink()
    (run_dir / "summary.json").unlink()
    page = render_report(run_dir, audit_of(good_report), now=NOW)
    assert "VERIFIED" in page
    assert "No metrics.jsonl in the run directory" in page
    assert "Not available: no summary.json" in page
    assert page.count("data:image/png;base64,") == 2  # epsilon, dropouts (from the ledger)
    assert section(page, 2).count(">OK<") == len(OWNERS)


def test_crashed_run_with_a_cut_last_line(run_dir: Path, good_report: VerificationReport) -> None:
    (run_dir / "summary.json").unlink()
    whole = metrics_line(1) + "\n" + metrics_line(2) + "\n"
    (run_dir / "metrics.jsonl").write_text(whole + metrics_line(3)[:40])
    page = render_report(run_dir, audit_of(good_report), now=NOW)
    assert "metrics.jsonl: 2 rounds (rounds 1\N{EN DASH}2), 2 with held-out metrics." in page
    assert "planned 3 rounds and recorded 2" in page
    assert "cut off mid-write" in page
    assert page.count("data:image/png;base64,") == 3


# -- the standalone audit script ---------------------------------------------------------------


def run_script(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own script, fixed arguments
        [sys.executable, str(SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        check=False,
    )


def test_audit_script_passes_a_good_ledger(
    tmp_path: Path, ledgers: dict[str, Path], run_dir: Path
) -> None:
    pub = tmp_path / "ledger.pub"
    pub.write_text(WRITER.public_key.hex() + "\n")
    out = tmp_path / "audit.html"
    done = run_script(
        ledgers["good"], "--pubkey", pub, "--run-dir", run_dir, "--out", out, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert "verdict: VERIFIED" in done.stdout
    page = out.read_text(encoding="utf-8")
    assert re.search(r'class="verdict ok">VERIFIED<', page)
    assert page.count("data:image/png;base64,") == 3
    assert not (run_dir / "report.html").exists()


def test_audit_script_fails_a_flipped_byte(tmp_path: Path, ledgers: dict[str, Path]) -> None:
    out = tmp_path / "audit.html"
    done = run_script(
        ledgers["bad"], "--pubkey", WRITER.public_key.hex(), "--out", out, cwd=tmp_path
    )
    assert done.returncode == 1, done.stderr
    assert "verdict: FAILED" in done.stdout
    assert re.search(r'class="verdict bad">FAILED<', out.read_text(encoding="utf-8"))


def test_audit_script_reads_keys_as_hex_or_file(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("privacy_budget", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    hex_key = WRITER.public_key.hex()
    (tmp_path / "k.pub").write_text(hex_key + "\n")
    assert script.read_pubkey(hex_key) == WRITER.public_key
    assert script.read_pubkey(str(tmp_path / "k.pub")) == WRITER.public_key
    with pytest.raises(ValueError, match="--pubkey"):
        script.read_pubkey("abcd")
    with pytest.raises(ValueError, match="--pubkey"):
        script.read_pubkey("not hex")
