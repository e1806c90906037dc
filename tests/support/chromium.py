"""Headless Chromium, from Debian, for the tests that open a page in a real browser."""

from __future__ import annotations

import shutil

import pytest


def chromium_binary() -> str:
    """Chromium from Debian; a clear failure (never a skip) without it."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail(
            "'chromium' is not installed: a page test needs a real browser. "
            "Run ./scripts/test.sh (it installs the Debian package 'chromium') or "
            "apt-get install chromium."
        )
    return path
