"""nox -s tests | lint | smoke  (each in its own virtualenv)."""

import nox

nox.options.sessions = ["lint", "tests"]
# torch first and pinned: on a CPU machine with a local CPU wheel pip takes it; elsewhere PyPI's build.
TORCH = "torch==2.13.0"


@nox.session
def tests(session: nox.Session) -> None:
    session.install(TORCH, "-e", ".[dev]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.6")
    session.run("ruff", "check", "src", "tests", "benchmarks", "noxfile.py")


@nox.session
def smoke(session: nox.Session) -> None:
    """README command 1: the default job on the bundled sample data and MiniLM."""
    session.install(TORCH, "-e", ".")
    session.run("python", "-m", "src.train", *session.posargs)
