"""Inside `protocols/`, imports point down its own order too: `common` < `records` < the protocol
packages < `wiring`, and no protocol package imports another protocol's package.

That is what keeps each protocol a package a newcomer can read alone, and what lets the
wiring between cores live in one module (docs/architecture.md, "Adding a protocol").
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.imports import imported_modules

PROTOCOLS = Path(__file__).resolve().parents[2] / "protocols"
FOUNDATION = {"common": {"common"}, "records": {"common", "records"}}
PROTOCOL_PACKAGES = sorted(
    path.name for path in PROTOCOLS.iterdir() if path.is_dir() and (path / "__init__.py").is_file()
)
"""Every sub-package of protocols/ (protocols added later are checked without editing this file)."""


def allowed(package: str) -> set[str]:
    if package in FOUNDATION:
        return FOUNDATION[package]
    return {"common", "records", package}


def protocol_imports(path: Path) -> list[tuple[int, str]]:
    """(line, sub-package) for each `protocols.<sub-package>` module `path` imports."""
    return [
        (line, name.split(".")[1])
        for line, name in imported_modules(path)
        if name.startswith("protocols.") and len(name.split(".")) > 1
    ]


def test_every_protocol_package_has_the_same_shape() -> None:
    for package in PROTOCOL_PACKAGES:
        if package in FOUNDATION:
            continue
        files = {path.name for path in (PROTOCOLS / package).glob("*.py")}
        missing = {"messages.py"} - files
        if package != "join":  # join is messages and invites only: its core is the node's join service
            missing |= {"core.py", "config.py", "events.py"} - files
        assert not missing, f"protocols/{package} lacks {sorted(missing)}"


@pytest.mark.parametrize("package", PROTOCOL_PACKAGES)
def test_a_protocol_package_imports_only_the_foundation_and_itself(package: str) -> None:
    violations = [
        f"{path.relative_to(PROTOCOLS.parent)}:{line} imports protocols.{target}"
        for path in sorted((PROTOCOLS / package).rglob("*.py"))
        for line, target in protocol_imports(path)
        if target not in allowed(package)
    ]
    assert not violations, "imports across protocol packages:\n" + "\n".join(violations)


def test_only_the_wiring_sees_every_protocol_and_nothing_in_protocols_imports_it() -> None:
    assert (PROTOCOLS / "wiring.py").is_file()
    importers = [
        f"{path.relative_to(PROTOCOLS.parent)}:{line}"
        for path in sorted(PROTOCOLS.rglob("*.py"))
        for line, target in protocol_imports(path)
        if target == "wiring" and path.name != "wiring.py"
    ]
    assert not importers, importers


def test_the_checker_catches_a_cross_protocol_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from protocols.election.core import ElectionCore\nimport protocols.common.wire\n")
    assert protocol_imports(bad) == [(1, "election"), (2, "common")]
    assert "election" not in allowed("membership")
    assert "records" not in allowed("common")
