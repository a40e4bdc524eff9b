"""The control API's method table: merged from the handler modules, and documented."""

from __future__ import annotations

import re
from typing import Any

import pytest

from daemon import control
from daemon.params import Params
from tests.harness import REPO


async def _handler(s: Any, p: Params) -> Any:
    return None


def test_a_method_defined_in_two_handler_modules_is_refused() -> None:
    with pytest.raises(ValueError, match=r"'x\.y' is defined twice: in a and b"):
        control.merge_methods({"a": {"x.y": _handler}, "b": {"x.z": _handler, "x.y": _handler}})


def test_every_handler_module_contributes_its_own_namespace() -> None:
    for module in control.HANDLER_MODULES:
        assert module.METHODS, module.__name__
        for method, handler in module.METHODS.items():
            assert control.METHODS[method] is handler
    assert len(control.METHODS) == sum(len(m.METHODS) for m in control.HANDLER_MODULES)


def test_api_md_documents_exactly_the_methods_that_exist() -> None:
    text = (REPO / "docs" / "API.md").read_text()
    section = text.split("## Methods", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| `([a-z_]+(?:\.[a-z_]+)?)` \|", section, flags=re.MULTILINE)
    assert len(documented) == len(set(documented)), "a method is documented twice"
    assert sorted(documented) == sorted(control.METHODS)
