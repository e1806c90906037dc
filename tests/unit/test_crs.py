"""CRS facts: the well-known CRSs answered without pyproj say exactly what pyproj says."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.configs import mercator_grid
from tileserver import crs
from tileserver.crs import crs_info, crs_info_from_pyproj


@pytest.mark.parametrize("srs", sorted(crs._WELL_KNOWN))
def test_each_well_known_crs_is_what_pyproj_says(srs: str) -> None:
    assert crs_info(srs) == crs_info_from_pyproj(srs)


@pytest.mark.parametrize("srs", ["epsg:3857", "Epsg:2056"])
def test_a_code_in_lower_case_gets_the_same_facts(srs: str) -> None:
    assert crs_info(srs) == crs_info_from_pyproj(srs) == crs_info(srs.upper())


def test_a_crs_that_is_not_well_known_is_asked_of_pyproj() -> None:
    assert "EPSG:32631" not in crs._WELL_KNOWN
    info = crs_info("EPSG:32631")  # WGS 84 / UTM zone 31N
    assert info.urn == "urn:ogc:def:crs:EPSG::32631"
    assert (info.meters_per_unit, info.yx_axis_order) == (1.0, False)


@pytest.mark.parametrize("srs", ["EPSG:999999", "EPSG:", "nonsense", "EPSG:3857x"])
def test_an_unknown_crs_is_a_value_error(srs: str) -> None:
    with pytest.raises(ValueError):
        crs_info(srs)


def test_loading_a_configuration_in_well_known_crss_imports_no_pyproj(tmp_path: Path) -> None:
    """pyproj's import and first query are about 40 ms of generate_tiles' start-up."""
    swiss = {"srs": "EPSG:2056", "bbox": [2420000, 1030000, 2900000, 1350000],
             "resolutions": [4000, 250, 10]}  # fmt: skip
    data = {
        "grids": {"merc": mercator_grid(), "swiss": swiss},
        "layers": {"l": {"grid": "merc", "type": "wms", "url": "http://127.0.0.1:9/wms",
                         "layers": "osm", "bbox": [0, 0, 1000, 1000]}},
    }  # fmt: skip
    (tmp_path / "config.yaml").write_text(json.dumps(data))  # YAML reads JSON
    code = (
        "import sys\n"
        "from tileserver.config_loader import load_config\n"
        "config = load_config('config.yaml')\n"
        "print(sorted(config.grids), 'pyproj' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["['merc',", "'swiss']", "False"]
