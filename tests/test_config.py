import dataclasses
from pathlib import Path

import pytest

from weighted_mtp.cli import main
from weighted_mtp.config import load_config
from weighted_mtp.config.schema import Config
from weighted_mtp.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
# Tool configs with their own schema (not training runs), checked by their own tests.
TOOL_CONFIGS = {"steper/generate.yaml", "clara/eval_pdf.yaml"}
SHIPPED = sorted(p for p in (REPO / "configs").glob("*/*.yaml") if f"{p.parent.name}/{p.name}" not in TOOL_CONFIGS)


def test_there_are_shipped_configs():
    assert any(p.parent.name == "baseline" for p in SHIPPED)


def _leaves(node, prefix=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, prefix + (key,))
    else:
        yield prefix, node


def _plain(value):
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_config_loads_and_validates(path):
    """Each shipped config names a registered objective, and every value it sets reaches the
    resolved config unchanged (nothing silently dropped or overwritten by defaults.yaml)."""
    import yaml

    from weighted_mtp.config import config_to_dict
    from weighted_mtp.objectives import OBJECTIVES

    cfg = load_config(path)
    assert isinstance(cfg, Config)
    assert cfg.experiment.stage in OBJECTIVES, f"{path}: stage {cfg.experiment.stage!r} has no objective"
    resolved = config_to_dict(cfg)
    for keys, value in _leaves(yaml.safe_load(path.read_text())):
        got = resolved
        for key in keys:
            got = got[key]
        assert _plain(got) == _plain(value), f"{path}: {'.'.join(keys)} is {got!r}, the file says {value!r}"


def test_defaults_yaml_sets_every_schema_key():
    """defaults.yaml documents the whole schema: a field missing there is a field nobody sees."""
    import yaml

    data = yaml.safe_load((REPO / "configs" / "defaults.yaml").read_text())

    from weighted_mtp.config.registry import SECTIONS

    def walk(cls, node, prefix=""):
        for f in dataclasses.fields(cls):
            if not f.metadata.get("yaml", True):  # Config.sections: the registered sections, walked below
                continue
            assert f.name in node, f"defaults.yaml lacks {prefix}{f.name}"
            sub = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
            if dataclasses.is_dataclass(sub):
                walk(type(sub), node[f.name], f"{prefix}{f.name}.")

    walk(Config, data)
    assert {"clara", "steper", "mtp_heads"} <= set(SECTIONS)
    for name, section in SECTIONS.items():  # each objective's own section
        assert name in data, f"defaults.yaml lacks {name}"
        walk(section, data[name], f"{name}.")


def test_file_overrides_defaults_and_override_overrides_file(tmp_path):
    (tmp_path / "defaults.yaml").write_text("training:\n  batch_size: 3\n  learning_rate: 1.0e-4\n")
    cfg_file = tmp_path / "x.yaml"
    cfg_file.write_text("experiment:\n  name: abc\ntraining:\n  batch_size: 5\ncheckpoint:\n  best_metric: ${experiment.name}\n")
    cfg = load_config(cfg_file, ["training.learning_rate=3e-4", "training.max_steps=7"])
    assert cfg.training.batch_size == 5
    assert cfg.training.learning_rate == pytest.approx(3e-4)
    assert cfg.training.max_steps == 7
    assert cfg.checkpoint.best_metric == "abc"  # interpolation resolved


def test_unknown_key_names_key_and_nearest_valid_one(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("training:\n  learnig_rate: 0.1\n")
    with pytest.raises(ConfigError) as e:
        load_config(f)
    assert "training.learnig_rate" in str(e.value)
    assert "training.learning_rate" in str(e.value)


def test_unknown_override_key_is_an_error(tmp_path):
    f = tmp_path / "ok.yaml"
    f.write_text("{}\n")
    with pytest.raises(ConfigError, match=r"data_sampling\.n_sample'.*did you mean 'data_sampling\.n_samples'"):
        load_config(f, ["data_sampling.n_sample=3"])


@pytest.mark.parametrize("override, key", [
    ("training.batch_size=abc", "training.batch_size"),
    ("training.mixed_precision=fp16", "training.mixed_precision"),
    ("mlflow.enabled=3", "mlflow.enabled"),
    ("experiment.stage=basline", "experiment.stage"),
    ("data_sampling.difficulty_weights.hard=1.0", "data_sampling.difficulty_weights.hard"),
    ("clara.top_k=0", "clara.top_k"),
    ("clara.train_docs=0", "clara.train_docs"),
    ("clara.temperature=-0.1", "clara.temperature"),
])
def test_bad_values_name_the_key(tmp_path, override, key):
    f = tmp_path / "ok.yaml"
    f.write_text("{}\n")
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(f, [override])


def test_cli_validate_config_reports_one_line_and_exit_2(tmp_path, capsys):
    f = tmp_path / "bad.yaml"
    f.write_text("runtime:\n  sed: 1\n")
    assert main(["validate-config", str(f)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "runtime.sed" in err and "runtime.seed" in err


def test_cli_validate_config_ok_on_shipped(capsys):
    assert main(["validate-config", *map(str, SHIPPED)]) == 0
    assert capsys.readouterr().out.count("OK") == len(SHIPPED)


def test_invalid_yaml_names_file_and_line(tmp_path):
    f = tmp_path / "broken.yaml"
    f.write_text("training:\n  batch_size: [1, 2\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml:\d+"):
        load_config(f)
