"""Presets, strict YAML config loading, overrides and the resolved-config round trip."""
import pytest
import yaml

from avatar.train.config import CONFIGS_DIR, TrainConfig, load_config, read_yaml, save_config, config_from_dict
from avatar.model.config import ConfigError, to_dict


@pytest.mark.parametrize("name", ["tiny", "phone", "multiview", "quality"])
def test_presets_load_strictly_and_round_trip(name, tmp_path):
    cfg = load_config(name)
    assert isinstance(cfg, TrainConfig) and cfg.total_steps > 0
    p = save_config(cfg, tmp_path / "config.yaml")
    again = config_from_dict(read_yaml(p))
    assert to_dict(again) == to_dict(cfg)


def test_tiny_is_small_enough_for_cpu():
    cfg = load_config("tiny")
    assert cfg.data.max_size <= 192 and cfg.total_steps <= 3000 and cfg.strategy.max_gaussians <= 10000


def test_unknown_key_is_an_error_naming_it(tmp_path):
    with pytest.raises(ConfigError, match=r"'loss\.ssim_wieght'"):
        load_config("tiny", {"loss.ssim_wieght": 0.1})
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"model": {"deform": {"hiden": 3}}}))
    with pytest.raises(ConfigError, match=r"model\.deform\.hiden"):
        load_config(str(bad))
    with pytest.raises(ConfigError, match=r"phases\[0\]\.bogus|bogus"):
        load_config(None, {"phases": [{"name": "a", "until": 5, "bogus": 1}]})


def test_wrong_types_and_bad_phases_are_errors():
    with pytest.raises(ConfigError, match="checkpoint_every"):
        load_config("tiny", {"checkpoint_every": "often"})
    with pytest.raises(ConfigError, match="logger"):
        load_config("tiny", {"logger": "stdout"})
    with pytest.raises(ConfigError, match="strictly increasing"):
        load_config(None, {"phases": [{"until": 10}, {"until": 5}]})
    with pytest.raises(ConfigError, match="unknown preset"):
        load_config("nope")


def test_overrides_nested_and_dotted_and_phase_lookup():
    cfg = load_config("tiny", {"loss.mouth_weight": 9.0, "model": {"deform": {"hidden": 8}}})
    assert cfg.loss.mouth_weight == 9.0 and cfg.model.deform.hidden == 8
    assert cfg.model.gaussians.num_face == read_yaml(CONFIGS_DIR / "tiny.yaml")["model"]["gaussians"]["num_face"]
    assert cfg.phase_at(0).name == "static" and cfg.phase_at(cfg.total_steps - 1).name == "joint"


def test_train_command_parses_and_reports_errors(tmp_path, capsys):
    import tyro

    from avatar.commands.train import Train, _parse_set

    cmd = tyro.cli(Train, args=[str(tmp_path / "cap"), "--preset", "tiny", "--resume", "--out", str(tmp_path / "o"),
                                "--set", "loss.mouth_weight=2.5", "phases=[{until: 5}]"])
    assert cmd.resume and cmd.preset == "tiny" and cmd.out == tmp_path / "o"
    assert _parse_set(cmd.set) == {"loss.mouth_weight": 2.5, "phases": [{"until": 5}]}
    bad = Train(tmp_path / "cap", set=("loss.nope=1",), out=tmp_path / "o2")
    assert bad.main() == 2
    assert "loss.nope" in capsys.readouterr().err
