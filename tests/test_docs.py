"""The documentation site: a page per exported method, listed in the nav, with its API block; a strict build."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import lightning_unlearn.methods as methods
from lightning_unlearn.methods import (
    Classifier,
    GradientUnlearningMethod,
    MultiStageUnlearningMethod,
    OnePassUnlearningMethod,
    UnlearningMethod,
)

ROOT = Path(__file__).resolve().parents[1]
BASES = {UnlearningMethod, GradientUnlearningMethod, MultiStageUnlearningMethod, OnePassUnlearningMethod}


def _concrete_methods() -> list[str]:
    names = []
    for name in methods.__all__:
        obj = getattr(methods, name)
        if inspect.isclass(obj) and issubclass(obj, UnlearningMethod) and obj not in BASES:
            if not issubclass(obj, Classifier):  # the original model and the oracle share the training page
                names.append(name)
    return sorted(names)


def _nav_files(node: object) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [f for item in node for f in _nav_files(item)]
    if isinstance(node, dict):
        return [f for value in node.values() for f in _nav_files(value)]
    return []


def _mkdocs_config() -> dict:
    # mkdocs.yml may use !!python tags in other projects; ours is plain YAML.
    return yaml.safe_load((ROOT / "mkdocs.yml").read_text())


def _method_pages() -> dict[str, str]:
    return {p.name: p.read_text() for p in (ROOT / "docs" / "methods").glob("*.md")}


def test_concrete_methods_are_found() -> None:
    found = _concrete_methods()
    assert {"SSD", "LAF", "SalUn", "UNSIR", "ActivationReset"} <= set(found)
    assert "UnlearningMethod" not in found and "RetrainOracle" not in found


@pytest.mark.parametrize("name", _concrete_methods())
def test_every_method_has_a_page_in_the_nav(name: str) -> None:
    nav = set(_nav_files(_mkdocs_config()["nav"]))
    block = f"::: lightning_unlearn.methods.{name}\n"
    pages = [fname for fname, text in _method_pages().items() if block in text + "\n"]
    assert pages, f"no page under docs/methods/ holds `::: lightning_unlearn.methods.{name}`"
    assert any(f"methods/{p}" in nav for p in pages), f"the page of {name} ({pages}) is not in the mkdocs.yml nav"


def test_oracle_and_bases_are_documented() -> None:
    pages = "\n".join(_method_pages().values())
    for name in ["Classifier", "RetrainOracle", *sorted(cls.__name__ for cls in BASES)]:
        assert f"::: lightning_unlearn.methods.{name}\n" in pages, name


def test_nav_points_at_existing_pages() -> None:
    missing = [f for f in _nav_files(_mkdocs_config()["nav"]) if not (ROOT / "docs" / f).is_file()]
    assert not missing


@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings_handlers.python")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "methods" / "ssd" / "index.html").is_file()
