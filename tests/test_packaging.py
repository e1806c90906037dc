"""The Dockerfile, docker-compose.yaml, README and CI script agree with each other."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tileserver.config import parse_config
from tileserver.config_loader import render_text

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "./scripts/test.sh" in readme
    assert re.search(r"^exec \./scripts/test\.sh$", ci, re.MULTILINE)
    assert "./scripts/demo.sh" in readme
    assert "config/demo.yaml.mako" in (ROOT / "scripts" / "demo.sh").read_text()


def test_compose_runs_the_image_with_memcached_and_the_demo_config() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
    services = compose["services"]
    assert set(services) >= {"tileserver", "memcached"}
    server = services["tileserver"]
    env = server["environment"]
    host, port = env["MEMCACHED_SERVERS"].split(":")
    assert host == "memcached"
    assert server["ports"] == [f"{env['TILESERVER_PORT']}:{env['TILESERVER_PORT']}"]

    dockerfile = (ROOT / "Dockerfile").read_text()
    cmd = re.search(r"^CMD \[(.*)\]$", dockerfile, re.MULTILINE)
    assert cmd is not None
    config_path = re.search(r'"--config", "([^"]+)"', cmd.group(1))
    assert config_path is not None
    assert (ROOT / config_path.group(1)).is_file()
    assert f"EXPOSE {env['TILESERVER_PORT']}" in dockerfile
    assert "USER tileserver" in dockerfile
    assert "HEALTHCHECK" in dockerfile

    # The config the image runs, rendered with the compose environment, is valid.
    template = ROOT / config_path.group(1)
    config = parse_config(yaml.safe_load(render_text(template, env)), template.parent)
    assert config.memcached is not None
    assert config.memcached.servers == (("memcached", int(port)),)
    assert config.server.host == "0.0.0.0"
    assert config.server.port == int(env["TILESERVER_PORT"])
