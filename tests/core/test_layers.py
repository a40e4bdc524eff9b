"""The engine's layering (p2pchat/__init__.py), read from the source: every import, also the
ones inside functions, points to the module's own layer or a lower one; siblings on one layer
(files, calls) do not import each other; nothing in the engine imports the daemon or the CLI,
and the CLI reaches the engine only through the light modules it is allowed."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.harness import REPO

ENGINE = REPO / "p2pchat"

CORE = {"identity", "wire", "paths", "config", "events", "locks", "api", "clock"}
LAYERS = {
    "core": 0,
    "storage": 1,
    "ratchet": 1,
    "net": 2,
    "chat": 3,
    "files": 4,
    "calls": 5,
    "mailbox": 4,
    "groups": 4,
    "node": 6,
}
CLI_MAY_IMPORT = {"p2pchat", "p2pchat.api", "p2pchat.paths", "p2pchat.identity"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_module(name: str) -> bool:
    """Whether ``name`` is a module or package of this repository."""
    where = REPO / Path(*name.split("."))
    return where.with_suffix(".py").exists() or (where / "__init__.py").exists()


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, as absolute dotted names (``from m import x`` counts
    as importing ``m``, and ``m.x`` too when ``x`` is a module of this repository)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path.parent)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.add(target)
            # ``from p2pchat.net import kad`` imports the module p2pchat.net.kad
            found.update(
                f"{target}.{alias.name}"
                for alias in node.names
                if is_module(f"{target}.{alias.name}")
            )
    return found


def concern(module: str) -> str:
    """The layer name of an engine module: ``p2pchat.chat.roster`` -> ``chat``."""
    parts = module.split(".")
    if len(parts) == 1:
        return "core"
    if parts[1] in CORE:
        return "core"
    return parts[1]


def engine_modules() -> list[Path]:
    return sorted(ENGINE.rglob("*.py"))


def test_every_engine_module_has_a_known_layer() -> None:
    unknown = [module_name(p) for p in engine_modules() if concern(module_name(p)) not in LAYERS]
    assert unknown == [], f"add these to LAYERS or CORE: {unknown}"


@pytest.mark.parametrize("path", engine_modules(), ids=lambda p: module_name(p))
def test_imports_go_down_the_layers(path: Path) -> None:
    me = module_name(path)
    layer = LAYERS[concern(me)]
    wrong: list[str] = []
    for target in imports(path):
        top = target.split(".")[0]
        if top in ("daemon", "cli", "tests"):
            wrong.append(f"{target} (the engine never imports {top})")
        if top != "p2pchat" or target == "p2pchat":
            continue
        if (
            not (ENGINE / Path(*target.split(".")[1:])).with_suffix(".py").exists()
            and not (ENGINE / Path(*target.split(".")[1:]) / "__init__.py").exists()
        ):
            continue  # a name imported from a module, not a module
        theirs = concern(target)
        if LAYERS[theirs] > layer:
            wrong.append(f"{target} (layer {theirs} is above {concern(me)})")
        elif LAYERS[theirs] == layer and theirs != concern(me):
            wrong.append(f"{target} ({theirs} and {concern(me)} are siblings)")
    assert wrong == [], f"{me} imports upwards: {wrong}"


@pytest.mark.parametrize(
    "path", sorted(ENGINE.rglob("__init__.py")), ids=lambda p: module_name(p) or "p2pchat"
)
def test_package_inits_import_nothing(path: Path) -> None:
    """So that importing ``p2pchat.api`` (the CLI does) pulls in no engine package."""
    assert {
        t for t in imports(path) if t != "__future__" and not t.startswith("__future__.")
    } == set()


@pytest.mark.parametrize("path", sorted((REPO / "cli").rglob("*.py")), ids=lambda p: p.name)
def test_cli_speaks_the_api_only(path: Path) -> None:
    engine = {t for t in imports(path) if t.split(".")[0] in ("p2pchat", "daemon")}
    assert engine <= CLI_MAY_IMPORT, f"{path.name} imports {sorted(engine - CLI_MAY_IMPORT)}"


def test_api_module_stays_light() -> None:
    """``p2pchat.api`` is what the CLI imports: no trio, no libp2p, no other engine module."""
    heavy = {
        t
        for t in imports(ENGINE / "api.py")
        if t.split(".")[0] in ("trio", "libp2p", "p2pchat", "multiaddr", "aiortc")
    }
    assert heavy == set()


def test_the_checker_sees_upward_imports() -> None:
    """The import reader resolves relative and from-imports to module names (else the tests
    above could pass on imports they never saw)."""
    sample = ENGINE / "net" / "streams.py"
    found = imports(sample)
    assert {"p2pchat.storage.database", "p2pchat.wire", "p2pchat.identity"} <= found
    assert "p2pchat.identity.short" not in found  # a function, not a module
    assert "p2pchat.net.kad" in imports(
        ENGINE / "net" / "discovery.py"
    )  # from p2pchat.net import kad
    assert concern("p2pchat.chat.roster") == "chat" and concern("p2pchat.wire") == "core"
