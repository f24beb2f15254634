"""docs/design.md is the map of the package: every module and subpackage under moechat/ is named there."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DESIGN = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")


def modules() -> list[Path]:
    return sorted(p.relative_to(ROOT / "moechat") for p in (ROOT / "moechat").rglob("*.py") if p.name != "__init__.py")


def test_every_module_is_named_in_the_design() -> None:
    missing = [str(m) for m in modules() if m.name not in DESIGN]
    assert not missing, f"modules missing from docs/design.md: {missing}"


def test_every_subpackage_is_named_in_the_design() -> None:
    packages = sorted({m.parts[0] for m in modules() if len(m.parts) > 1})
    assert packages, "the package has subpackages"
    missing = [p for p in packages if f"{p}/" not in DESIGN]
    assert not missing, f"subpackages missing from docs/design.md: {missing}"


def test_the_design_names_no_module_that_is_gone() -> None:
    """Paths written as `pkg/name.py` in the design exist (a renamed module leaves no stale name behind)."""
    import re

    named = set(re.findall(r"\b([a-z_]+/[a-z_]+\.py)\b", DESIGN))
    stale = [n for n in sorted(named) if not n.startswith("tests/") and not (ROOT / "moechat" / n).exists()]
    assert not stale, f"docs/design.md names modules that do not exist: {stale}"
