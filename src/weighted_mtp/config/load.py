"""Load a YAML config: merge it over `configs/defaults.yaml`, apply `a.b=c` overrides, resolve
`${...}` interpolation (OmegaConf), then convert into the typed schema strictly. Unknown keys
and wrong types are errors that name the dotted key and, for typos, the nearest valid key."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from weighted_mtp.config.registry import OBJECTIVES, SECTIONS
from weighted_mtp.config.schema import Config, ModelsConfig, TrainingConfig, with_method_fields
from weighted_mtp.errors import ConfigError

DEFAULTS_NAME = "defaults.yaml"


def find_defaults(config_path: Path) -> Path | None:
    """`configs/defaults.yaml` is found by walking up from the config file, so configs work from
    any working directory."""
    for parent in [config_path.parent, *config_path.parents]:
        candidate = parent / DEFAULTS_NAME
        if candidate.is_file() and candidate.resolve() != config_path.resolve():
            return candidate
    return None


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: invalid YAML: {getattr(e, 'problem', e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.path=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def _set_path(tree: dict, keys: list[str], value: Any) -> None:
    node = tree
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[keys[-1]] = value


def _deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Defaults < file < overrides, then strict conversion and semantic checks."""
    path = Path(path)
    merged: dict = {}
    defaults = find_defaults(path)
    if defaults is not None:
        merged = _read_yaml(defaults)
    merged = _deep_merge(merged, _read_yaml(path))
    return config_from_dict(merged, overrides, source=str(path))


def config_from_dict(data: dict, overrides: list[str] | None = None, source: str = "<dict>") -> Config:
    data = dict(data)
    for text in overrides or []:
        keys, value = parse_override(text)
        _set_path(data, keys, value)
    try:
        resolved = OmegaConf.to_container(OmegaConf.create(data), resolve=True)
    except OmegaConfBaseException as e:
        raise ConfigError(f"{source}: cannot resolve interpolation: {e}".splitlines()[0]) from None
    sections = {name: _convert(cls, resolved.pop(name, None), prefix=f"{name}.", source=source)
                 for name, cls in SECTIONS.items()}
    cfg = _convert(Config, resolved, prefix="", source=source)
    cfg.sections.update(sections)
    validate(cfg, source)
    return cfg


def load_dataclass_config(cls, path: str | Path, overrides: list[str] | None = None):
    """A YAML file (plus `key=value` overrides) converted as strictly as the training config,
    into any config dataclass: for tools with their own configs (StepER data generation)."""
    path = Path(path)
    data = _read_yaml(path)
    for text in overrides or []:
        keys, value = parse_override(text)
        _set_path(data, keys, value)
    return _convert(cls, data, prefix="", source=str(path))


def _all_keys(cls, prefix: str = "") -> list[str]:
    cls = _concrete(cls)
    keys = []
    if cls is Config:
        for name, section in SECTIONS.items():
            keys.extend([name, *_all_keys(section, name + ".")])
    for name, tp in _hints(cls).items():
        if name not in _yaml_fields(cls):
            continue
        dotted = f"{prefix}{name}"
        keys.append(dotted)
        if dataclasses.is_dataclass(tp):
            keys.extend(_all_keys(tp, dotted + "."))
    return keys


_HINTS: dict[type, dict[str, Any]] = {}


def _yaml_fields(cls) -> list[str]:
    """The fields a YAML file sets (not `Config.sections`, which holds the registered sections)."""
    return [f.name for f in dataclasses.fields(cls) if f.metadata.get("yaml", True)]


def _concrete(cls):
    """The class a section converts into: `training` and `models` hold the registered methods' fields too."""
    return with_method_fields(cls) if cls in (TrainingConfig, ModelsConfig) else cls


def _hints(cls) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _suggest(key: str, prefix: str, cls) -> str:
    cls = _concrete(cls)
    valid_here = _yaml_fields(cls) + (list(SECTIONS) if cls is Config else [])
    close = difflib.get_close_matches(key, valid_here, n=1, cutoff=0.6)
    if not close:
        everywhere = _all_keys(Config)
        close_full = difflib.get_close_matches(prefix + key, everywhere, n=1, cutoff=0.6)
        if close_full:
            return f" (did you mean '{close_full[0]}'?)"
        return f" (valid keys here: {', '.join(valid_here)})"
    return f" (did you mean '{prefix}{close[0]}'?)"


def _convert(cls, data: Any, prefix: str, source: str):
    cls = _concrete(cls)
    where = prefix.rstrip(".") or "<root>"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: config key '{where}' must be a mapping, got {type(data).__name__}")
    hints = _hints(cls)
    names = set(_yaml_fields(cls))
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(f"{source}: unknown config key '{prefix}{key}'{_suggest(str(key), prefix, cls)}")
        kwargs[key] = _coerce(hints[key], value, f"{prefix}{key}", source)
    return cls(**kwargs)


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(tp, value: Any, key: str, source: str):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        errors = []
        for option in non_none:
            try:
                return _coerce(option, value, key, source)
            except ConfigError as e:
                errors.append(e)
        raise errors[0]
    if dataclasses.is_dataclass(tp):
        return _convert(tp, value, key + ".", source)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{source}: config key '{key}' must be one of {list(args)}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{source}: config key '{key}' must be a list, got {type(value).__name__}")
        return [_coerce(args[0], v, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: config key '{key}' must be a mapping, got {type(value).__name__}")
        return {str(k): _coerce(args[1], v, f"{key}.{k}", source) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: config key '{key}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: config key '{key}' must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if isinstance(value, str):
                try:
                    return float(value)  # YAML 1.1 reads "1e-4" as a string
                except ValueError:
                    pass
            raise ConfigError(f"{source}: config key '{key}' must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{source}: config key '{key}' must be a string, got {value!r}")
        return str(value)
    if tp is Any:
        return value
    raise ConfigError(f"{source}: config key '{key}' has unsupported type {_type_name(tp)}")


def check(condition: bool, source: str, key: str, message: str) -> None:
    """Raise a ConfigError naming `key` unless `condition` (for sections' `validate` methods too)."""
    if not condition:
        raise ConfigError(f"{source}: config key '{key}' {message}")


def validate(cfg: Config, source: str = "<config>") -> None:
    """Checks that need more than one field or a range; types were checked during conversion."""
    stage = cfg.experiment.stage
    if not OBJECTIVES:
        raise ConfigError(f"{source}: no objective is registered; import weighted_mtp.objectives (which registers "
                          "the built-in ones) before loading a config")
    if stage not in OBJECTIVES:
        close = difflib.get_close_matches(stage, list(OBJECTIVES), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(sorted(OBJECTIVES))})"
        raise ConfigError(f"{source}: config key 'experiment.stage' names unknown objective '{stage}'{hint}")
    t, d, s = cfg.training, cfg.dataset, cfg.data_sampling
    check(cfg.models.policy.n_future_tokens >= 1, source, "models.policy.n_future_tokens", "must be >= 1")
    check(d.max_length >= 2, source, "dataset.max_length", "must be >= 2")
    check(d.pad_to_multiple_of is None or d.pad_to_multiple_of >= 1, source, "dataset.pad_to_multiple_of",
          "must be >= 1 or null")
    check(t.batch_size >= 1, source, "training.batch_size", "must be >= 1")
    check(t.gradient_accumulation_steps >= 1, source, "training.gradient_accumulation_steps", "must be >= 1")
    check(t.n_epochs > 0, source, "training.n_epochs", "must be > 0")
    check(t.max_steps is None or t.max_steps >= 1, source, "training.max_steps", "must be >= 1 or null")
    check(t.learning_rate > 0, source, "training.learning_rate", "must be > 0")
    check(len(t.betas) == 2, source, "training.betas", "must have two values")
    check(0 <= t.lr_scheduler.warmup_ratio < 1, source, "training.lr_scheduler.warmup_ratio", "must be in [0, 1)")
    check(0 <= t.lr_scheduler.min_lr_ratio <= 1, source, "training.lr_scheduler.min_lr_ratio", "must be in [0, 1]")
    check(t.loss.chunk_size >= 1, source, "training.loss.chunk_size", "must be >= 1")
    scales = t.loss.head_scales
    if scales is not None:
        k = cfg.models.policy.n_future_tokens
        check(len(scales) == k, source, "training.loss.head_scales",
              f"must have one value per head (models.policy.n_future_tokens = {k}), got {len(scales)}")
        check(all(v >= 0 for v in scales) and any(v > 0 for v in scales), source, "training.loss.head_scales",
              f"must be >= 0 with at least one > 0, got {scales}")
    check(t.log_interval >= 1, source, "training.log_interval", "must be >= 1")
    check(s.n_samples >= 1, source, "data_sampling.n_samples", "must be >= 1")
    check(s.val_n_samples >= 0, source, "data_sampling.val_n_samples", "must be >= 0")
    check(s.correct_ratio is None or 0 <= s.correct_ratio <= 1, source, "data_sampling.correct_ratio", "must be in [0, 1]")
    for name, bounds in s.difficulty_bins.items():
        check(len(bounds) == 2 and bounds[0] <= bounds[1], source, f"data_sampling.difficulty_bins.{name}",
              f"must be [lo, hi] with lo <= hi, got {bounds}")
    for name in s.difficulty_weights:
        check(name in s.difficulty_bins, source, f"data_sampling.difficulty_weights.{name}",
              f"names no bin of data_sampling.difficulty_bins ({', '.join(s.difficulty_bins)})")
    for i, stage_cfg in enumerate(s.curriculum):
        for name in stage_cfg.weights:
            check(name in s.difficulty_bins, source, f"data_sampling.curriculum[{i}].weights.{name}",
                  f"names no bin of data_sampling.difficulty_bins ({', '.join(s.difficulty_bins)})")
    check(cfg.checkpoint.save_total_limit >= 1, source, "checkpoint.save_total_limit", "must be >= 1")
    for section in cfg.sections.values():  # each method checks its own section
        if hasattr(section, "validate"):
            section.validate(source)


def config_to_dict(cfg: Config) -> dict:
    """The config as plain data, sections at the top level (as a YAML file writes them)."""
    data = dataclasses.asdict(cfg)
    data.update(data.pop("sections"))
    return data
