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
        ({"dataset": {"partition": "dirichlet"}}, "dataset.partition"),
        ({"model": {"cost_model": "flops"}}, "model.cost_model"),
        ({"scheduling": {"name": "amp", "selection": "random"}}, "scheduling.selection"),
        ({"scheduling": {"name": "full_model", "selection": "aoi"}}, "scheduling.selection"),
        ({"scheduling": {"name": "fixed_ratio", "num_scheduled": 5, "selection": "rate"}}, "scheduling.selection"),
        ({"scheduling": {"name": "full_model", "deadline_s": 0.0}}, "scheduling.deadline_s"),
        ({"scheduling": {"name": "pr", "deadline_s": 1.0}}, "scheduling.deadline_s"),
        ({"scheduling": {"name": "pr", "assignment": "hungarian"}}, "scheduling.assignment"),
        ({"scheduling": {"name": "amp", "num_scheduled": 5}}, "scheduling.num_scheduled"),
        ({"verbose": "yes"}, "verbose"),
    ],
)
def test_impossible_values_fail_with_the_key(values, key):
    with pytest.raises(ConfigError) as info:
        load_config(values)
    assert info.value.key == key
    assert key in str(info.value)


def test_more_shards_than_samples_is_a_config_error():
    import numpy as np

    from amp_fl.config import check_partition

    labels = np.repeat(np.arange(10), 400)  # 4,000 samples
    cfg = load_config({"dataset": {"name": "mnist5k", "shards_per_device": 30}, "wireless": {"num_devices": 200}})
    with pytest.raises(ConfigError, match="6000 shards but only 4000 samples") as info:
        check_partition(cfg, labels)
    assert info.value.key == "dataset.shards_per_device"
    iid = load_config({"dataset": {"partition": "iid"}, "wireless": {"num_devices": 100}})
    with pytest.raises(ConfigError) as info:
        check_partition(iid, labels[:50])
    assert info.value.key == "wireless.num_devices"
    parts = check_partition(load_config({}), labels)  # 100 devices x 2 shards of 4,000 samples
    assert len(parts) == 100 and sum(len(p) for p in parts) == 4000


def test_fixed_ratio_that_empties_a_layer_is_a_config_error():
    from amp_fl.config import check_keep_counts

    values = {"scheduling": {"name": "fixed_ratio", "num_scheduled": 5}, "pruning": {"ratio": 0.9}}
    with pytest.raises(ConfigError, match="leaves a layer of 6 regions") as info:
        check_keep_counts(load_config(values), [6, 16, 120, 84])  # the CNN's layers: floor(0.1 * 6) = 0
    assert info.value.key == "pruning.ratio"
    check_keep_counts(load_config({**values, "pruning": {"ratio": 0.8}}), [6, 16, 120, 84])  # floor(1.2) = 1
    check_keep_counts(load_config({"pruning": {"ratio": 0.99}}), [6, 16])  # not fixed_ratio: not checked


def test_scheduler_options_reach_the_constructor_arguments():
    cfg = load_config({"scheduling": {"name": "full_model", "selection": "random", "deadline_s": 2}})
    assert cfg.scheduling.options(pruning_ratio=0.3) == {"selection": "random", "deadline_s": 2.0}
    cfg = load_config({"scheduling": {"name": "fixed_ratio", "num_scheduled": 4, "selection": "random"}})
    assert cfg.scheduling.options(pruning_ratio=0.3) == {
        "pruning_ratio": 0.3,
        "num_scheduled": 4,
        "selection": "random",
    }
    cfg = load_config({"scheduling": {"name": "pr", "assignment": "matching"}})
    assert cfg.scheduling.options(pruning_ratio=0.3) == {"assignment": "matching"}
    assert load_config({}).scheduling.options(pruning_ratio=0.3) == {}


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
        ["scheduling=full_model", "scheduling.selection=random", "scheduling.deadline_s=0.5"],
        ["scheduling=pr", "scheduling.assignment=matching"],
        ["scheduling=fixed_ratio", "scheduling.selection=random"],
        ["verbose=true"],
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
    from amp_fl.server.runner import config_from_run_config

    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="broken.json"):
        config_from_run_config({"config-file": str(bad)})
    with pytest.raises(ValueError, match="missing.json"):
        config_from_run_config({"config-file": str(tmp_path / "missing.json")})
    assert config_from_run_config({"config-file": ""}).num_devices == 100


def test_preflight_rejects_a_pruning_ratio_that_empties_a_layer_of_the_model() -> None:
    """The launcher's preflight checks ``pruning.ratio`` against the real model's region map."""
    from amp_fl.launch.preflight import preflight

    values = {"dataset": {"name": "mnist5k"}, "scheduling": {"name": "fixed_ratio", "num_scheduled": 5}}
    with pytest.raises(ConfigError, match=r"pruning\.ratio: 0\.99 leaves a layer of 6 regions of model 'cnn' empty"):
        preflight(load_config({**values, "pruning": {"ratio": 0.99}}))
    assert preflight(load_config({**values, "pruning": {"ratio": 0.8}})).used == "mnist5k"
