"""Reads a configuration file: Mako (for *.mako) -> YAML -> `parse_config`.

The only module that reads the config file and the environment.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

import yaml

from tileserver.config import Config, MemcachedConfig, MergedDict, parse_config
from tileserver.config.caches import build_memcached
from tileserver.config.document import MemcachedDoc
from tileserver.config.sections import Errors
from tileserver.errors import ConfigError

# Mako drops a '## comment' line whole; an empty line keeps the YAML's line numbers those
# of the file the user edits.
_MAKO_COMMENT = re.compile(r"^[ \t]*##.*$", re.MULTILINE)


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, noting which keys of a mapping came from a YAML anchor
    (`<<: *layer`), so that a message about them says they were set in `defaults`."""

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        own = {key.value for key, _ in node.value if key.tag != "tag:yaml.org,2002:merge"}
        super().flatten_mapping(node)
        self._merged = frozenset(key.value for key, _ in node.value) - own


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> Any:
    data = MergedDict()
    yield data
    loader._merged = frozenset()
    data.update({str(k): v for k, v in loader.construct_mapping(node).items()})
    data.merged = loader._merged


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)


def render_text(path: Path, environ: dict[str, str] | None = None) -> str:
    """The YAML text of path, rendered with Mako first when the name ends in .mako."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the configuration: {exc.strerror}"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text ({exc.reason})"]) from exc
    if path.suffix != ".mako":
        return text
    # Mako (and Pygments, which its error pages import) only for a template: a plain YAML
    # file, and every process started from one, spares their import.
    from mako.exceptions import RichTraceback
    from mako.template import Template

    env = dict(os.environ if environ is None else environ)
    try:
        return str(
            Template(_MAKO_COMMENT.sub("", text), strict_undefined=True).render(
                env=env, environ=env
            )
        )
    except Exception as exc:
        line = next(
            (ln for file, ln, *_ in reversed(RichTraceback().traceback) if "memory:" in file),
            None,
        )
        where = f" line {line}" if line else ""
        if isinstance(exc, KeyError):
            raise ConfigError(
                [f"{path}:{where}: the environment variable {exc.args[0]} is not set"]
            ) from exc
        if isinstance(exc, NameError):
            name = str(exc).split("'")[1] if "'" in str(exc) else str(exc)
            raise ConfigError(
                [f"{path}:{where}: Mako template error: {name!r} is not defined (environment "
                 "variables are read as ${environ['NAME']})"]
            ) from exc  # fmt: skip
        raise ConfigError([f"{path}:{where}: Mako template error: {exc}"]) from exc


def load_config(path: str | os.PathLike[str], environ: dict[str, str] | None = None) -> Config:
    """Loads and validates a configuration file; ConfigError names every mistake."""
    source = Path(path).resolve()
    text = render_text(source, environ)
    try:
        data: Any = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{source}:{where}: invalid YAML: {problem}"]) from exc
    if data is None:
        raise ConfigError([f"{source}: the configuration is empty"])
    config = parse_config(data, base_dir=source.parent, source=source)
    servers = (os.environ if environ is None else environ).get(MEMCACHED_SERVERS, "")
    return _with_memcached_servers(config, servers) if servers.strip() else config


# Replaces `memcached.servers` (or adds a `memcached` section): the Memcached of a container,
# or of a test, without an edit to the file (a MapCache user's `mapcache.memcache_host`).
MEMCACHED_SERVERS = "TILESERVER_MEMCACHED_SERVERS"


def _with_memcached_servers(config: Config, value: str) -> Config:
    current = config.memcached or MemcachedConfig(servers=())
    doc = MemcachedDoc(
        servers=[s.strip() for s in value.split(",") if s.strip()],
        prefix=current.prefix, timeout=current.timeout, pool_size=current.pool_size,
        retry_interval=current.retry_interval, lock_timeout=current.lock_timeout,
    )  # fmt: skip
    errors = Errors()
    memcached = build_memcached(errors, doc)
    if errors.messages or memcached is None:
        wrong = [m.split(": ", 1)[1] for m in errors.messages] or ["no server"]
        raise ConfigError([f"{MEMCACHED_SERVERS} (environment): {m}" for m in wrong])
    return dataclasses.replace(config, memcached=memcached)
