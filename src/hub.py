"""Pushing an export to the Hugging Face Hub (``push_to_hub=REPO``), checked before any work: offline mode, no token,
a bad repo id or an unreachable hub each stop the command with one message before the model is even loaded."""

from __future__ import annotations

from pathlib import Path

from src.errors import ConfigError


def check_hub(repo_id: str) -> str:
    """The user's token, once the hub answered with it; a ConfigError naming the fix otherwise."""
    import httpx
    from huggingface_hub import HfApi, constants, get_token
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError
    from huggingface_hub.utils import validate_repo_id

    where = f"push_to_hub={repo_id}"
    try:
        validate_repo_id(str(repo_id))
    except HFValidationError as error:
        raise ConfigError(f"{where}: not a Hugging Face repo id ({error}). Use <user or org>/<name>.") from None
    if constants.HF_HUB_OFFLINE:
        raise ConfigError(f"{where} needs the network, but HF_HUB_OFFLINE is set: nothing was exported. Unset it "
                          "(and log in with `hf auth login`), or export without push_to_hub and upload later.")
    token = get_token()
    if not token:
        raise ConfigError(f"{where}: no Hugging Face token. Log in with `hf auth login` or set HF_TOKEN, then run "
                          "the command again; nothing was exported.")
    try:
        HfApi().whoami(token=token)
    except (HfHubHTTPError, httpx.HTTPError, OSError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(f"{where}: the Hugging Face Hub cannot be reached with your token ({reason}); nothing was "
                          "exported. Check the network and the token (`hf auth whoami`).") from None
    return token


def push(directory: Path, repo_id: str, token: str) -> str:
    """Create the model repo if needed and upload the directory as one commit; returns the repo's URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    url = api.create_repo(repo_id, repo_type="model", exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=directory, commit_message="labelwise export")
    return str(url)
