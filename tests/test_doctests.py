"""Docstring examples run as doctests: an example that drifts from the code fails here.

Every example uses the `>>>` form and every module that has one is run. Examples
that need data on disk or minutes of training are marked `# doctest: +SKIP` in place.
"""

import doctest
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "ssl3d_keras"
NOT_YET = set()  # modules whose examples do not run yet: none
# Every module with an example, found on disk, so a new example is covered at once.
MODULES = sorted(
    name for name in (
        ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        for path in PACKAGE.rglob("*.py") if ">>>" in path.read_text())
    if name not in NOT_YET)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an example that writes files writes them here
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
