"""Fixed item vectors from the public catalogue ([model] item_features = "genres")."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from securefed.audit import audit_run_dir
from securefed.config import parse_config
from securefed.data import catalogue_features
from securefed.federation import Federation, run_federation
from securefed.models.recommendation import architecture_hash, build_model, shared_parameter_names
from securefed.privacy.noise import CsprngStream
from securefed.randomness import DeterministicRandom
from securefed.secagg.roster import IdentityKey

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

GENRES = ("Action", "Comedy", "Drama", "Horror", "Romance")


@pytest.fixture(scope="module")
def movielens_dir(tmp_path_factory, ratings_writer):
    """A MovieLens-format folder: 30 users over 60 movies, each movie with 1-2 genres."""
    folder = tmp_path_factory.mktemp("ml")
    rows = ratings_writer(folder / "raw.csv", seed=5, users=30, items=range(100, 160),
                          per_user=(8, 16), popularity=1.0)  # fmt: skip
    lines = rows.read_text().splitlines()[1:]
    (folder / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n" + "\n".join(lines) + "\n"
    )
    rows.unlink()
    movies = ["movieId,title,genres"]
    for movie in range(100, 160):
        genres = GENRES[movie % 5] + ("|" + GENRES[(movie // 5) % 5] if movie % 3 else "")
        movies.append(f"{movie},Movie {movie} ({1960 + movie % 40}),{genres}")
    (folder / "movies.csv").write_text("\n".join(movies) + "\n")
    return folder


def _config(folder, rounds=2, **model):
    return parse_config(
        {
            "federation": {"rounds": rounds, "federation_id": "features"},
            "data": {"path": str(folder), "format": "movielens", "partition": "silos", "silos": 3},
            "model": {"kind": "mf", "dim": 12, **model},
            "training": {"sampling_rate": 0.15, "learning_rate": 0.5, "negatives": 2},
            "privacy": {"target_epsilon": 8.0},
            "update": {"clip_norm": 5.0},
            "secagg": {"quantization": {"bits": 20, "clip": 5.0}, "min_clients": 2},
            "evaluation": {"sampled_negatives": 20},
        }
    )


def test_genre_features_are_fixed_public_and_bound_into_the_model_hash(movielens_dir):
    config = _config(movielens_dir, item_features=["genres", "decade"], feature_scale=2.0)
    fed = Federation(config, rng=DeterministicRandom(b"f" * 32))
    expected = catalogue_features(fed.split.train, ["genres", "decade"], scale=2.0, width=12)
    assert expected.shape == (fed.split.n_items, 12)
    assert np.all(expected[:, 9:] == 0)  # 5 genres + 4 decades, then zero padding
    # Only the biases are federated: the shared vector is n_items + 1 long.
    assert fed.coordinator.weights.size == fed.split.n_items + 1
    for owner in fed.owners.values():
        model = owner.model
        assert shared_parameter_names(model) == ("global_bias.weight", "item_bias.weight")
        assert model.item_features is not None
        np.testing.assert_array_equal(model.item_features.numpy(), expected)
        trained = [n for n, p in model.named_parameters() if p.requires_grad]
        assert trained == ["user_embedding.weight", "item_bias.weight", "global_bias.weight"]
    # The owners' policies allow exactly this model: the features are in its hash.
    learned = Federation(_config(movielens_dir), rng=DeterministicRandom(b"f" * 32))
    others = [
        Federation(_config(movielens_dir, **model), rng=DeterministicRandom(b"f" * 32))
        for model in (
            {"item_features": ["genres", "decade"], "feature_scale": 3.0},
            {"item_features": ["genres"], "feature_scale": 2.0},
        )
    ]
    hashes = {fed.model_hash, learned.model_hash, *(other.model_hash for other in others)}
    assert len(hashes) == 4
    features = torch.from_numpy(expected)
    assert fed.model_hash == architecture_hash(fed.spec, fed.split.n_items, features)
    for owner in fed.owners.values():
        assert owner.policy.allowed_model_hashes == frozenset({fed.model_hash})


def test_a_federation_with_genre_features_trains_within_budget_and_audits_clean(
    movielens_dir, tmp_path
):
    config = _config(movielens_dir, item_features=["genres", "decade"])
    before = Federation(config, rng=DeterministicRandom(b"g" * 32)).coordinator.weights.copy()
    result = run_federation(config, out_dir=tmp_path, rng=DeterministicRandom(b"g" * 32))
    assert len(result.rounds) == 2
    assert result.parameters == before.size
    assert all(r.epsilon_max <= 8.0 for r in result.rounds)
    assert 0.0 <= result.final_test["sampled_hr10"] <= 1.0
    audit = audit_run_dir(tmp_path)
    assert audit.ok, audit.findings


def test_a_resume_refuses_a_changed_catalogue_and_the_audit_flags_a_model_change(
    movielens_dir, tmp_path, crash
):
    from securefed.errors import ConfigError
    from securefed.ledger import EntryKind

    folder = tmp_path / "ml"
    folder.mkdir()
    for name in ("ratings.csv", "movies.csv"):
        (folder / name).write_text((movielens_dir / name).read_text())
    config = _config(folder, rounds=3, item_features=["genres", "decade"])
    writer = IdentityKey.generate(DeterministicRandom(b"w" * 32))
    crashed, crash_after_spends = crash
    run_dir = tmp_path / "run"
    with pytest.raises(crashed):
        run_federation(config, out_dir=run_dir, rng=DeterministicRandom(bytes(32)),
                       writer_key=writer, on_spent=crash_after_spends(2))  # fmt: skip
    # The same configuration, but one movie's public genres and year are edited.
    movies = (folder / "movies.csv").read_text().splitlines()
    movies[1] = "100,Movie 100 (1931),Western"
    (folder / "movies.csv").write_text("\n".join(movies) + "\n")
    size = (run_dir / "ledger.db").stat().st_size
    with pytest.raises(ConfigError, match="model differs"):
        run_federation(config, out_dir=run_dir, rng=DeterministicRandom(bytes(32)),
                       writer_key=writer, resume=True)  # fmt: skip
    assert (run_dir / "ledger.db").stat().st_size == size  # nothing appended

    # A ledger whose rounds carry two model hashes fails the audit, naming the round.
    from securefed import audit as audit_module
    from securefed.ledger import Ledger

    ledger = Ledger.open(run_dir / "ledger.db", writer)
    entries = [(entry, entry.fields()) for entry in ledger.entries()]
    ledger.close()
    genesis = entries[0][1]
    records = [(e, b) for e, b in entries if e.kind in audit_module._ROUND_KINDS]
    planned = [(e, b) for e, b in records if e.kind is EntryKind.ROUND_PLANNED]
    assert len(planned) >= 2
    entry, body = planned[-1]
    tampered = dict(body, plan=dict(body["plan"], model_hash="00" * 32))
    swapped = [(e, tampered if e.seq == entry.seq else b) for e, b in records]
    findings = audit_module._consistency(swapped, genesis["config"])
    assert any("model hash differs from the first round's" in f.reason for f in findings)
    assert not any(
        "model hash" in f.reason for f in audit_module._consistency(records, genesis["config"])
    )


def test_an_owner_refuses_to_run_a_model_its_policy_does_not_pin(movielens_dir):
    from securefed.client.owner import DataOwner
    from securefed.errors import PolicyViolation
    from securefed.models.recommendation import model_architecture_hash

    fed = Federation(
        _config(movielens_dir, item_features=["genres", "decade"]),
        rng=DeterministicRandom(b"o" * 32),
    )
    owner = fed.owners[min(fed.owners)]
    assert model_architecture_hash(owner.model) == fed.model_hash
    # The same owner handed other features (here: one item's vector changed).
    features = fed.item_features.clone()
    features[0, 0] += 1.0
    other = build_model(fed.spec, owner.model.n_users, fed.split.n_items,
                        torch.Generator().manual_seed(0), item_features=features)  # fmt: skip
    assert model_architecture_hash(other) != fed.model_hash
    key = IdentityKey.generate(DeterministicRandom(b"k" * 32))
    policy = dataclasses.replace(owner.policy, owner_id=99)
    with pytest.raises(PolicyViolation, match="not an architecture its policy allows"):
        DataOwner(
            signed_policy=policy.sign(key),
            owner_public_key=key.public_key,
            model=other,
            train=owner._train,
            validation_items=owner._validation,
            test_items=owner._test,
            stream=CsprngStream(DeterministicRandom(b"s" * 32)),
        )


def test_an_owner_refuses_a_plan_for_another_allowed_model(movielens_dir):
    from securefed.client.owner import DataOwner
    from securefed.errors import PolicyViolation
    from securefed.plan import RoundPlan
    from securefed.prior import prior_plan

    fed = Federation(
        _config(movielens_dir, item_features=["genres", "decade"]),
        rng=DeterministicRandom(b"p" * 32),
    )
    template = fed.owners[min(fed.owners)]
    other = bytes(32)  # a second architecture the policy also allows
    key = IdentityKey.generate(DeterministicRandom(b"k" * 32))
    policy = dataclasses.replace(
        template.policy,
        owner_id=99,
        allowed_model_hashes=frozenset({fed.model_hash, other}),
        prior_min_cohort=3,
        prior_min_noise_multiplier=1.0,
    )

    def owner():
        return DataOwner(
            signed_policy=policy.sign(key),
            owner_public_key=key.public_key,
            model=template.model,
            train=template._train,
            validation_items=template._validation,
            test_items=template._test,
            stream=CsprngStream(DeterministicRandom(b"s" * 32)),
        )

    plan = RoundPlan(
        round_id=1, unit=policy.unit, noise_multiplier=2.0, clip_norm=1.0, local_epochs=1,
        sampling_rate=0.1, learning_rate=0.1, negatives=2, model_hash=other,
        plan_hash=fed.plan_hash,
    )  # fmt: skip
    refusing = owner()
    with pytest.raises(PolicyViolation, match="another model"):
        refusing.accept(plan)
    assert refusing.accountant.events == ()  # nothing spent
    assert owner().accept(dataclasses.replace(plan, model_hash=fed.model_hash)).event is not None
    prior = prior_plan(unit=policy.unit, noise_multiplier=2.0, model_hash=other)
    with pytest.raises(PolicyViolation, match="another model than the one the owner holds"):
        owner().accept_prior(prior, divisor=1)


def test_with_the_listed_catalogue_the_model_does_not_depend_on_who_rated_what(
    movielens_dir, tmp_path
):
    # Two data sets that differ only in which movie one user's one rating names. With
    # the rated item set a movie rated once disappears from the items, and with it
    # its feature row and the model hash; with the listed catalogue neither moves.
    ratings = (movielens_dir / "ratings.csv").read_text().splitlines()
    rows = [line.split(",") for line in ratings[1:]]
    counts: dict[str, int] = {}
    for row in rows:
        counts[row[1]] = counts.get(row[1], 0) + 1
    once = min(counts, key=lambda movie: (counts[movie], movie))
    assert counts[once] == 1
    unrated = next(m for m in map(str, range(100, 160)) if m not in counts)
    swapped = [",".join([r[0], unrated, *r[2:]]) if r[1] == once else ",".join(r) for r in rows]
    hashes = {}
    for name, lines in (("a", ratings[1:]), ("b", swapped)):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "ratings.csv").write_text("\n".join([ratings[0], *lines]) + "\n")
        (folder / "movies.csv").write_text((movielens_dir / "movies.csv").read_text())
        for items in ("rated", "listed"):
            base = _config(folder, item_features=["genres", "decade"]).model_dump(mode="json")
            base["data"]["items"] = items
            config = parse_config(base)
            fed = Federation(config, rng=DeterministicRandom(b"h" * 32))
            hashes[name, items] = (fed.model_hash, fed.split.n_items)
    assert hashes["a", "listed"] == hashes["b", "listed"]
    assert hashes["a", "listed"][1] == 60
    assert hashes["a", "rated"][0] != hashes["b", "rated"][0]
