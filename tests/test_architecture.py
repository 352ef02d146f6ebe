"""The rooms of the house import each other in one direction only (docs/ARCHITECTURE.md).

Every `import` of every module is read (also the lazy ones inside functions), so a
cycle between rooms, such as the export loader importing the zoo that imports the
loader, fails here before it can make `load_encoder` start a pretraining.
"""

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "ssl3d_keras"

# Each room may import only rooms on lower floors (and its own). Floors, low to high:
FLOORS = [
    {"errors"},
    {"config", "atomic", "checksum"},
    {"ops", "losses"},
    {"data", "models"},
    {"tasks"},
    {"training", "visualize"},
    {"export", "benchmark"},
    {"downstream"},
    {"zoo"},
    {"cli"},
    {"__main__", "testing"},  # entry points: nothing in the package imports them
]
# The package root only maps names lazily (`ssl3d_keras.load_encoder` and friends).
ROOT = "ssl3d_keras"


def _room(dotted):
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else ROOT


def room_imports():
    """`{room: {imported room: [where, ...]}}` over every module of the package."""
    edges = defaultdict(lambda: defaultdict(list))
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        source = _room(module.removesuffix(".__init__"))
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module == ROOT:  # from ssl3d_keras import tasks
                    targets = [f"{ROOT}.{alias.name}" for alias in node.names
                               if not alias.name.startswith("__")]
                else:
                    targets = [node.module]
            for target in targets:
                if target.startswith(ROOT):
                    room = _room(target)
                    if room != source:
                        edges[source][room].append(f"{module}:{node.lineno}")
    return edges


def _floor(room):
    for level, rooms in enumerate(FLOORS):
        if room in rooms:
            return level
    raise AssertionError(f"room {room!r} is on no floor; add it to FLOORS and ARCHITECTURE.md")


def test_every_import_goes_down():
    upward = []
    for source, targets in room_imports().items():
        if source == ROOT:
            continue
        for target, where in targets.items():
            if target != ROOT and _floor(target) >= _floor(source):
                upward.append(f"{source} -> {target} ({where[0]})")
    assert upward == []


def test_no_room_imports_the_package_root():
    # The root's lazy names reach every room; importing it from a room hides a cycle.
    assert [f"{s} ({w[ROOT][0]})" for s, w in room_imports().items() if ROOT in w] == []


def test_the_export_loader_never_imports_the_zoo():
    assert "zoo" not in room_imports()["export"]
