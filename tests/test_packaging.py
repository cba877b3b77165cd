"""The installable tool: the package list, the `labelwise` console script and its tab completion, and a built wheel
that finds its configs when installed outside the checkout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from setuptools import find_packages

from src.cli import COMMANDS, main
from tests.helpers import ROOT


def test_the_listed_packages_are_every_package_of_the_source_tree():
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads TOML")
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set(find_packages(ROOT, include=["src*"], exclude=["src.plugins*"]))
    found |= {f"hydra_plugins.{name}" for name in find_packages(ROOT / "src/plugins/hydra_plugins")}
    assert listed == found | {"src.conf", "hydra_plugins"}


def test_hydra_finds_the_optuna_sweeper_from_outside_the_checkout(tmp_path):
    """Hydra lists plugins by walking the `hydra_plugins` namespace's directories; an editable install whose
    namespace has no real directory imports the sweeper but never lists it (`hparams_search=optuna` then fails)."""
    code = ("from hydra.core.plugins import Plugins; from hydra.plugins.sweeper import Sweeper; "
            "print(sorted(p.__name__ for p in Plugins.instance().discover(Sweeper)))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert "OptunaSweeper" in out


def test_help_version_and_unknown_commands(capsys):
    main(["--help"])
    out = capsys.readouterr().out
    assert all(f"  {name}" in out for name in COMMANDS)
    main(["--version"])
    assert capsys.readouterr().out.startswith("labelwise ")
    commands = "train, eval, predict, export, demo, compare"
    with pytest.raises(SystemExit, match=f"unknown command 'fit'; commands: {commands}"):
        main(["fit"])


def completions(line: str) -> list[str]:
    env = {**os.environ, "COMP_LINE": line, "COMP_POINT": str(len(line)), "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "src.cli", "-sc", "query=bash"], env=env, capture_output=True,
                            text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_tab_completion_completes_commands_then_each_commands_config():
    assert completions("labelwise ") == list(COMMANDS)
    assert completions("labelwise ex") == ["export"]
    assert {"loss=", "logger="} <= set(completions("labelwise train lo"))
    assert "asymmetric" in " ".join(completions("labelwise train loss="))
    assert "ckpt_path=" in completions("labelwise predict ckpt")
    result = subprocess.run([sys.executable, "-m", "src.cli", "-sc", "install=bash"], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT, timeout=120)
    assert result.stdout.rstrip().endswith("hydra_bash_completion labelwise")


@pytest.mark.slow
def test_a_built_wheel_installed_outside_the_checkout_trains_with_its_own_configs(tmp_path):
    """Build the wheel (offline, no build isolation), install it into a directory of its own (dependencies from this
    environment), and run the installed `labelwise train debug=limit` from a directory that is not the checkout."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps", str(ROOT), "-w",
                    str(tmp_path / "dist")], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("labelwise-*.whl")
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"}
    probe = subprocess.run([sys.executable, "-c", "import src; print(src.__file__, src.CONFIG_PATH)"], env=env,
                           cwd=work, capture_output=True, text=True, check=True)
    assert probe.stdout.split() == [str(site / "src" / "__init__.py"), "pkg://src.conf"]
    result = subprocess.run([str(site / "bin" / "labelwise"), "train", "debug=limit",
                             "trainer.enable_progress_bar=false", "hydra.run.dir=run"],
                            env=env, cwd=work, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((work / "run" / "summary.json").read_text())
    assert summary["label_names"] == ["anger", "disgust", "fear", "joy", "sadness", "surprise", "neutral"]
    assert Path(summary["best_checkpoint"]).is_file() and (work / "outputs" / "mlflow.db").is_file()
