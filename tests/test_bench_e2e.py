"""The pure parts of bench/e2e.py: percentiles, summaries, log parsing, compose parsing, tables."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

SPEC = importlib.util.spec_from_file_location("bench_e2e", Path(__file__).resolve().parent.parent / "bench" / "e2e.py")
assert SPEC is not None
assert SPEC.loader is not None
e2e = importlib.util.module_from_spec(SPEC)
sys.modules.setdefault("bench_e2e", e2e)  # dataclasses look their module up while it loads
SPEC.loader.exec_module(e2e)


def test_percentile_interpolates_and_handles_edges() -> None:
    assert e2e.percentile([], 50) is None
    assert e2e.percentile([7.0], 99) == 7.0
    assert e2e.percentile([1, 2, 3, 4], 50) == 2.5
    assert e2e.percentile(list(range(101)), 95) == 95
    assert e2e.percentile([3, 1, 2], 100) == 3


def test_parse_batch_lines_reads_key_values_only_from_batch_lines() -> None:
    log = (
        "2026-01-01 INFO celery.worker: Task received\n"
        "2026-01-01 INFO predictions.batch: batch size=8 claim_ms=1.20 preprocess_ms=30.1 "
        "inference_ms=60.2 store_ms=2.10 notify_ms=0.30\n"
        "2026-01-01 INFO predictions.batch: batch size=2 store_ms=4.5\n"
    )
    batches = e2e.parse_batch_lines(log)
    assert batches == [
        {"size": 8, "claim_ms": 1.2, "preprocess_ms": 30.1, "inference_ms": 60.2, "store_ms": 2.1, "notify_ms": 0.3},
        {"size": 2, "store_ms": 4.5},
    ]


def _record(
    i: int,
    submit: float,
    final: float | None,
    status: str = "succeeded",
    cached: bool = False,
    timings: dict[str, float] | None = None,
) -> dict[str, Any]:
    return {
        "index": i,
        "name": f"{i}.jpg",
        "submit_t": submit,
        "final_t": final,
        "latency_ms": (final - submit) * 1000 if final is not None else None,
        "status": status,
        "cached": cached,
        "http_errors": 0,
        "submit_ms": 5.0,
        "timings": timings or {"queue": 10.0, "preprocess": 2.0, "inference": 20.0, "total": 40.0},
    }


def test_level_summary_throughput_counts_and_stages() -> None:
    records = [_record(0, 0.0, 1.0), _record(1, 0.5, 2.0, status="failed"), _record(2, 1.0, 3.0, cached=True)]
    lost = {"index": 3, "name": "3.jpg", "submit_t": 1.5, "http_errors": 1}
    summary = e2e.level_summary(
        [*records, lost], n=4, batches=[{"size": 2, "store_ms": 3.0}, {"size": 1, "store_ms": 5.0}]
    )
    assert summary["final"] == 3
    assert summary["lost"] == 1
    assert summary["succeeded"] == 2
    assert summary["failed"] == 1
    assert summary["cached"] == 1
    assert summary["http_errors"] == 1
    assert summary["seconds"] == 3.0
    assert summary["images_per_s"] == pytest.approx(1.0)
    assert summary["images_per_min"] == pytest.approx(60.0)
    assert summary["latency_ms"]["p50"] == pytest.approx(1500.0)
    assert summary["stage_p50_ms"]["queue"] == 10.0
    assert summary["stage_p50_ms"]["store"] is None
    assert summary["db_write_p50_ms"] == 4.0
    assert summary["mean_batch_size"] == 1.5


def test_stack_commands_new_and_old_compose_layouts() -> None:
    new: dict[str, Any] = {
        "services": {
            "migrate": {"command": ["sh", "-c", "python manage.py migrate --noinput && python manage.py sync_models"]},
            "web": {
                "command": ["gunicorn", "imagerec.asgi:application", "--bind", "0.0.0.0:8000"],
                "environment": {"WEB_CONCURRENCY": "${BENCH_TEST_UNSET_VARIABLE:-2}"},
            },
            "worker": {"command": ["celery", "-A", "imagerec", "worker", "--concurrency=1"]},
        }
    }
    commands = e2e.stack_commands(new, 9000)
    assert commands["setup"] == [new["services"]["migrate"]["command"]]
    assert commands["web"] == ["gunicorn", "imagerec.asgi:application", "--bind", "127.0.0.1:9000"]
    assert commands["web_env"] == {"WEB_CONCURRENCY": "2"}
    old = {
        "services": {
            "web": {
                "command": 'sh -c "python manage.py migrate --noinput &&\n python manage.py sync_models &&\n'
                ' gunicorn imagerec.wsgi --bind 0.0.0.0:8000 --workers 3 --threads 4"\n',
                "environment": {"DEBUG": "false"},
            },
            "worker": {"command": "celery -A imagerec worker -Q inference"},
        }
    }
    commands = e2e.stack_commands(old, 9001)
    assert commands["setup"] == [["sh", "-c", "python manage.py migrate --noinput && python manage.py sync_models"]]
    assert commands["web"][-6:] == ["--bind", "127.0.0.1:9001", "--workers", "3", "--threads", "4"]
    assert commands["web_env"] == {}
    assert commands["worker"] == ["celery", "-A", "imagerec", "worker", "-Q", "inference"]


def test_tables_render_every_level_and_revision() -> None:
    records = [_record(i, i * 0.1, i * 0.1 + 0.2) for i in range(10)]
    level = e2e.level_summary(records, n=10, cpu={"share_pct": dict.fromkeys(e2e.GROUPS, 10.0), "other_pct": 5.0})
    table = e2e.level_table("now", {"1": level, "16": level})
    lines = table.splitlines()
    assert lines[0] == "**now**"
    assert len(lines) == 6
    assert all(line.count("|") == lines[2].count("|") for line in lines[2:])
    raw = {"batch1": {"images_per_s": 50.0, "p50_ms": 20.0}, "batched": {"images_per_s": 80.0}}
    rows = e2e.summary_rows(
        raw, {"images_per_s": 8.0}, {"baseline": {"levels": {"1": level}}, "now": {"levels": {"16": level}}}
    )
    summary = e2e.summary_table(rows, ["baseline (abc)", "now (def)"])
    assert (
        "| raw runner, batch 1 / batched (images/s, same process, decode included) | 50.0 / 80.0 | 50.0 / 80.0 |"
        in summary
    )
    assert "not run" in summary
    throughput = next(values for label, values in rows if label.startswith("service throughput at 16"))
    assert throughput[1].endswith("(" + f"{100 * level['images_per_s'] / 80:.0f} %)")


def test_stack_commands_register_the_models_as_compose_does() -> None:
    compose = e2e._load_yaml(Path(__file__).resolve().parent.parent / "docker-compose.yml")

    setup = e2e.stack_commands(compose, 9000)["setup"]

    assert setup[-1] == ["python", "manage.py", "sync_models"]  # after the migrations


def _level(images_per_s: float, p50: float, lost: int = 0) -> dict[str, Any]:
    return {"images_per_s": images_per_s, "latency_ms": {"p50": p50}, "lost": lost, "failed": 0, "http_errors": 0}


def test_frontdoor_goals_compare_each_run_with_its_own_raw_runner() -> None:
    raw = {"batch1": {"images_per_s": 70.0, "p50_ms": 14.0}, "batched": {"images_per_s": 120.0}}
    raw_cpu1 = {"batch1": {"images_per_s": 40.0, "p50_ms": 12.0}, "batched": {"images_per_s": 80.0}}
    revisions = {
        "now": {"levels": {"1": _level(20, 22), "16": _level(84, 300)}, "top1_agreement": {"same": 2, "compared": 2}},
        "now-pinned": {
            "levels": {"1": _level(15, 30), "16": _level(60, 400, lost=1)},
            "top1_agreement": {"same": 2, "compared": 2},
        },
    }

    goals = {g["measure"].split(":")[0]: g for g in e2e.frontdoor_goals(raw, raw_cpu1, revisions)}

    shared = goals["both cores shared, one photo per request"]
    assert shared["value"].endswith("= 70%")
    assert shared["met"]
    pinned = next(g for m, g in goals.items() if m.startswith("worker pinned"))
    assert pinned["value"].endswith("= 75%")
    assert not pinned["met"]
    assert goals["one photo alone (shared)"]["met"]  # 22 = 14 + 8
    assert not goals["one photo alone (pinned)"]["met"]  # 30 = 12 + 18
    everything = next(g for m, g in goals.items() if m.startswith("lost"))
    assert everything["value"] == "1; top-1 4/4"
    assert not everything["met"]


def _pinned_goal(drain: dict[str, Any] | None) -> dict[str, Any]:
    raw_cpu1 = {"batch1": {"images_per_s": 40.0, "p50_ms": 12.0}, "batched": {"images_per_s": 80.0}}
    pinned = {"levels": {"16": _level(63, 400)}, "drain": drain}
    goals = e2e.frontdoor_goals({}, raw_cpu1, {"now-pinned": pinned})
    return next(g for g in goals if g["measure"].startswith("worker pinned"))


def test_the_pinned_goal_divides_by_what_the_worker_drained_alone() -> None:
    goal = _pinned_goal({"images_per_s": 70.0})

    assert "drains alone" in goal["measure"]
    assert goal["value"].startswith("63.0 of 70.0 = 90%")
    assert "drain = 88 % of the raw runner's 80.0 on CPU 1" in goal["value"]
    assert goal["goal"] == ">= 90 %"
    assert goal["met"]
    assert not _pinned_goal({"images_per_s": 72.0})["met"]  # 63 / 72 = 87.5 %


def test_without_a_clean_drain_the_pinned_goal_falls_back_to_the_raw_runner_on_cpu_1() -> None:
    for drain in (None, {"error": "cancel_consumer inference: no worker answered OK"}, {"images_per_s": None}):
        goal = _pinned_goal(drain)
        assert "no clean drain measured" in goal["measure"]
        assert goal["value"] == "63.0 of 80.0 = 79%"
        assert not goal["met"]


def test_drain_rate_spans_first_claim_to_last_result_and_only_when_nothing_is_missing() -> None:
    submitted = [{"index": i, "id": f"id-{i}", "status": "pending"} for i in range(60)]
    batches = [{"size": 16.0}, {"size": 16.0}, {"size": 16.0}, {"size": 12.0}]
    rows = {"final": 60.0, "succeeded": 60.0, "failed": 0.0, "first_started": 1000.0, "last_completed": 1000.8}

    clean = e2e.drain_summary(60, rows, submitted, batches)
    assert clean["images_per_s"] == pytest.approx(75.0)
    assert (clean["lost"], clean["failed"], clean["http_errors"], clean["batches"]) == (0, 0, 0, 4)
    assert clean["mean_batch_size"] == 15.0

    one_failed = e2e.drain_summary(60, rows | {"succeeded": 59.0, "failed": 1.0}, submitted, batches)
    assert one_failed["images_per_s"] is None
    assert one_failed["failed"] == 1
    refused = [*submitted[:59], {"index": 59, "error": "POST 503: busy"}]
    one_refused = e2e.drain_summary(60, rows | {"final": 59.0, "succeeded": 59.0}, refused, batches)
    assert one_refused["images_per_s"] is None
    assert (one_refused["lost"], one_refused["http_errors"]) == (1, 1)


def test_the_final_table_shows_the_drain_beside_the_raw_runner_on_cpu_1() -> None:
    raw_cpu1 = {"batch1": {"images_per_s": 40.0}, "batched": {"images_per_s": 80.0}}
    drain = {"images_per_s": 70.0}
    revisions = {"now": {"levels": {}}, "now-pinned": {"levels": {}, "drain": drain}}

    rows = dict(e2e.summary_rows({}, None, revisions, raw_cpu1))

    assert rows[next(label for label in rows if label.startswith("worker alone on CPU 1"))] == [
        "not run",
        "70.0 (88 % of 80.0)",
    ]


def test_the_drain_line_under_the_pinned_table_says_what_was_drained_or_why_not() -> None:
    raw_cpu1 = {"batch1": {"images_per_s": 40.0}, "batched": {"images_per_s": 80.0}}
    drain = {"images": 60, "images_per_s": 70.0, "batches": 4, "mean_batch_size": 15.0, "succeeded": 60}
    drain |= {"failed": 0, "lost": 0, "http_errors": 0, "cached": 0}

    line = e2e.drain_line(drain, raw_cpu1)
    assert "draining 60 queued photos" in line
    assert "70.0 images/s, 88 % of the raw runner's 80.0 on CPU 1" in line
    assert "4 batches of 15.0" in line
    failed = e2e.drain_line({"error": "cancel_consumer inference: no worker answered OK"}, raw_cpu1)
    assert failed.endswith("failed (cancel_consumer inference: no worker answered OK)")


def test_the_final_table_has_a_row_per_number_of_images_per_request() -> None:
    records = [_record(i, i * 0.1, i * 0.1 + 0.2) for i in range(10)]
    level = e2e.level_summary(records, n=10)
    many = level | {"clients": 16}
    now = {"levels": {"16": level}, "per_request": {"8": many, "20": many}}
    rows = e2e.summary_rows({}, None, {"baseline": {"levels": {"16": level}}, "now": now})
    per_request = {label: values for label, values in rows if "per request at 16 clients" in label}
    assert [label.split(" per request")[0] for label in per_request] == ["1 image", "8 images", "20 images"]
    assert all(values[0] == "not run" and values[1] != "not run" for values in per_request.values())
    assert e2e.parse_args(["--images-per-request", "1,8,20"]).images_per_request == [1, 8, 20]
