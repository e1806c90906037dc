"""Reads a configuration file: Mako (for *.mako) -> YAML -> `parse_config`.

The only module that reads the config file and the environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from mako.exceptions import text_error_template
from mako.template import Template

from tileserver.config import Config, parse_config
from tileserver.errors import ConfigError


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
    env = dict(os.environ if environ is None else environ)
    try:
        return str(Template(text, strict_undefined=True).render(env=env, environ=env))
    except Exception as exc:
        detail = text_error_template().render().strip().splitlines()[-1]
        raise ConfigError([f"{path}: Mako template error: {detail or exc}"]) from exc


def load_config(path: str | os.PathLike[str], environ: dict[str, str] | None = None) -> Config:
    """Loads and validates a configuration file; ConfigError names every mistake."""
    source = Path(path).resolve()
    text = render_text(source, environ)
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{source}:{where}: invalid YAML: {problem}"]) from exc
    if data is None:
        raise ConfigError([f"{source}: the configuration is empty"])
    return parse_config(data, base_dir=source.parent, source=source)
