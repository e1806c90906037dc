"""The Dockerfile, docker-compose.yaml, README and CI script agree with each other."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
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


# --- docker-compose.yaml: valid for Compose v1 (and v2 where installed), broken copies fail ----

COMPOSE_FILE = ROOT / "docker-compose.yaml"
LIBPQ_ENV = {"PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD"}
AWS_ENV = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"}


def compose_commands() -> list[list[str]]:
    """Debian's docker-compose (Compose v1), required; and `docker compose` (v2) when the
    plugin is installed."""
    v1 = shutil.which("docker-compose")
    if v1 is None:
        pytest.fail(
            "docker-compose (Compose v1) is not installed: run ./scripts/test.sh, which "
            "installs it, or apt-get install docker-compose"
        )
    commands = [[v1]]
    docker = shutil.which("docker")
    if docker is not None:
        version = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=60)
        if version.returncode == 0:
            commands.append([docker, "compose"])
    return commands


def compose_config(command: list[str], path: Path) -> subprocess.CompletedProcess[str]:
    """`config -q`: parses, interpolates and validates the file, without a Docker engine."""
    return subprocess.run(
        [*command, "--file", str(path), "--project-directory", str(path.parent), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_compose_file_is_valid() -> None:
    for command in compose_commands():
        result = compose_config(command, COMPOSE_FILE)
        assert result.returncode == 0, f"{' '.join(command)} config -q:\n{result.stderr}"


# (what is broken, the change, what Compose v1 says)
BROKEN_COMPOSE = [
    ("unknown key", ("    healthcheck:", "    helthcheck:"), "helthcheck"),
    ("bad condition", ("service_healthy", "service_happy"), "service_happy"),
    ("undefined dependency", ("      memcached:\n", "      memcache:\n"), "memcache"),
    ("tabs", ("  memcached:\n", "\tmemcached:\n"), ""),
]


@pytest.mark.parametrize(("change", "v1_says"), [b[1:] for b in BROKEN_COMPOSE],
                         ids=[b[0] for b in BROKEN_COMPOSE])  # fmt: skip
def test_a_broken_compose_file_is_rejected(
    tmp_path: Path, change: tuple[str, str], v1_says: str
) -> None:
    text = COMPOSE_FILE.read_text()
    old, new = change
    assert old in text
    copy = tmp_path / "docker-compose.yaml"
    copy.write_text(text)
    for command in compose_commands():
        # The unchanged copy is valid where it is: the change alone breaks it.
        assert compose_config(command, copy).returncode == 0
    copy.write_text(text.replace(old, new, 1))
    for command in compose_commands():
        result = compose_config(command, copy)
        assert result.returncode != 0, f"{' '.join(command)} accepted {change}"
        if command[0].endswith("docker-compose"):
            assert v1_says in result.stderr


# --- compose, Dockerfile and README agree ------------------------------------------------------


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return data


def demo_env_names() -> set[str]:
    """The environment variables config/demo.yaml.mako reads."""
    text = (ROOT / "config" / "demo.yaml.mako").read_text()
    return set(re.findall(r"env\.get\(\"([A-Z0-9_]+)\"", text))


def dockerfile_env() -> dict[str, str]:
    """The ENV of the Dockerfile's last stage (the image)."""
    final = (ROOT / "Dockerfile").read_text().rsplit("\nFROM ", 1)[1]
    block = re.search(r"^ENV (.*?)(?<!\\)$", final, re.MULTILINE | re.DOTALL)
    assert block is not None
    return dict(re.findall(r"([A-Z0-9_]+)=(\S+)", block.group(1)))


def container_port(mapping: str) -> int:
    """'127.0.0.1:15432:5432' -> 5432."""
    return int(mapping.rsplit(":", 1)[1].split("/")[0])


def test_compose_services_have_health_checks_restart_policies_and_profiles() -> None:
    data = compose()
    services = data["services"]
    assert set(services) == {"tileserver", "memcached", "postgis", "s3", "redis"}
    for name, service in services.items():
        assert service.get("restart") == "unless-stopped", name
        if name != "tileserver":  # the image's HEALTHCHECK (test below)
            assert service["healthcheck"]["test"][0] == "CMD", name
    assert "healthcheck" not in services["tileserver"]
    # The demo needs neither: they start on demand, with a profile named after them.
    assert services["postgis"]["profiles"] == ["postgis"]
    assert services["s3"]["profiles"] == ["s3"]
    assert services["redis"]["profiles"] == ["distributed"]  # generate_tiles --role
    # SIGTERM's grace period (server.shutdown_timeout, 30 s) fits in Compose's stop timeout.
    assert int(services["tileserver"]["stop_grace_period"].removesuffix("s")) > 30
    for name, service in services.items():
        for dependency, options in service.get("depends_on", {}).items():
            assert dependency in services, (name, dependency)
            assert "profiles" not in services[dependency], f"{name} needs a profile's service"
            assert options["condition"] == "service_healthy"
            assert "healthcheck" in services[dependency]
    assert services["tileserver"]["depends_on"] == {"memcached": {"condition": "service_healthy"}}
    declared = set(data["volumes"])
    used = {
        volume.split(":")[0]
        for service in services.values()
        for volume in service.get("volumes", ())
        if not volume.startswith((".", "/"))
    }
    assert used == declared


def test_the_image_health_check_asks_the_server_port_for_health() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    healthcheck = re.search(r"^HEALTHCHECK .*?CMD (\[.*?\])$", dockerfile, re.MULTILINE | re.DOTALL)
    assert healthcheck is not None
    command = json.loads(healthcheck.group(1))
    assert "/health'" in command[-1]
    assert "os.environ.get('TILESERVER_PORT', '8080')" in command[-1]
    env = dockerfile_env()
    assert env["TILESERVER_PORT"] == "8080"
    assert f"EXPOSE {env['TILESERVER_PORT']}" in dockerfile


def test_compose_environment_is_what_the_demo_config_reads() -> None:
    server = compose()["services"]["tileserver"]
    env = {k: str(v) for k, v in server["environment"].items()}
    demo = demo_env_names()
    assert demo == {"TILESERVER_HOST", "TILESERVER_PORT", "MEMCACHED_SERVERS", "TILESERVER_TILES"}
    assert set(env) == demo | LIBPQ_ENV | AWS_ENV  # nothing misspelt, nothing unread
    # The image's defaults are the compose values: `docker run` behaves the same.
    image = dockerfile_env()
    for name in demo:
        assert image[name] == env[name], name
    assert set(image) - demo <= {"PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"}
    # The demo's filesystem cache is the volume, a folder the image gives its user.
    assert f"tiles:{env['TILESERVER_TILES']}" in server["volumes"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"install -d -o tileserver -g tileserver {env['TILESERVER_TILES']}" in dockerfile
    memcached_host, memcached_port = env["MEMCACHED_SERVERS"].split(":")
    assert memcached_host in compose()["services"]
    assert memcached_port == "11211"  # memcached's default -p; the command does not change it
    assert "-p" not in compose()["services"]["memcached"]["command"]


def test_compose_wires_postgis_and_s3_into_the_server() -> None:
    services = compose()["services"]
    env = {k: str(v) for k, v in services["tileserver"]["environment"].items()}
    postgis = services["postgis"]
    assert env["PGHOST"] == "postgis"
    assert [container_port(p) for p in postgis["ports"]] == [int(env["PGPORT"])]
    db = postgis["environment"]
    expected = (db["POSTGRES_DB"], db["POSTGRES_USER"], db["POSTGRES_PASSWORD"])
    assert (env["PGDATABASE"], env["PGUSER"], env["PGPASSWORD"]) == expected
    ready = postgis["healthcheck"]["test"]
    assert ready[ready.index("-U") + 1] == db["POSTGRES_USER"]
    assert ready[ready.index("-d") + 1] == db["POSTGRES_DB"]

    s3 = services["s3"]
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[name] == s3["environment"][name]
    assert [container_port(p) for p in s3["ports"]] == [8333]
    assert "http://127.0.0.1:8333/healthz" in s3["healthcheck"]["test"]
    assert "-bucket=tiles" in s3["command"]
    # The README's cache for it is a valid one.
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```yaml\n(caches:\n  s3:\n.*?)```", readme, re.DOTALL)
    assert block is not None
    cache = yaml.safe_load(block.group(1))["caches"]["s3"]
    assert cache["endpoint_url"] == "http://s3:8333"
    assert cache["bucket"] == "tiles"
    data = yaml.safe_load(render_text(ROOT / "config" / "demo.yaml.mako", env))
    data["caches"]["s3"] = cache
    config = parse_config(data, ROOT / "config")
    assert config.caches["s3"].endpoint_url == "http://s3:8333"


def test_readme_describes_the_compose_file() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Containers", 1)[1].split("\n## ", 1)[0]
    services = compose()["services"]
    for name, service in services.items():
        image = service.get("image", "")
        row = next(
            (line for line in section.splitlines() if line.startswith(f"| `{name}` |")), None
        )
        assert row is not None, f"no row for the service {name}"
        if "build" not in service:
            assert f"`{image}`" in row
        for profile in service.get("profiles", ()):
            assert f"profile `{profile}`" in row
            assert f"--profile {profile}" in section
        for mapping in service.get("ports", ()):
            host_port = mapping.split(":")[-2]
            assert host_port in (row if name != "tileserver" else section), (name, mapping)
    env = services["tileserver"]["environment"]
    for name in demo_env_names():
        assert f"`{name}={env[name]}`" in section
    for name in LIBPQ_ENV | AWS_ENV:
        assert f"`{name}`" in section
    assert "<http://localhost:8080/>" in section
    assert "GET /health" in section
    # The commands it shows are the image's console scripts, on the image's config.
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    commands = re.findall(r"^docker compose run --rm tileserver (\S+) -c (\S+)", section, re.M)
    assert commands
    for script, config_path in commands:
        assert script in scripts
        assert (ROOT / config_path).is_file()


def test_dockerignore_keeps_what_the_dockerfile_copies() -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignore  # an allow-list
    dockerfile = (ROOT / "Dockerfile").read_text()
    sources = [
        source
        for line in re.findall(r"^COPY (?!--from)(.*)$", dockerfile, re.MULTILINE)
        for source in line.split()[:-1]
    ]
    assert sources
    for source in sources:
        assert f"!{source.strip('./')}" in ignore, source
