import pytest

from workbench.config import TrialConfig, parse_seeds
from workbench.errors import ConfigError


def test_defaults_are_valid():
    cfg = TrialConfig.from_dict({})
    assert cfg.model == "reference" and cfg.seed_list == list(range(16))


@pytest.mark.parametrize("values, field, hint", [
    ({"scheduler": "warp-drive"}, "scheduler", "unknown scheduler"),
    ({"steps": 0}, "steps", "positive"),
    ({"steps": -3}, "steps", "positive"),
    ({"stpes": 10}, "stpes", "did you mean 'steps'"),
    ({"steps": "ten"}, "steps", "expected int"),
    ({"model": "/no/such/model/folder"}, "model", "does not exist"),
    ({"cfg_cutoff": 1.5}, "cfg_cutoff", "0.0 to 1.0"),
    ({"precision": "int3"}, "precision", "not one of"),
    ({"seeds": "5-2"}, "seeds", "not a seed list"),
    ({"prompt_set": "nope-v9"}, "prompt_set", "no prompt set"),
    ({"resolution": 30}, "resolution", "multiple of 8"),
])
def test_bad_values_are_one_clear_line(values, field, hint):
    with pytest.raises(ConfigError) as err:
        TrialConfig.from_dict(values)
    message = str(err.value)
    assert field in message and hint in message and "\n" not in message


def test_model_folder_without_model_index(tmp_path):
    with pytest.raises(ConfigError, match="model_index.json"):
        TrialConfig.from_dict({"model": str(tmp_path)})


def test_seed_lists_follow_edm_syntax():
    assert parse_seeds("0-3,8,10-11") == [0, 1, 2, 3, 8, 10, 11]
    with pytest.raises(ConfigError, match="repeats"):
        parse_seeds("0-3,2")
