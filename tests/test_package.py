"""The built wheel carries what the package needs at run time and its license."""

from __future__ import annotations

import email
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _can_build_without_isolation() -> bool:
    """The venv's setuptools will do when it reads PEP 639 licenses (77+, which also
    builds wheels without the wheel package); else pip builds in isolation."""
    import setuptools

    major, minor = (int(p) for p in setuptools.__version__.split(".")[:2])
    return (major, minor) >= (77, 0)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "textgraph", source / "textgraph", ignore=shutil.ignore_patterns("__pycache__")
    )
    out = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out)]
    if _can_build_without_isolation():
        command.append("--no-build-isolation")
    done = subprocess.run(
        [*command, str(source)], capture_output=True, text=True, timeout=300, check=False
    )
    if done.returncode != 0 and "No matching distribution found for setuptools" in done.stderr:
        pytest.skip("pip cannot fetch the build backend (setuptools>=77) from any index here")
    assert done.returncode == 0, done.stderr[-3000:]
    (built,) = out.glob("textgraph-*.whl")
    return zipfile.ZipFile(built)


def test_wheel_has_every_prompt_the_shipped_data_and_py_typed(wheel):
    names = set(wheel.namelist())
    prompts = {f"textgraph/prompts/{p.name}" for p in (ROOT / "textgraph/prompts").glob("*.txt")}
    data = {
        f"textgraph/datasets/data/{p.name}" for p in (ROOT / "textgraph/datasets/data").iterdir()
    }
    assert len(prompts) > 40 and data
    assert prompts <= names, sorted(prompts - names)
    assert data <= names, sorted(data - names)
    assert "textgraph/py.typed" in names


def test_wheel_metadata_names_the_mit_license_and_ships_its_text(wheel):
    (metadata_name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    metadata = email.message_from_bytes(wheel.read(metadata_name))
    assert metadata["License-Expression"] == "MIT"
    assert "LICENSE" in metadata.get_all("License-File")
    (license_name,) = [n for n in wheel.namelist() if n.endswith("licenses/LICENSE")]
    text = wheel.read(license_name).decode()
    assert text.startswith("MIT License") and "textgraph authors" in text
    assert "Typing :: Typed" in metadata.get_all("Classifier")
    assert metadata["Summary"].startswith("Automatic prompt optimization")
    assert any(u.startswith("Repository, ") for u in metadata.get_all("Project-URL"))
