"""scripts/uv_install.py: uv is told what pip's configuration says, in pip's order, or not
used at all (pip installs instead) when an option is not translated."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def uv_install() -> ModuleType:
    spec = importlib.util.spec_from_file_location("uv_install", ROOT / "scripts" / "uv_install.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# `pip config list` as on the CI machine: PIP_* variables (`:env:`) and two files.
MACHINE = """\
:env:.cert='/etc/ssl/certs/ca-certificates.crt'
:env:.default-timeout='180'
:env:.disable-pip-version-check='1'
:env:.find-links='/opt/wheels'
global.cert='/etc/ssl/certs/ca-certificates.crt'
global.constraint='/etc/xdg/pip/constraints.txt'
global.extra-index-url='file:///opt/pypi/simple file:///opt/pypi-more/simple'
global.find-links='/opt/wheels'
"""


def test_the_machines_configuration_becomes_uvs_options(uv_install: ModuleType) -> None:
    options = uv_install.effective_options(MACHINE)
    assert uv_install.uv_arguments(options) == [
        "--constraint", "/etc/xdg/pip/constraints.txt",
        "--extra-index-url", "file:///opt/pypi/simple",
        "--extra-index-url", "file:///opt/pypi-more/simple",
        "--find-links", "/opt/wheels",
    ]  # fmt: skip
    environment = uv_install.uv_environment(options)
    assert environment["SSL_CERT_FILE"] == "/etc/ssl/certs/ca-certificates.crt"
    assert environment["UV_HTTP_TIMEOUT"] == "180"


def test_a_variable_wins_over_install_which_wins_over_global(uv_install: ModuleType) -> None:
    listing = (
        ":env:.index-url='https://env.example/simple'\n"
        "global.index-url='https://global.example/simple'\n"
        "global.trusted-host='a.example b.example'\n"
        "install.index-url='https://install.example/simple'\n"
        "install.no-index='false'\n"
        "download.index-url='https://download.example/simple'\n"
    )
    options = uv_install.effective_options(listing)
    assert options["index-url"] == "https://env.example/simple"
    assert uv_install.uv_arguments(options) == [
        "--index-url", "https://env.example/simple",
        "--allow-insecure-host", "a.example",
        "--allow-insecure-host", "b.example",
    ]  # fmt: skip
    without_env = uv_install.effective_options(listing.split("\n", 1)[1])
    assert without_env["index-url"] == "https://install.example/simple"


def test_no_index_is_kept(uv_install: ModuleType) -> None:
    options = uv_install.effective_options("global.no-index='true'\n")
    assert uv_install.uv_arguments(options) == ["--no-index"]


@pytest.mark.parametrize("line", ["global.pre='1'", ":env:.src='/tmp/src'", "install.user='yes'"])
def test_an_option_not_translated_leaves_the_install_to_pip(
    uv_install: ModuleType, line: str
) -> None:
    options = uv_install.effective_options(MACHINE + line + "\n")
    with pytest.raises(uv_install.Untranslated, match=line.split(".", 1)[1].split("=")[0]):
        uv_install.uv_arguments(options)
