"""A setting is checked once, by the object that uses it, and the config names its key; one value picks the method.

``ota`` is :class:`OtaSettings`, ``failures`` is :class:`FailureSettings` and the ``strategy.server_*`` keys build
:class:`ServerOptimizerSettings`: the configuration's error for a bad value is exactly that object's own
error, under the key. ``algorithm`` picks the FL algorithm and ``aggregation`` the uplink; the old switches
(``sparsity.enabled``, ``ota.enabled``) and names (``method=ota_imp``, ``sparsity``) fail.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf
from test_methods_config import _compose

from amp_fl.config import RunConfig, load_config
from amp_fl.errors import ArgumentError, ConfigError
from amp_fl.protocol.setup import FailureSettings
from amp_fl.strategy.server_optimizer import ServerOptimizerSettings, server_learning_rate
from amp_fl.wireless.over_the_air import OtaSettings

CONF = str(Path(__file__).resolve().parents[1] / "conf")


def _own_problem(make: Any, **kwargs: Any) -> tuple[str, str]:
    """The settings object's own error for ``kwargs``: (its parameter, its problem)."""
    with pytest.raises(ArgumentError) as info:
        make(**kwargs)
    return info.value.name, info.value.problem


@pytest.mark.parametrize(
    ("section", "make", "field", "value"),
    [
        ("ota", OtaSettings, "snr_db", math.inf),
        ("ota", OtaSettings, "power_budget", 0.0),
        ("ota", OtaSettings, "truncation_threshold", 0.0),
        ("ota", OtaSettings, "estimation_error_var", -0.1),
        ("failures", FailureSettings, "raise_prob", 1.5),
        ("failures", FailureSettings, "late_prob", -0.1),
        ("failures", FailureSettings, "corrupt_prob", math.nan),
        ("failures", FailureSettings, "late_delay_s", -1.0),
    ],
)
def test_a_bad_section_value_is_the_settings_objects_one_error_under_its_key(section, make, field, value):
    name, problem = _own_problem(make, **{field: value})
    assert name == field
    with pytest.raises(ConfigError) as info:
        load_config({section: {field: value}})
    assert info.value.key == f"{section}.{field}"
    assert str(info.value) == f"invalid config {section}.{field}: {problem}"  # one message, the object's own


def test_the_failure_probabilities_sum_is_checked_once_too():
    values = {"raise_prob": 0.5, "late_prob": 0.3, "corrupt_prob": 0.3}
    _, problem = _own_problem(FailureSettings, **values)
    with pytest.raises(ConfigError) as info:
        load_config({"failures": values})
    assert str(info.value) == f"invalid config failures.raise_prob: {problem}"


@pytest.mark.parametrize(
    ("strategy", "key", "field", "settings"),
    [
        ({"server_lr": 0.0}, "strategy.server_lr", "lr", {"name": "sgd", "lr": 0.0}),
        ({"server_momentum": 1.0}, "strategy.server_momentum", "momentum", {"momentum": 1.0}),
        ({"server_beta2": -0.1}, "strategy.server_beta2", "betas", {"betas": (0.9, -0.1)}),
        ({"server_eps": 0.0}, "strategy.server_eps", "eps", {"eps": 0.0}),
    ],
)
def test_a_bad_server_step_value_is_the_server_settings_one_error_under_its_key(strategy, key, field, settings):
    name, problem = _own_problem(ServerOptimizerSettings, **settings)
    assert name == field
    with pytest.raises(ConfigError) as info:
        load_config({"strategy": strategy})
    assert str(info.value) == f"invalid config {key}: {problem}"


def test_the_server_learning_rate_rule_has_one_home():
    assert server_learning_rate("sgd", None, 0.05) == 0.05  # the paper's step: the clients' eta
    assert server_learning_rate("momentum", None, 0.05) == 0.05
    assert server_learning_rate("adam", 0.001, 0.05) == 0.001
    name, problem = _own_problem(server_learning_rate, name="adam", lr=None, client_learning_rate=0.05)
    assert name == "lr"
    with pytest.raises(ConfigError) as info:
        load_config({"strategy": {"server_optimizer": "adam"}})
    assert str(info.value) == f"invalid config strategy.server_lr: {problem}"
    # The config's settings follow the rule: null server_lr -> train.learning_rate.
    cfg = load_config({"train": {"learning_rate": 0.2}})
    assert cfg.strategy.server_settings(cfg.train.learning_rate).lr == 0.2


def test_a_bad_learning_rate_is_reported_under_train_learning_rate_only():
    # eta is also the server step's default learning rate; train's check comes first, so it is named once.
    for value in (0.0, -0.1, math.inf):
        with pytest.raises(ConfigError) as info:
            load_config({"train": {"learning_rate": value}})
        assert info.value.key == "train.learning_rate"


def test_the_sections_are_the_settings_objects():
    cfg = load_config({"ota": {"snr_db": 10.0}, "failures": {"raise_prob": 0.1}})
    assert cfg.ota == OtaSettings(snr_db=10.0)
    assert cfg.failures == FailureSettings(raise_prob=0.1)


def _fields(cls: type, prefix: str = "") -> list[str]:
    """Every key of the config tree below ``cls``, dotted."""
    names = []
    for f in dataclasses.fields(cls):
        names.append(prefix + f.name)
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            names += _fields(type(default), f"{prefix}{f.name}.")
    return names


def test_no_section_has_an_on_off_switch_the_method_is_one_value():
    assert not [name for name in _fields(RunConfig) if name.endswith("enabled")]
    assert load_config({}).algorithm == "amp_fl" and load_config({}).aggregation == "digital"
    cfg = _compose(["method=sparse_fedavg"])
    assert (cfg.algorithm, cfg.aggregation) == ("sparse_fedavg", "digital")
    cfg = _compose(["method=sparse_fedavg", "aggregation=over_the_air"])  # the uplink is its own choice
    assert (cfg.algorithm, cfg.aggregation) == ("sparse_fedavg", "over_the_air")
    cfg = _compose(["experiment=ota_imp_quick", "method=amp_fl"])  # a method preset sets both values
    assert (cfg.algorithm, cfg.aggregation) == ("amp_fl", "digital")
    with pytest.raises(ConfigError, match="^invalid config algorithm: choose from amp_fl, sparse_fedavg"):
        load_config({"algorithm": "ota_imp"})
    with pytest.raises(ConfigError, match="^invalid config aggregation: choose from digital, over_the_air"):
        load_config({"aggregation": "analog"})


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        (["method=ota_imp"], MissingConfigException),  # the preset is method=sparse_fedavg now
        (["sparsity.target=0.9"], ConfigCompositionException),  # the section is sparse_fedavg now
        (["ota.enabled=true"], ConfigCompositionException),  # aggregation=over_the_air
    ],
)
def test_old_names_fail_in_hydra(overrides, error):
    with pytest.raises(error):
        _compose(overrides)


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"sparsity": {"enabled": True}}, "sparsity"),
        ({"ota": {"enabled": True}}, "ota.enabled"),
        ({"sparse_fedavg": {"enabled": True}}, "sparse_fedavg.enabled"),
    ],
)
def test_old_keys_are_unknown_keys(values, key):
    with pytest.raises(ConfigError, match="unknown key") as info:
        load_config(values)
    assert info.value.key == key


@pytest.mark.parametrize(
    ("variant", "changed"), [("amp_fl_wgc", "compensation"), ("amp_fl_memory_friendly", "memory_friendly")]
)
def test_strategy_variants_derive_from_amp_fl_and_change_one_key(variant, changed):
    def strategy(name: str) -> dict[str, Any]:
        with initialize_config_dir(config_dir=CONF, version_base="1.3"):
            conf = compose(config_name="config", overrides=[f"strategy={name}"])
        values = OmegaConf.to_container(conf.strategy, resolve=True)
        assert isinstance(values, dict)
        return values

    base, derived = strategy("amp_fl"), strategy(variant)
    assert set(derived) == set(base)  # nothing dropped (max_update_norm, clip_update_norm, reply_timeout_s, ...)
    assert {k for k in base if base[k] != derived[k]} == {changed}
    text = (Path(CONF) / "strategy" / f"{variant}.yaml").read_text()
    assert "- amp_fl" in text  # derived through the defaults list, not copied
