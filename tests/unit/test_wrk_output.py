"""benchmarks/wrk_output.py reads real wrk outputs (tests/data/wrk/README.md says how each
was made): the answers, non-2xx answers and socket errors of wrk's summary, and the
figures of wrk_paths.lua's WRKJSON line."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.wrk_output import parse_wrk, samples_from_pauses

DATA = Path(__file__).resolve().parents[1] / "data" / "wrk"


def test_a_run_with_the_script_and_no_error() -> None:
    result = parse_wrk((DATA / "hits.txt").read_text())
    assert (result.requests, result.non2xx, result.socket_errors) == (222222, 0, 0)
    figures = result.figures()
    assert figures["requests"] == 222222 and figures["paths"] == 200
    assert (figures["rps"], figures["p50_ms"], figures["p99_ms"]) == (22177.5, 1.33, 4.74)
    assert figures["non2xx"] == figures["socket_errors"] == 0


def test_non_2xx_answers_and_socket_errors_are_counted() -> None:
    result = parse_wrk((DATA / "errors.txt").read_text())
    # "Socket errors: connect 0, read 7, write 0, timeout 4", "Non-2xx or 3xx responses: 8"
    assert (result.requests, result.non2xx, result.socket_errors) == (27, 8, 11)
    figures = result.figures()
    assert (figures["err_read"], figures["err_timeout"], figures["err_status"]) == (7, 4, 8)
    assert figures["socket_errors"] == 11 and figures["non2xx"] == 8


def test_a_run_without_the_script_has_wrk_s_summary_only() -> None:
    result = parse_wrk((DATA / "plain.txt").read_text())
    assert (result.requests, result.non2xx, result.socket_errors) == (184, 184, 0)
    assert result.script is None
    with pytest.raises(ValueError, match=r"without wrk_paths\.lua"):
        result.figures()


def test_an_output_without_a_result_is_an_error() -> None:
    failed = "unable to connect to 127.0.0.1:9 Connection refused\n"
    with pytest.raises(ValueError, match="no result in wrk's output:\nunable to connect"):
        parse_wrk(failed)


def test_a_few_pauses_of_one_worker_make_the_p99_of_a_run() -> None:
    # issue 15, phase 6, run 1: 202,028 answers in 10.03 s over 32 connections, p99
    # 63.5 ms; the access log's pauses of its two workers (about 16 connections each)
    interval_ms = 10034 / (202028 / 32)
    pauses = [(240.0, 0.5), (92.0, 0.5), (69.0, 0.5), (61.0, 0.5), (52.0, 0.5)]
    found = samples_from_pauses(pauses, 32, interval_ms, 63.5)
    # 16 * (1 + proportionally many corrected samples) for the 240, 92 and 69 ms pauses
    assert found == 16 * (1 + 111) + 16 * (1 + 17) + 16 * (1 + 3)
    assert found >= 202028 // 100  # 1 % of the answers: the p99 is the pauses'


def test_pauses_shorter_than_the_threshold_add_nothing() -> None:
    assert samples_from_pauses([(30.0, 1.0), (62.9, 0.5)], 32, 1.6, 63.0) == 0
    # a worker holding a quarter of the connections stalls 8 of them
    assert samples_from_pauses([(63.0, 0.25)], 32, 1.6, 63.0) == 8
