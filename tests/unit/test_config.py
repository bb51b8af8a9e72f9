"""TOML configuration: validated, unknown keys refused, unsafe combinations refused."""

from __future__ import annotations

import pytest

from securefed.config import SecurefedConfig, load_config, parse_config
from securefed.errors import ConfigError
from securefed.secagg.graph import GraphKind


def _write(tmp_path, text: str):
    path = tmp_path / "securefed.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_load_valid_file(tmp_path):
    path = _write(
        tmp_path,
        """
[federation]
federation_id = "hospitals"

[secagg]
max_clients = 500
graph = "sparse"

[secagg.quantization]
bits = 12
clip = 0.5
max_weight = 4

[secagg.threat]
corrupt_fraction = 0.1
""",
    )
    config = load_config(path)
    assert config.federation.federation_id == "hospitals"
    params = config.secagg.to_params(100)
    assert params.graph is GraphKind.SPARSE
    assert params.quantization.bits == 12
    assert params.quantization.max_weight == 4
    assert params.threat.corrupt_fraction == 0.1
    assert params.ring_bits == 12 + 2 + 9


def test_defaults():
    params = SecurefedConfig().secagg.to_params(10)
    assert params.graph is None
    assert params.vector_length == 10


def test_unknown_key_names_the_file(tmp_path):
    path = _write(tmp_path, "[secagg]\nmax_clientz = 10\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert "max_clientz" in str(info.value)


def test_out_of_range_value(tmp_path):
    path = _write(tmp_path, "[secagg.threat]\ncorrupt_fraction = 0.6\n")
    with pytest.raises(ConfigError, match="corrupt_fraction"):
        load_config(path)


def test_the_online_accountant_is_one_of_the_backends(tmp_path):
    from securefed.privacy.accounting import Backend

    assert load_config(_write(tmp_path, "")).privacy.accountant is Backend.RDP
    path = _write(tmp_path, '[privacy]\naccountant = "pld"\n')
    assert load_config(path).privacy.accountant is Backend.PLD
    with pytest.raises(ConfigError, match="accountant"):
        load_config(_write(tmp_path, '[privacy]\naccountant = "gdp"\n'))
    # The independent audit of a PLD run (PRV) cannot re-account a tiny delta.
    with pytest.raises(ConfigError, match="delta must be at least"):
        load_config(_write(tmp_path, '[privacy]\naccountant = "pld"\ndelta = 1e-14\n'))
    tiny_rdp = load_config(_write(tmp_path, "[privacy]\ndelta = 1e-14\n"))
    assert tiny_rdp.privacy.delta == 1e-14


def test_missing_file(tmp_path):
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_invalid_toml(tmp_path):
    path = _write(tmp_path, "[secagg\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(path)


def test_min_clients_above_max():
    with pytest.raises(ConfigError, match="min_clients"):
        parse_config({"secagg": {"min_clients": 10, "max_clients": 5}})


def test_ring_overflow_is_refused():
    config = parse_config(
        {
            "secagg": {
                "max_clients": 2**20,
                "quantization": {"bits": 48, "max_weight": 2**20},
            }
        }
    )
    with pytest.raises(ConfigError, match="wrap"):
        config.secagg.to_params(10)


def test_config_error_is_a_value_error():
    with pytest.raises(ValueError):  # noqa: PT011 - the subclass relation is the point
        parse_config({"nonsense": 1})


def test_fixed_item_features(tmp_path):
    from securefed.config import ItemFeature

    default = load_config(_write(tmp_path, ""))
    assert default.model.item_features == ()
    assert default.model.feature_scale == 3.0
    path = _write(tmp_path, '[model]\nitem_features = ["genres", "decade"]\nfeature_scale = 2.5\n')
    model = load_config(path).model
    assert model.item_features == (ItemFeature.GENRES, ItemFeature.DECADE)
    assert model.feature_scale == 2.5
    with pytest.raises(ConfigError, match="item_features"):
        load_config(_write(tmp_path, '[model]\nitem_features = ["titles"]\n'))
    with pytest.raises(ConfigError, match="named twice"):
        load_config(_write(tmp_path, '[model]\nitem_features = ["genres", "genres"]\n'))
    for scale in ("0", "-1", "nan", "inf"):
        with pytest.raises(ConfigError, match="feature_scale"):
            load_config(_write(tmp_path, f"[model]\nfeature_scale = {scale}\n"))
    with pytest.raises(ConfigError, match=r"need model\.kind = mf"):
        load_config(_write(tmp_path, '[model]\nkind = "neumf"\nitem_features = ["genres"]\n'))


def test_listed_items_need_a_movielens_catalogue(tmp_path):
    from securefed.config import ItemSet

    assert load_config(_write(tmp_path, "")).data.items is ItemSet.RATED
    listed = load_config(_write(tmp_path, '[data]\nitems = "listed"\n'))
    assert listed.data.items is ItemSet.LISTED
    with pytest.raises(ConfigError, match="needs a MovieLens catalogue"):
        load_config(_write(tmp_path, '[data]\nformat = "csv"\nitems = "listed"\n'))


def test_configuration_and_secure_aggregation_import_without_torch(helpers):
    # securefed.privacy loads its noise module (and torch) only when a noise name is
    # used: a coordinator reading a configuration or running secure aggregation does
    # not pay torch's import time and memory.
    code = (
        "import sys\n"
        "import securefed.config, securefed.secagg.server, securefed.secagg.client\n"
        "print('torch' in sys.modules)\n"
        "import securefed.privacy as privacy\n"
        "assert privacy.SecureGaussianNoise.__module__ == 'securefed.privacy.noise'\n"
        "print('torch' in sys.modules)\n"
    )
    assert helpers.fresh_interpreter_stdout(code).split() == ["False", "True"]
    import securefed.privacy as privacy

    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        privacy.nothing  # noqa: B018
