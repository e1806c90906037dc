"""TileCloud-chain's command-line spellings (tileserver/cli/tcc_options.py)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from tileserver.cli import tcc_options
from tileserver.cli.common import CommandError
from tileserver.cli.controller import build_parser as controller_parser
from tileserver.cli.generate import build_parser


def normalized(*argv: str) -> tuple[object, str]:
    args = build_parser().parse_args(["-c", "c.yaml", *argv])
    err = io.StringIO()
    tcc_options.normalize(args, "generate_tiles", err)
    return args, err.getvalue()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [(("-b", "-5", "-10.5", "5", "10"), "-5,-10.5,5,10"),  # TileCloud-chain's
     (("--bbox=-5,-10.5,5,10",), "-5,-10.5,5,10"),  # one argument starting with '-': '='
     (("-b", "5,-10.5,6,10"), "5,-10.5,6,10"), (("-b", "5, -10.5, 6, 10"), "5,-10.5,6,10")],
)  # fmt: skip
def test_bbox_in_four_arguments_or_one_with_commas(argv: tuple[str, ...], expected: str) -> None:
    args, _ = normalized(*argv)
    assert args.bbox == expected  # type: ignore[attr-defined]


def test_tilecloud_chains_options_become_tileservers() -> None:
    args, err = normalized("--local-process-number", "3", "-d", "--dimensions", "DATE=2012",
                           "V=1", "-g", "lv95", "--no-geom", "-t", "20")  # fmt: skip
    assert (args.processes, args.generate_verbose, args.debug) == (3, True, True)  # type: ignore[attr-defined]
    assert args.dimension_values == {"DATE": "2012", "V": "1"}  # type: ignore[attr-defined]
    assert (args.grid, args.geom_filter, args.test) == ("lv95", False, 20)  # type: ignore[attr-defined]
    assert err == ""
    with pytest.raises(CommandError, match="disagree"):
        normalized("--local-process-number", "3", "--processes", "2")


def test_dimensions_need_name_and_value() -> None:
    assert tcc_options.parse_dimensions(["A=1", "B=x:y"]) == {"A": "1", "B": "x:y"}
    for wrong in ("A", "=1", "A=", "A=1=2"):
        with pytest.raises(CommandError, match="expected NAME=VALUE"):
            tcc_options.parse_dimensions([wrong])


def test_the_configuration_defaults_to_tilecloud_chains(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="pass -c FILE"):
        tcc_options.default_config(tmp_path)
    (tmp_path / "tilegeneration").mkdir()
    (tmp_path / "tilegeneration" / "config.yaml.mako").write_text("")
    assert tcc_options.default_config(tmp_path) == "tilegeneration/config.yaml.mako"
    (tmp_path / "tilegeneration" / "config.yaml").write_text("")
    assert tcc_options.default_config(tmp_path) == "tilegeneration/config.yaml"


def test_the_controller_takes_tilecloud_chains_names() -> None:
    args = controller_parser().parse_args(
        ["--generate-openlayers-testpage", "--generate-legend-images", "-d", "--host", "x"]
    )
    assert args.openlayers_test and args.legends and args.debug
    err = io.StringIO()
    args.config = "c.yaml"
    tcc_options.normalize(args, "generate_controller", err)
    assert "note: --legends is accepted" in err.getvalue()
    assert "note: --host is accepted" in err.getvalue()
