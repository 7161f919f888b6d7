from pathlib import Path

import pytest
import tomllib

from fedssl.config import RunConfig

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_pyproject_holds_every_key_with_the_dataclass_default():
    declared = _flatten(tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"])
    assert declared == RunConfig().to_flat()


def test_flat_round_trip_and_type_coercion():
    cfg = RunConfig.from_flat({"num-rounds": "7", "filter.enabled": "false", "eval.tasks": "digits"})
    assert cfg.num_rounds == 7 and cfg.filter.enabled is False and cfg.eval.tasks == ("digits",)
    assert RunConfig.from_flat(cfg.to_flat()) == cfg


@pytest.mark.parametrize("key,value,words", [
    ("ssl.method", "dino", ["ssl.method", "dino", "simclr", "byol"]),
    ("model.encoder", "vit", ["model.encoder", "vit", "smallcnn", "resnet18"]),
    ("data.partition", "pathological", ["data.partition", "pathological", "dirichlet"]),
    ("data.alpha", 0.0, ["data.alpha", "0.0"]),
    ("train.batch-size", 1, ["train.batch-size", "1"]),
    ("metrics-port", 8000, ["metrics-port", "8000"]),
    ("train.lr", "fast", ["train.lr", "fast"]),
])
def test_bad_values_name_the_key_the_value_and_what_is_allowed(key, value, words):
    with pytest.raises(ValueError) as err:
        RunConfig.from_flat({key: value})
    for word in words:
        assert word in str(err.value)


def test_unknown_key_is_refused():
    with pytest.raises(ValueError, match="ssl.temprature"):
        RunConfig.from_flat({"ssl.temprature": 0.1})


def test_client_update_needs_a_byol_style_method():
    with pytest.raises(ValueError, match="client-update"):
        RunConfig.from_flat({"client-update": "fedema", "ssl.method": "simclr"})
    assert RunConfig.from_flat({"client-update": "fedema", "ssl.method": "byol"}).client_update == "fedema"
