"""Issue 8: the FL method presets (``method=...``) and the validation of their options at config load."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf

from amp_fl import protocol as P
from amp_fl.config import RunConfig, load_config
from amp_fl.errors import ConfigError
from amp_fl.server.build import RunData, train_setup

CONF = str(Path(__file__).resolve().parents[1] / "conf")


def _compose(overrides: list[str]) -> RunConfig:
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        conf = compose(config_name="config", overrides=overrides)
    values = OmegaConf.to_container(conf, resolve=True)
    assert isinstance(values, dict)
    values.pop("hydra", None)
    return load_config(values)


# (scheduling.name, compensation, local_objective, proximal_mu, apfl_alpha, personal_eval_interval, memory_friendly,
#  algorithm, aggregation)
EXPECTED = {
    "amp_fl": ("amp", "all", "sgd", None, None, None, False, "amp_fl", "digital"),
    "amp_fl_wgc": ("amp", "none", "sgd", None, None, None, False, "amp_fl", "digital"),
    "amp_fl_memory_friendly": ("amp", "all", "sgd", None, None, None, True, "amp_fl", "digital"),
    "amp_fl_tuned": ("amp", "discounted", "sgd", None, None, None, False, "amp_fl", "digital"),
    "amp_fl_best": ("amp", "discounted", "sgd", None, None, None, False, "amp_fl", "digital"),
    "synchronous": ("full_model", "none", "sgd", None, None, None, False, "amp_fl", "digital"),
    "fedprox": ("full_model", "none", "fedprox", 0.01, None, None, False, "amp_fl", "digital"),
    "apfl": ("full_model", "none", "apfl", None, 0.25, 10, False, "amp_fl", "digital"),
    # Issue 10: sparse FedAvg (its strategy/scheduling groups unused; over the air in experiment=ota_imp), AMP-FL over
    # the air.
    "sparse_fedavg": ("amp", "all", "sgd", None, None, None, False, "sparse_fedavg", "digital"),
    "amp_fl_ota": ("amp", "none", "sgd", None, None, None, False, "amp_fl", "over_the_air"),
    # Issue 20: FedBuff (buffered asynchronous aggregation of full models).
    "fedbuff": ("full_model", "none", "sgd", None, None, None, False, "fedbuff", "digital"),
    # HeteroFL and FedRolex (width levels; their pruning, Scaler and per-entry mean: test_peer_methods.py).
    "heterofl": ("levels", "none", "sgd", None, None, None, False, "amp_fl", "digital"),
    "fedrolex": ("levels", "none", "sgd", None, None, None, False, "amp_fl", "digital"),
}


def _summary(cfg: RunConfig) -> tuple:
    s = cfg.strategy
    return (
        cfg.scheduling.name,
        s.compensation,
        s.local_objective,
        s.proximal_mu,
        s.apfl_alpha,
        s.personal_eval_interval,
        s.memory_friendly,
        cfg.algorithm,
        cfg.aggregation,
    )


@pytest.mark.parametrize("experiment", [None, "main", "quick", "sweep_ratio"])
@pytest.mark.parametrize("method", sorted(EXPECTED))
def test_every_method_preset_composes_and_wins_over_the_experiment(method, experiment):
    overrides = [f"method={method}"] + ([f"experiment={experiment}"] if experiment else [])
    if method == "sparse_fedavg" and experiment == "quick":  # 5 rounds end before IMP reaches its 90 % target
        with pytest.raises(ConfigError, match="num_rounds"):
            _compose(overrides)
        return
    cfg = _compose(overrides)
    if method == "sparse_fedavg":  # sparse FedAvg: the strategy / scheduling groups are unused, any experiment's stay
        assert _summary(cfg)[2:] == EXPECTED[method][2:]
        return
    assert _summary(cfg) == EXPECTED[method]
    if cfg.scheduling.name == "full_model":
        assert cfg.scheduling.selection == "rate" and cfg.scheduling.deadline_s is None  # channel-aware, no deadline
    if experiment == "main":
        assert (cfg.num_devices, cfg.wireless.num_rbs, cfg.num_rounds) == (100, 10, 300)


def test_without_a_method_the_groups_decide_as_before():
    assert _summary(_compose([])) == EXPECTED["amp_fl"]
    cfg = _compose(["experiment=sweep_ratio"])
    assert cfg.scheduling.name == "fixed_ratio" and cfg.strategy.local_objective == "sgd"


def test_command_line_overrides_win_over_the_method():
    cfg = _compose(
        [
            "experiment=main",
            "method=fedprox",
            "strategy.proximal_mu=0.1",
            "scheduling.selection=random",
            "scheduling.deadline_s=2.5",
        ]
    )
    assert (cfg.strategy.proximal_mu, cfg.scheduling.selection, cfg.scheduling.deadline_s) == (0.1, "random", 2.5)
    # FedProx's proximal term also works on AMP-FL's pruned sub-models (the anchor is the received sub-model).
    cfg = _compose(["method=fedprox", "scheduling=amp"])
    assert (cfg.scheduling.name, cfg.strategy.local_objective) == ("amp", "fedprox")
    cfg = _compose(["method=apfl", "strategy.apfl_alpha=1", "strategy.personal_eval_interval=null"])
    assert (cfg.strategy.apfl_alpha, cfg.strategy.personal_eval_interval) == (1.0, None)


def test_a_method_that_does_not_exist_names_the_group_and_its_options():
    with pytest.raises(MissingConfigException, match=r"method/fedavgm") as info:
        _compose(["method=fedavgm"])
    assert info.value.options == sorted(EXPECTED)  # listed in Hydra's message too
    assert "Available options in 'method'" in str(info.value)


@pytest.mark.parametrize(
    ("overrides", "key", "problem"),
    [
        (["method=fedprox", "strategy.proximal_mu=-0.01"], "strategy.proximal_mu", "must be a finite number >= 0"),
        (["method=fedprox", "strategy.proximal_mu=null"], "strategy.proximal_mu", "local_objective=fedprox needs it"),
        (["method=apfl", "strategy.apfl_alpha=1.5"], "strategy.apfl_alpha", r"must be in \[0, 1\]"),
        (["method=apfl", "strategy.apfl_alpha=-0.5"], "strategy.apfl_alpha", r"must be in \[0, 1\]"),
        (["method=apfl", "scheduling=amp"], "strategy.local_objective", "needs scheduling.name=full_model, not .amp."),
        (["method=apfl", "strategy.personal_eval_interval=0"], "strategy.personal_eval_interval", "must be >= 1"),
        (["method=synchronous", "strategy.local_objective=fedavgm"], "strategy.local_objective", "choose from sgd"),
        (["method=synchronous", "strategy.proximal_mu=0.1"], "strategy.proximal_mu", "only local_objective=fedprox"),
        (["method=fedprox", "strategy.apfl_alpha=0.5"], "strategy.apfl_alpha", "only local_objective=apfl"),
    ],
)
def test_bad_method_options_fail_at_load_naming_the_key(overrides, key, problem):
    with pytest.raises(ConfigError, match=rf"^invalid config {key}: .*{problem}") as info:
        _compose(overrides)
    assert info.value.key == key


def test_the_options_reach_the_clients_train_setup(tmp_path):
    from amp_fl.data.datasets import ResolvedDataset, load_dataset

    cfg = _compose(["method=fedprox", "strategy.proximal_mu=0.3", "dataset=mnist5k"])
    data = RunData(ResolvedDataset("mnist5k", "mnist5k", None), load_dataset("mnist5k", download=False), "data")
    setup = train_setup(cfg, data)
    assert (setup.local_objective, setup.proximal_mu, setup.apfl_alpha) == ("fedprox", 0.3, 0.0)
    cfg = _compose(["method=apfl", "dataset=mnist5k"])
    setup = train_setup(cfg, data)
    assert (setup.local_objective, setup.proximal_mu, setup.apfl_alpha) == ("apfl", 0.0, 0.25)
    assert isinstance(setup, P.TrainSetup)
