"""msgspec Structs have Python names; the wire's camelCase comes from ``rename``.

A Struct whose attribute is spelled as its JSON key (``tickSize``) reads as a dict in the
code that uses it and lets a rename of the attribute silently change the wire, so every
Struct of ``service/``, ``bench/`` and ``loadgen/`` with a camelCase field declares
``rename=`` (itself, or a Struct it derives from: msgspec inherits the option). Built from
the source text, like tests/test_import_graph.py, so a new module is covered without
editing a list."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("service", "bench", "loadgen")
CAMEL = re.compile(r"[a-z][A-Z]")


class _Class:
    def __init__(self, where: str, node: ast.ClassDef) -> None:
        self.where = where
        self.bases = [ast.unparse(b).rpartition(".")[2] for b in node.bases]
        self.renames = any(k.arg == "rename" for k in node.keywords)
        self.fields = [
            s.target.id
            for s in node.body
            if isinstance(s, ast.AnnAssign)
            and isinstance(s.target, ast.Name)
            and "ClassVar" not in ast.unparse(s.annotation)
        ]


def _classes(sources: dict[str, str]) -> dict[str, list[_Class]]:
    """Every class of ``sources`` (where -> text), by name (a name may be defined twice)."""
    found: dict[str, list[_Class]] = {}
    for where, text in sources.items():
        for node in ast.walk(ast.parse(text, where)):
            if isinstance(node, ast.ClassDef):
                found.setdefault(node.name, []).append(_Class(f"{where}:{node.lineno}", node))
    return found


def camel_fields_without_rename(sources: dict[str, str]) -> list[str]:
    """``"path:line Class.field"`` for each camelCase field of a Struct (a class deriving
    from ``msgspec.Struct``, directly or through other classes of ``sources``) that has no
    ``rename`` of its own or from a base."""
    classes = _classes(sources)

    def struct_and_renamed(cls: _Class, seen: frozenset[str] = frozenset()) -> tuple[bool, bool]:
        is_struct, renamed = False, cls.renames
        for base in cls.bases:
            if base == "Struct":
                is_struct = True
            for parent in classes.get(base, []) if base not in seen else []:
                parent_struct, parent_renamed = struct_and_renamed(parent, seen | {base})
                is_struct, renamed = is_struct or parent_struct, renamed or (parent_struct and parent_renamed)
        return is_struct, renamed

    bad = []
    for name, defined in sorted(classes.items()):
        for cls in defined:
            is_struct, renamed = struct_and_renamed(cls)
            if is_struct and not renamed:
                bad += [f"{cls.where} {name}.{field}" for field in cls.fields if CAMEL.search(field)]
    return bad


def _project_sources() -> dict[str, str]:
    return {
        str(p.relative_to(ROOT)): p.read_text(encoding="utf-8")
        for pkg in PACKAGES
        for p in sorted((ROOT / pkg).rglob("*.py"))
    }


def test_no_struct_spells_its_attributes_as_camel_case_json():
    sources = _project_sources()
    assert "service/core/symbols.py" in sources  # the scan sees the package
    bad = camel_fields_without_rename(sources)
    assert bad == [], (
        "camelCase Struct fields without rename= (give them snake_case names and rename='camel'):\n  "
        + "\n  ".join(bad)
    )


def test_the_scan_finds_camel_case_fields_and_accepts_a_rename():
    sources = {
        "a.py": (
            "import msgspec\n"
            "from typing import ClassVar\n"
            "class Plain(msgspec.Struct):\n    tickSize: float\n    ok_name: int\n    maxSize: ClassVar[int] = 1\n"
            "class Renamed(msgspec.Struct, rename='camel'):\n    tick_size: float\n    oldName: int\n"
            "class Child(Renamed):\n    stepSize: float\n"
            "class Grandchild(Plain, frozen=True):\n    lastTradeMs: int\n"
            "class NotAStruct:\n    someName: int\n"
        ),
        "b.py": "from msgspec import Struct\nclass Bare(Struct, frozen=True):\n    wsUrl: str\n",
    }
    assert camel_fields_without_rename(sources) == [
        "b.py:2 Bare.wsUrl",
        "a.py:12 Grandchild.lastTradeMs",
        "a.py:3 Plain.tickSize",
    ]
