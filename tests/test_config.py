"""Issue 2: typed configs validated at start, Hydra composition of conf/."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from amp_fl.config import RunConfig, load_config
from amp_fl.errors import ConfigError

CONF = str(Path(__file__).resolve().parents[1] / "conf")


def test_defaults_are_the_paper_settings():
    cfg = load_config({})
    assert isinstance(cfg, RunConfig)
    assert (cfg.num_devices, cfg.wireless.num_rbs) == (100, 10)
    assert (cfg.train.learning_rate, cfg.train.local_steps, cfg.train.batch_size) == (0.05, 8, 64)
    assert (cfg.dataset.partition, cfg.dataset.shards_per_device) == ("shards", 2)


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"wireless": {"num_devices": 0}}, "wireless.num_devices"),
        ({"dataset": {"shards_per_device": 0}}, "dataset.shards_per_device"),
        ({"model": {"name": "alexnet"}}, "model.name"),
        ({"dataset": {"name": "svhn"}}, "dataset.name"),
        ({"train": {"learning_rate": -0.1}}, "train.learning_rate"),
        ({"wireless": {"tx_power_dbm": float("nan")}}, "wireless.tx_power_dbm"),
        ({"wireless": {"bandwidth_hz": -1.0}}, "wireless.bandwidth_hz"),
        ({"num_rounds": 0}, "num_rounds"),
        ({"pruning": {"ratio": 1.5}}, "pruning.ratio"),
        ({"strategy": {"compensation": "some"}}, "strategy.compensation"),
        ({"scheduling": {"name": "fixed_ratio"}}, "scheduling.num_scheduled"),
        ({"scheduling": {"name": "fixed_ratio", "num_scheduled": 11}}, "scheduling.num_scheduled"),
        ({"train": {"batch_sise": 32}}, "train.batch_sise"),
        ({"train": {"local_steps": "eight"}}, "train.local_steps"),
    ],
)
def test_impossible_values_fail_with_the_key(values, key):
    with pytest.raises(ConfigError) as info:
        load_config(values)
    assert info.value.key == key
    assert key in str(info.value)


def test_more_shards_than_samples_fails_before_flower_starts(tmp_path):
    from amp_fl.experiments.launch import preflight

    cfg = load_config({"dataset": {"name": "mnist5k", "shards_per_device": 30}, "wireless": {"num_devices": 200}})
    with pytest.raises(ConfigError, match="dataset.shards_per_device"):
        preflight(cfg)  # 6,000 shards > 4,000 samples


def _compose(overrides):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        conf = compose(config_name="config", overrides=overrides)
    values = OmegaConf.to_container(conf, resolve=True)
    values.pop("hydra", None)
    values["output_dir"] = "unused"
    return load_config(values)


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["experiment=main"],
        ["experiment=quick"],
        ["experiment=sweep_ratio", "pruning.ratio=0.5"],
        ["dataset=fashion_mnist", "model=vgg11", "scheduling=pr", "pruning=random", "strategy=amp_fl_wgc"],
        ["model=resnet18", "dataset=cifar10", "strategy=amp_fl_memory_friendly"],
    ],
)
def test_every_shipped_config_composes_and_validates(overrides):
    cfg = _compose(overrides)
    assert cfg.num_rounds >= 1


def test_main_experiment_is_the_paper_setting():
    cfg = _compose(["experiment=main"])
    assert (cfg.model.name, cfg.dataset.name, cfg.dataset.fallback) == ("cnn", "mnist", "mnist5k")
    assert (cfg.num_devices, cfg.wireless.num_rbs, cfg.scheduling.name, cfg.pruning.policy) == (100, 10, "amp", "aoi")


def test_hydra_override_reaches_the_typed_config():
    cfg = _compose(["experiment=sweep_ratio", "pruning.ratio=0.7", "seed=4"])
    assert (cfg.pruning.ratio, cfg.seed, cfg.scheduling.name, cfg.scheduling.num_scheduled) == (
        0.7,
        4,
        "fixed_ratio",
        10,
    )


def test_unreadable_run_config_file_is_named(tmp_path):
    from amp_fl.experiments.runner import config_from_run_config

    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="broken.json"):
        config_from_run_config({"config-file": str(bad)})
    with pytest.raises(ValueError, match="missing.json"):
        config_from_run_config({"config-file": str(tmp_path / "missing.json")})
    assert config_from_run_config({"config-file": ""}).num_devices == 100
