"""Development tasks: `nox -s lint tests` (CI), `nox -s bench -- --quick`."""

import os

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True
# The machines have one Python; do not ask for interpreters that are not there.
PYTHON = os.environ.get("NOX_PYTHON") or None


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    session.install("-e", ".[dev]")
    # Most tests wait on real processes, not on a core: 4 workers take ~3 min on 2 cores
    # where one takes ~5.5. `nox -s tests -- -n 0 ...` runs them in one process.
    session.run("pytest", "-n", "4", *session.posargs)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks against supervisord, circus and honcho (`-- --quick` for a small run)."""
    session.install("-e", ".")
    session.run("python", "benchmarks/bench.py", *session.posargs)
