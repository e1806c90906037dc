"""`tileserver serve`: the WMTS server, in one process or a master of several sharing
the port; stops gracefully on SIGTERM and SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
from types import FrameType
from typing import TYPE_CHECKING

from tileserver.cli.common import load_or_report, setup_logging
from tileserver.config import Config
from tileserver.config_loader import load_config
from tileserver.errors import ConfigError

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger("tileserver.server")


def _new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """What asyncio.run does after its coroutine: cancel what is left, then close."""
    try:
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        if tasks:
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()


CLOSE_MARGIN = 5.0  # seconds after the grace period before renders under way are stopped


def _run_server(
    config: Config,
    path: str,
    host: str,
    port: int,
    reuse_port: bool,
    processes: int,
    admin_token: str | None = None,
    master_pid: int | None = None,
) -> int:
    """Serves until SIGTERM or SIGINT, then stops gracefully: no new connection, requests
    under way get `server.shutdown_timeout` seconds to finish, the backends close; 0."""
    from aiohttp import web

    from tileserver.web.access_log import ACCESS_LOGGER, AccessLogger
    from tileserver.web.admin import signal_master
    from tileserver.web.app import create_app
    from tileserver.web.hot_path import install_hot_path
    from tileserver.web.runtime import RUNTIME

    if master_pid is not None:
        # A worker of a master killed by SIGKILL stops gracefully instead of serving on.
        from tileserver.adapters.parent_death import die_with_parent

        die_with_parent(master_pid, signal.SIGTERM)
    grace = config.server.shutdown_timeout
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "") else host

    async def serve() -> None:
        app = create_app(
            config,
            render_processes=processes,
            load=lambda: load_config(path),
            metrics=config.server.metrics,
            admin_token=admin_token,
            reload_all=None if master_pid is None else signal_master(master_pid),
        )
        loop = asyncio.get_running_loop()
        stop: asyncio.Future[int] = loop.create_future()

        def on_signal(signum: int) -> None:
            if stop.done():  # a second signal (Ctrl-C reaches the master and its workers)
                log.warning("%s: already stopping", signal.Signals(signum).name)
            else:
                stop.set_result(signum)

        # Our own handlers, not aiohttp's: a second signal must not cut the grace short.
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal, signum)
        runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log=logging.getLogger(ACCESS_LOGGER) if config.server.access_log else None,
            access_log_class=AccessLogger,
            keepalive_timeout=75.0,  # web.run_app's
            shutdown_timeout=grace,
        )
        await runner.setup()  # opens the backends (ConfigError)
        install_hot_path(runner)
        try:
            await web.TCPSite(runner, host, port, reuse_port=reuse_port or None).start()
            log.warning(
                "serving WMTS on http://%s:%d/wmts/1.0.0/WMTSCapabilities.xml; demo page "
                "http://%s:%d/", shown_host, port, shown_host, port,
            )  # fmt: skip
            received = await stop
            log.warning(
                "%s: stopping: no new connections; %d request(s) under way have up to %g s "
                "to finish", signal.Signals(received).name, app[RUNTIME].requests_in_progress(),
                grace,
            )  # fmt: skip
        finally:
            await _stop_runner(runner, grace + CLOSE_MARGIN)
        log.warning("stopped")

    loop = _new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(serve())
    except ConfigError as exc:
        print("tileserver: cannot start:", file=sys.stderr)
        for message in exc.messages:
            print(f"  {message}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"tileserver: cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr)
        return 1
    finally:
        _close_loop(loop)
    return 0


async def _stop_runner(runner: web.AppRunner, deadline: float) -> None:
    """runner.cleanup() (stop listening, wait for the handlers up to the grace period,
    close the backends), within `deadline` seconds: a render still running then (nobody
    waits for it any more) would hold the render pool's close, so its processes are
    terminated."""
    cleanup = asyncio.ensure_future(runner.cleanup())
    done, _ = await asyncio.wait({cleanup}, timeout=deadline)
    if not done:
        children = multiprocessing.active_children()
        log.warning(
            "still closing %g s after the signal: terminating %d render process(es)",
            deadline, len(children),
        )  # fmt: skip
        for child in children:
            child.terminate()
    await cleanup


def _exit_status(returncode: int) -> int:
    """A child's exit status as a shell shows it: 128 + N when signal N killed it."""
    return 128 - returncode if returncode < 0 else returncode


def _run_workers(args: argparse.Namespace, workers: int, processes: int, grace: float) -> int:
    """A master that starts `workers` server processes sharing the port (SO_REUSEPORT).

    SIGHUP, SIGTERM and SIGINT are forwarded to them. Once stopping, a worker still
    running `grace` + 10 s later is killed. The status is 0 when every worker stopped
    cleanly, else the first failed one's (128 + N when killed by signal N).
    """
    command = [
        sys.executable, "-m", "tileserver", "serve", "--config", args.config,
        "--host", args.host_value, "--port", str(args.port_value), "--workers", "1",
        "--reuse-port", "--render-processes", str(processes), "--master-pid", str(os.getpid()),
    ]  # fmt: skip
    if args.log_format:
        command += ["--log-format", args.log_format]
    if args.verbose:
        command.insert(3, "--verbose")
    # /metrics aggregates the server processes through files in one folder (see
    # adapters/prometheus_metrics); a fresh one per run, so no stale values survive.
    env = dict(os.environ)
    metrics_dir: tempfile.TemporaryDirectory[str] | None = None
    if not env.get("PROMETHEUS_MULTIPROC_DIR"):
        metrics_dir = tempfile.TemporaryDirectory(prefix="tileserver-metrics-")
        env["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir.name
    children = [subprocess.Popen(command, env=env) for _ in range(workers)]
    stopped_at: float | None = None  # when SIGTERM or SIGINT came, or a worker failed
    # A worker stopped by the signal forwarded before it could handle it stopped cleanly.
    clean = {0, -signal.SIGTERM, -signal.SIGINT}

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopped_at
        if signum != signal.SIGHUP and stopped_at is None:
            stopped_at = time.monotonic()
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, forward)  # each process reloads its configuration
    status = 0
    try:
        while any(child.poll() is None for child in children):
            failed = [c for c in children if c.poll() not in (None, 0)]
            if failed and stopped_at is None:
                code = _exit_status(failed[0].returncode)
                log.error("a server process exited with status %d: stopping the others", code)
                status = code or 1
                forward(signal.SIGTERM, None)
            if stopped_at is not None and time.monotonic() > stopped_at + grace + 10:
                late = [c for c in children if c.poll() is None]
                log.error("%d server process(es) still running %g s after the signal: killed",
                          len(late), grace + 10)  # fmt: skip
                for child in late:
                    child.kill()
                    child.wait()
                status = status or 1
            time.sleep(0.1)
    finally:
        if metrics_dir is not None:
            metrics_dir.cleanup()
    codes = [c.returncode for c in children if c.returncode not in clean]
    return status or (_exit_status(codes[0]) if codes else 0)


def cmd_serve(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None:
        return 1
    if args.log_format is None and config.server.log_format != "text":
        setup_logging(args.verbose, config.server.log_format)
    if args.master_pid is None:  # once: not again in each worker of a master
        for warning in config.warnings:
            log.warning("configuration: %s", warning)
    args.host_value = args.host or config.server.host
    args.port_value = args.port if args.port is not None else config.server.port
    workers = args.workers or config.server.workers
    from tileserver.web.runtime import default_render_processes

    processes = args.render_processes or default_render_processes(config, workers)
    from tileserver.web.admin import admin_token

    try:  # before any process starts: the faces are the only readers of the environment
        token = admin_token(config.server.admin, os.environ)
    except ConfigError as exc:
        print(f"tileserver: cannot start: {exc}", file=sys.stderr)
        return 1
    if workers > 1:
        if args.port_value == 0:
            print("tileserver: --workers > 1 needs a fixed --port", file=sys.stderr)
            return 2
        return _run_workers(args, workers, processes, config.server.shutdown_timeout)
    return _run_server(
        config, args.config, args.host_value, args.port_value, args.reuse_port, processes,
        token, args.master_pid,
    )  # fmt: skip
