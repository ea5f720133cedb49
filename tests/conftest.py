"""pytest's fixtures for every test: no W&B credentials, fresh caches; subprocess tests marked e2e.
What the tests share as functions is in tests/helpers.py."""

from __future__ import annotations

import inspect

import pytest

from tests import helpers  # noqa: F401 (registers featvis's config schemas before any test composes)

E2E_CALLS = ("run_cli(", "start_cli(", "subprocess.", "sys.executable")


def pytest_collection_modifyitems(items: list) -> None:
    """A test whose own code starts a process (run.py, Python) is marked e2e: `-m "not e2e"` skips them."""
    for item in items:
        functions = [item.function] + [d.func for defs in item._fixtureinfo.name2fixturedefs.values() for d in defs]
        if any(_starts_a_process(f) for f in functions):  # the test, or a fixture it uses (a module's run)
            item.add_marker(pytest.mark.e2e)


def _starts_a_process(function) -> bool:
    try:
        source = inspect.getsource(function)
    except (OSError, TypeError):
        return False
    return any(call in source for call in E2E_CALLS)


@pytest.fixture(autouse=True)
def _no_wandb_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No test may find a real W&B key or go online."""
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path_factory.getbasetemp() / "no-netrc"))


@pytest.fixture(autouse=True)
def _fresh_model_cache() -> None:
    """Each test loads its models and runs its forward passes itself (the caches are tested on their own)."""
    from featvis.engine import forward_cache
    from featvis.model import cache as model_cache

    model_cache.clear()
    forward_cache.clear()
