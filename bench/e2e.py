"""End-to-end benchmark: the real stack on this machine, real photos through the HTTP API.

    python bench/e2e.py                       # N=600, concurrency 1,16,64, baseline 8597690 and now
    BENCH_N=100 BENCH_LEVELS=1,16 BENCH_BASELINE=none python bench/e2e.py   # quick

Starts PostgreSQL-backed web + worker(s) exactly as docker-compose.yml commands them
(binding 127.0.0.1), submits N distinct photos (training.photoset) at each concurrency
level with a fresh set of users, waits until every one is final and reports throughput,
client latency, per-stage p50s and CPU share per component. In the same run it measures
the raw runner (Classifier.classify in one process, batch 1 and batched) and a seed-style
Keras ``model.predict()`` per image, and runs the identical client against a baseline git
revision (checked out as a worktree). The pinned run (worker on CPU 1) also measures what
its worker drains alone: N photos queued while it does not consume, then drained with no
web traffic (``measure_drain``), the denominator of issue 25's pinned goal. Writes
bench/e2e.json. Only talks to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var" / "bench"
DEFAULT_BASELINE = "8597690"
FLAGS_OF_INTEREST = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "amx_tile")
BATCH_LINE = re.compile(r"\bbatch size=\d+")
KV = re.compile(r"(\w+)=([\d.]+)")
STAGES = ("queue", "preprocess", "inference", "store", "total")
GROUPS = ("web", "worker", "postgres", "redis", "client")
WARMUP_IMAGES = 5
# Scratch Redis databases and PostgreSQL database prefix (flushed / dropped by the run).
CACHE_DB = os.environ.get("BENCH_CACHE_DB", "11")
BROKER_DB = os.environ.get("BENCH_BROKER_DB", "12")
DATABASE_PREFIX = os.environ.get("BENCH_DATABASE_PREFIX", "imagerec_bench")


# --- pure helpers (unit-tested) ------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100) of ``values``; None when empty."""
    data = sorted(v for v in values if v is not None)
    if not data:
        return None
    if len(data) == 1:
        return float(data[0])
    rank = (len(data) - 1) * q / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return float(data[low] + (data[high] - data[low]) * (rank - low))


def summarize(values: list[float]) -> dict[str, float | None]:
    return {
        "count": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "mean": statistics.fmean(values) if values else None,
    }


def parse_batch_lines(text: str) -> list[dict[str, float]]:
    """The ``batch size=8 claim_ms=1.2 ... store_ms=2.1`` lines of a worker log, as dicts."""
    return [{k: float(v) for k, v in KV.findall(line)} for line in text.splitlines() if BATCH_LINE.search(line)]


def level_summary(records: list[dict], *, n: int, cpu: dict | None = None, batches: list[dict] | None = None) -> dict:
    """Figures of one concurrency level from the client records (+ CPU and worker log)."""
    final = [r for r in records if r.get("final_t") is not None]
    starts = [r["submit_t"] for r in records if r.get("submit_t") is not None]
    span = (max(r["final_t"] for r in final) - min(starts)) if final and starts else None
    done = len(final)
    latency = [r["latency_ms"] for r in final]
    stages = {}
    for stage in STAGES:
        values = [
            r["timings"][stage]
            for r in final
            if isinstance(r.get("timings"), dict) and r["timings"].get(stage) is not None
        ]
        stages[stage] = percentile(values, 50)
    batches = batches or []
    store = [b["store_ms"] for b in batches if "store_ms" in b]
    sizes = [b["size"] for b in batches if "size" in b]
    return {
        "images": n,
        "final": done,
        "succeeded": sum(r.get("status") == "succeeded" for r in records),
        "failed": sum(r.get("status") == "failed" for r in records),
        "lost": n - done,
        "http_errors": sum(r.get("http_errors", 0) for r in records),
        "reconnects": sum(r.get("reconnects", 0) for r in records),
        "cached": sum(bool(r.get("cached")) for r in records),
        "seconds": span,
        "images_per_s": done / span if span else None,
        "images_per_min": 60 * done / span if span else None,
        "latency_ms": summarize(latency),
        "submit_ms": summarize([r["submit_ms"] for r in records if r.get("submit_ms") is not None]),
        "stage_p50_ms": stages,
        "db_write_p50_ms": percentile(store, 50) if store else None,
        "batches": len(batches),
        "mean_batch_size": statistics.fmean(sizes) if sizes else None,
        "cpu": cpu,
    }


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def level_table(title: str, levels: dict[str, dict]) -> str:
    """Markdown table, one row per concurrency level."""
    head = (
        "| concurrency | images/min | images/s | p50 ms | p95 ms | p99 ms | queue p50 | preprocess p50 "
        "| inference p50 | db write p50 (per batch) | mean batch | CPU web | CPU worker | CPU postgres "
        "| CPU redis | CPU client | CPU other processes | cached | HTTP errors / failed / lost |"
    )
    lines = [f"**{title}**", "", head, "|" + "---|" * (head.count("|") - 1)]
    for level, s in levels.items():
        lat, st, cpu = s["latency_ms"], s["stage_p50_ms"], s.get("cpu") or {}
        share = cpu.get("share_pct", {})
        db = s["db_write_p50_ms"]
        db_text = _fmt(db, 1) if db is not None else ("n/a" if st.get("store") is None else f"{st['store']:.1f} (API)")
        lines.append(
            f"| {level} | {_fmt(s['images_per_min'])} | {_fmt(s['images_per_s'], 1)} | {_fmt(lat['p50'])} "
            f"| {_fmt(lat['p95'])} | {_fmt(lat['p99'])} | {_fmt(st['queue'])} | {_fmt(st['preprocess'], 1)} "
            f"| {_fmt(st['inference'], 1)} | {db_text} | {_fmt(s['mean_batch_size'], 1)} "
            + " ".join(f"| {_fmt(share.get(g), 0)} %" for g in GROUPS)
            + f" | {_fmt(cpu.get('other_pct'), 0)} % | {s['cached']} "
            f"| {s['http_errors']} / {s['failed']} / {s['lost']} |"
        )
    return "\n".join(lines)


def _pct(part: float | None, whole: float | None) -> str:
    return f"{100 * part / whole:.0f} %" if part and whole else "n/a"


def summary_rows(
    raw: dict | None, keras: dict | None, revisions: dict[str, dict], raw_pinned: dict | None = None
) -> list[tuple[str, list[str]]]:
    """Rows of the one-run summary: (label, [value per revision])."""
    rows: list[tuple[str, list[str]]] = []
    raw = raw or {}
    best_raw = (
        max((raw.get("batch1", {}).get("images_per_s") or 0, raw.get("batched", {}).get("images_per_s") or 0)) or None
    )
    raw_text = (
        f"{_fmt(raw.get('batch1', {}).get('images_per_s'), 1)} / {_fmt(raw.get('batched', {}).get('images_per_s'), 1)}"
    )
    rows.append(
        ("raw runner, batch 1 / batched (images/s, same process, decode included)", [raw_text] * len(revisions))
    )
    levels_of = {name: rev.get("levels", {}) for name, rev in revisions.items()}
    for level in ("16", "64"):
        values = []
        for name in revisions:
            s = levels_of[name].get(level)
            values.append(f"{_fmt(s['images_per_s'], 1)} ({_pct(s['images_per_s'], best_raw)})" if s else "not run")
        rows.append((f"service throughput at {level} (images/s, % of best raw)", values))
    rows += _per_request_rows(revisions, best_raw)
    if any(rev.get("drain") for rev in revisions.values()):
        raw_cpu1 = _best_raw(raw_pinned or {}) or None
        values = []
        for rev in revisions.values():
            d = rev.get("drain") or {}
            if d.get("images_per_s"):
                values.append(f"{d['images_per_s']:.1f} ({_pct(d['images_per_s'], raw_cpu1)} of {_fmt(raw_cpu1, 1)})")
            else:
                values.append("failed" if d else "not run")
        rows.append(("worker alone on CPU 1 draining N queued photos (images/s, % of the raw runner on CPU 1)", values))
    values = []
    raw_p50 = raw.get("batch1", {}).get("p50_ms")
    for name in revisions:
        s = levels_of[name].get("1")
        if s and s["latency_ms"]["p50"] is not None:
            minus = s["latency_ms"]["p50"] - raw_p50 if raw_p50 is not None else None
            values.append(f"{_fmt(s['latency_ms']['p50'])} (+{_fmt(minus)})")
        else:
            values.append("not run")
    rows.append(("one image at a time: p50 (ms) and minus raw single-image p50", values))
    values = []
    for name in revisions:
        s = levels_of[name].get("16")
        values.append(_fmt(s["stage_p50_ms"]["queue"]) if s else "not run")
    rows.append(("queue wait p50 at 16 (ms)", values))
    values = []
    keras_ips = (keras or {}).get("images_per_s")
    for name in revisions:
        levels = levels_of[name]
        best = max((s["images_per_s"] or 0 for s in levels.values()), default=0)
        values.append(
            f"{best / keras_ips:.2f}x ({best:.1f} vs {keras_ips:.1f} images/s)" if best and keras_ips else "n/a"
        )
    rows.append(("service (best level) / model.predict() per image", values))
    values = []
    for name in revisions:
        rev = revisions[name]
        agree = rev.get("top1_agreement")
        values.append(f"{agree['same']}/{agree['compared']}" if agree else "n/a")
    rows.append(("service top-1 = raw runner top-1", values))
    return rows


def drain_line(drain: dict, raw_pinned: dict | None) -> str:
    """One sentence on the worker draining N queued photos alone on CPU 1."""
    if drain.get("error"):
        return f"Worker alone on CPU 1, draining queued photos: failed ({drain['error'][:500]})"
    raw_cpu1 = _best_raw(raw_pinned or {}) or None
    versus = (
        f", {_pct(drain['images_per_s'], raw_cpu1)} of the raw runner's {raw_cpu1:.1f} on CPU 1" if raw_cpu1 else ""
    )
    return (
        f"Worker alone on CPU 1, draining {drain['images']} queued photos (no web traffic): "
        f"{_fmt(drain['images_per_s'], 1)} images/s{versus}; {drain['batches']} batches of "
        f"{_fmt(drain['mean_batch_size'], 1)} on average; {drain['succeeded']} ok, {drain['failed']} failed, "
        f"{drain['lost']} lost, {drain['http_errors']} HTTP errors, {drain['cached']} cached"
    )


def _per_request_rows(revisions: dict[str, dict], best_raw: float | None) -> list[tuple[str, list[str]]]:
    """One row per number of images per request (1 from the levels at the same clients)."""
    runs = {name: rev.get("per_request", {}) for name, rev in revisions.items()}
    ks = sorted({int(k) for per in runs.values() for k in per})
    if not ks:
        return []
    clients = next(s["clients"] for per in runs.values() for s in per.values())
    rows = []
    for k in [1, *ks]:
        values = []
        for name, rev in revisions.items():
            s = rev.get("levels", {}).get(str(clients)) if k == 1 and runs[name] else runs[name].get(str(k))
            values.append(f"{_fmt(s['images_per_s'], 1)} ({_pct(s['images_per_s'], best_raw)})" if s else "not run")
        rows.append(
            (
                f"{k} image{'s' if k > 1 else ''} per request at {clients} client{'s' if clients > 1 else ''} "
                "(images/s, % of best raw)",
                values,
            )
        )
    return rows


def summary_table(rows: list[tuple[str, list[str]]], headers: list[str]) -> str:
    lines = ["| measured in one run | " + " | ".join(headers) + " |", "|---|" + "---|" * len(headers)]
    lines += [f"| {label} | " + " | ".join(values) + " |" for label, values in rows]
    return "\n".join(lines)


def _best(levels: dict[str, dict]) -> float:
    return max((s.get("images_per_s") or 0 for s in levels.values()), default=0.0)


def _best_raw(raw: dict) -> float:
    return max(raw.get("batch1", {}).get("images_per_s") or 0, raw.get("batched", {}).get("images_per_s") or 0)


def frontdoor_goals(raw: dict | None, raw_pinned: dict | None, revisions: dict[str, dict]) -> list[dict]:
    """Issue 25's four figures from one run: (measure, value, goal, met)."""
    goals: list[dict] = []
    shared = revisions.get("now", {}).get("levels", {})
    pinned = revisions.get("now-pinned", {}).get("levels", {})
    raw = raw or {}
    best_raw = _best_raw(raw)
    if shared and best_raw:
        share = _best(shared) / best_raw
        goals.append({
            "measure": "both cores shared, one photo per request: best images/s, % of the raw runner's best",
            "value": f"{_best(shared):.1f} of {best_raw:.1f} = {share:.0%}", "goal": ">= 65 %", "met": share >= 0.65,
        })  # fmt: skip
    raw_pinned = raw_pinned or {}
    raw_cpu1 = _best_raw(raw_pinned)
    drain = (revisions.get("now-pinned", {}).get("drain") or {}).get("images_per_s")
    if pinned and drain:
        share = _best(pinned) / drain
        beside = f" (drain = {_pct(drain, raw_cpu1)} of the raw runner's {raw_cpu1:.1f} on CPU 1)" if raw_cpu1 else ""
        goals.append({
            "measure": "worker pinned to CPU 1, web server and clients on CPU 0: best images/s, % of what that "
            "worker drains alone (N queued photos, no web traffic; the issue's drained 89 % of the raw runner)",
            "value": f"{_best(pinned):.1f} of {drain:.1f} = {share:.0%}{beside}", "goal": ">= 90 %",
            "met": share >= 0.9,
        })  # fmt: skip
    elif pinned and raw_cpu1:  # no clean drain: the raw runner on CPU 1 stands in, at the 89 %
        share = _best(pinned) / raw_cpu1
        goals.append({
            "measure": "worker pinned to CPU 1, web server and clients on CPU 0: best images/s, % of the raw "
            "runner's best on CPU 1 (no clean drain measured; the issue's worker drained 89 % of it)",
            "value": f"{_best(pinned):.1f} of {raw_cpu1:.1f} = {share:.0%}", "goal": ">= 90 % of the worker alone "
            "(~80 % of raw on that core)", "met": share >= 0.8,
        })  # fmt: skip
    raw_p50 = raw.get("batch1", {}).get("p50_ms")
    for name, levels, reference in (
        ("shared", shared, raw_p50),
        ("pinned", pinned, (raw_pinned or {}).get("batch1", {}).get("p50_ms")),
    ):
        one = levels.get("1")
        if one and one["latency_ms"]["p50"] is not None and reference:
            extra = one["latency_ms"]["p50"] - reference
            goals.append({
                "measure": f"one photo alone ({name}): p50 submit to result, minus the raw runner's single-image p50",
                "value": f"{one['latency_ms']['p50']:.0f} ms = raw {reference:.0f} + {extra:.0f} ms",
                "goal": "<= raw + 10 ms", "met": extra <= 10,
            })  # fmt: skip
    everything = [s for rev in (shared, pinned) for s in rev.values()]
    if everything:
        bad = sum(s["lost"] + s["failed"] + s["http_errors"] for s in everything)
        agreement = [revisions[t].get("top1_agreement") for t in ("now", "now-pinned") if t in revisions]
        same = sum(a["same"] for a in agreement if a)
        compared = sum(a["compared"] for a in agreement if a)
        goals.append({
            "measure": "lost + failed + HTTP errors, and top-1 equal to the raw runner's, every level",
            "value": f"{bad}; top-1 {same}/{compared}", "goal": "0; all", "met": bad == 0 and same == compared,
        })  # fmt: skip
    return goals


def goals_table(goals: list[dict], cpu_line: str) -> str:
    lines = [f"Issue 25, the front door ({cpu_line}; one run, shared machine)", "| measure | value | goal | met |",
             "|---|---|---|---|"]  # fmt: skip
    lines += [f"| {g['measure']} | {g['value']} | {g['goal']} | {'yes' if g['met'] else 'no'} |" for g in goals]
    return "\n".join(lines)


def frontdoor_budget() -> dict | None:
    """The web process's CPU per request by stage now (bench/frontdoor.py, a short run),
    printed beside the 'before' budget kept in bench/frontdoor.json."""
    out = ROOT / "bench" / "frontdoor.json"
    argv = [sys.executable, str(ROOT / "bench" / "frontdoor.py"), "--n", env_default("BENCH_FRONTDOOR_N", "60"),
            "--label", "now"]  # fmt: skip
    print("front door CPU budget by stage (bench/frontdoor.py) ...", flush=True)
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(f"  bench/frontdoor.py failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}", flush=True)
        return None
    runs = json.loads(out.read_text()).get("runs", {})
    before, now = runs.get("before"), runs.get("now")
    if not (before and now):
        return None
    print(f"\nCPU ms per request in the web process, before ({before['revision']}) -> now ({now['revision']})")
    print("| stage | " + " | ".join(now["paths"]) + " |")
    print("|---|" + "---|" * len(now["paths"]))
    stages = [stage for figures in now["paths"].values() for stage in figures["stages_ms"]]
    for stage in dict.fromkeys([*stages, "total"]):
        cells = []
        for path, figures in now["paths"].items():
            old = before["paths"].get(path, {}).get("stages_ms", {}).get(stage)
            new = figures["stages_ms"].get(stage)
            cells.append(f"{_fmt(old, 2)} -> {_fmt(new, 2)}")
        print(f"| {stage} | " + " | ".join(cells) + " |")
    return {"before": before, "now": now}


def interpolate(value: str) -> str:
    """Compose-style ``${VAR:-default}`` / ``${VAR}`` from this process's environment."""

    def repl(match: re.Match) -> str:
        name, default = match.group(1), match.group(3) or ""
        return os.environ.get(name) or default

    return re.sub(r"\$\{(\w+)(:?-([^}]*))?\}", repl, value)


def stack_commands(compose: dict, port: int) -> dict[str, Any]:
    """migrate steps, web and worker argv from a parsed docker-compose.yml.

    Handles both the one-shot ``migrate`` service (list command) and an older web command
    ``sh -c "migrate && ... && gunicorn ..."``: its steps before the last become setup steps.
    """
    services = compose["services"]
    bind = f"127.0.0.1:{port}"

    def argv(command: Any) -> list[str]:
        return shlex.split(command) if isinstance(command, str) else [str(a) for a in command]

    setup: list[list[str]] = []
    for one_shot in ("migrate", "models"):  # models: sync_models, in its own service since issue 21
        if one_shot in services:
            setup.append(argv(services[one_shot]["command"]))
    web = argv(services["web"]["command"])
    if web[:2] == ["sh", "-c"]:
        steps = [s.strip() for s in web[2].split("&&")]
        if len(steps) > 1:
            setup.append(["sh", "-c", " && ".join(steps[:-1])])
        web = shlex.split(steps[-1])
    web = [a.replace("0.0.0.0:8000", bind) for a in web]
    environment = services["web"].get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    web_env = {k: interpolate(str(v)) for k, v in environment.items() if k == "WEB_CONCURRENCY"}
    return {"setup": setup, "web": web, "web_env": web_env, "worker": argv(services["worker"]["command"])}


# --- machine / git ---------------------------------------------------------------------


def machine_info() -> dict:
    model, flags = "", set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    import psutil

    return {
        "cpu_model": model or platform.processor(),
        "cores": os.cpu_count(),
        "flags": [f for f in FLAGS_OF_INTEREST if f in flags],
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def git_revision(path: Path) -> dict:
    def run(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=path, capture_output=True, text=True, check=False).stdout.strip()

    dirty = [line for line in run("status", "--porcelain", "--untracked-files=no").splitlines() if line]
    return {"commit": run("rev-parse", "HEAD"), "short": run("rev-parse", "--short", "HEAD"), "dirty_files": len(dirty)}


# --- CPU accounting -------------------------------------------------------------------


class CpuMeter:
    """CPU seconds (user+system) per component over an interval, sampled every 0.5 s so
    short-lived processes (a PostgreSQL backend per connection) are mostly counted."""

    def __init__(self, roots: dict[str, list[int]]) -> None:
        import psutil

        self.psutil = psutil
        self.roots = roots
        self.base: dict[tuple, float] = {}
        self.last: dict[tuple, float] = {}
        self.group_of: dict[tuple, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _processes(self) -> dict[str, list]:
        ps = self.psutil
        found: dict[str, list] = {g: [] for g in GROUPS}
        for group in ("web", "worker"):
            for pid in self.roots.get(group, []):
                with contextlib.suppress(ps.Error):
                    root = ps.Process(pid)
                    found[group] += [root, *root.children(recursive=True)]
        for proc in ps.process_iter(["name"]):
            name = proc.info.get("name") or ""
            if name.startswith("postgres"):
                found["postgres"].append(proc)
            elif name.startswith("redis-server"):
                found["redis"].append(proc)
        found["client"].append(ps.Process())
        return found

    def _sample(self) -> dict[tuple, float]:
        seen: dict[tuple, float] = {}
        for group, procs in self._processes().items():
            for proc in procs:
                with contextlib.suppress(self.psutil.Error):
                    times = proc.cpu_times()
                    key = (proc.pid, proc.create_time())
                    seen[key] = times.user + times.system
                    self.group_of.setdefault(key, group)
        return seen

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            self.last.update(self._sample())

    def start(self) -> None:
        self.base = self._sample()
        self.last = dict(self.base)
        self.machine0 = self.psutil.cpu_times()
        self.t0 = time.monotonic()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self, images: int) -> dict:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self.last.update(self._sample())
        wall = time.monotonic() - self.t0
        machine1 = self.psutil.cpu_times()
        cores = os.cpu_count() or 1
        seconds = dict.fromkeys(GROUPS, 0.0)
        for key, value in self.last.items():
            seconds[self.group_of[key]] += max(0.0, value - self.base.get(key, 0.0))
        busy0 = sum(self.machine0) - self.machine0.idle - getattr(self.machine0, "iowait", 0)
        busy1 = sum(machine1) - machine1.idle - getattr(machine1, "iowait", 0)
        return {
            "wall_s": wall,
            "cores": cores,
            "cpu_s": seconds,
            "share_pct": {g: 100 * s / (wall * cores) for g, s in seconds.items()},
            "cpu_ms_per_image": {g: 1000 * s / images for g, s in seconds.items()} if images else {},
            "machine_busy_pct": 100 * (busy1 - busy0) / (wall * cores),
            # Anything else on the machine (other jobs share these cores): a noisy-run warning.
            "other_pct": max(0.0, 100 * ((busy1 - busy0) - sum(seconds.values())) / (wall * cores)),
        }


# --- the stack --------------------------------------------------------------------------


def _run(argv: list[str], *, env: dict | None = None, cwd: Path = ROOT, check: bool = True) -> str:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(
            f"{shlex.join(argv)} failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )
    return done.stdout


@dataclass
class Stack:
    """PostgreSQL database + Redis dbs + web + worker(s) for one source tree."""

    tag: str
    src: Path
    database: str
    port: int
    workers: int = 1
    second_host: bool = False
    label: str = ""
    # (web CPU, worker CPU): the web server on one core, the worker on the other (taskset)
    pin: tuple[int, int] | None = None
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    @property
    def run_dir(self) -> Path:
        """Logs and users of this stack: var/bench/<tag>[-<label>]/."""
        return VAR / (f"{self.tag}-{self.label}" if self.label else self.tag)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, **extra: str) -> dict[str, str]:
        venv_bin = Path(sys.executable).parent
        env = dict(os.environ)
        env.update(
            PATH=f"{venv_bin}:{env.get('PATH', '/usr/bin:/bin')}",
            VIRTUAL_ENV=str(venv_bin.parent),
            DATABASE_URL=f"postgres://root@127.0.0.1:5432/{self.database}",
            CELERY_BROKER_URL=f"redis://127.0.0.1:6379/{BROKER_DB}",
            CACHE_URL=f"redis://127.0.0.1:6379/{CACHE_DB}",
            VAR_DIR=str(VAR),
            MEDIA_ROOT=str(VAR / "media"),
            STATIC_ROOT=str(VAR / f"static-{self.tag}"),
            MODEL_DIR=str(self.src / "models"),
            DEBUG="false",
            SECRET_KEY="bench-e2e-only-secret-key-not-for-production-0123456789abcdef",  # noqa: S106 - scratch stack
            ALLOWED_HOSTS="127.0.0.1",
            CSRF_TRUSTED_ORIGINS=f"http://127.0.0.1:{self.port}",
            SECURE_SSL_REDIRECT="false",
            SESSION_COOKIE_SECURE="false",
            CSRF_COOKIE_SECURE="false",
            THROTTLE_SUBMIT="1000000/min",
            THROTTLE_READ="1000000/min",
            LOG_LEVEL="WARNING",
            RESULT_CACHE="off",
            DJANGO_SUPERUSER_USERNAME="admin",
            DJANGO_SUPERUSER_PASSWORD="bench-e2e-Admin-password-4711",  # noqa: S106 - scratch database
            TF_CPP_MIN_LOG_LEVEL="2",
            PYTHONUNBUFFERED="1",
        )
        env.pop("DJANGO_SETTINGS_MODULE", None)
        env.update(extra)
        return env

    def _spawn(self, name: str, argv: list[str], env: dict) -> None:
        log = self.run_dir / f"{name}.log"
        self.logs[name] = log
        with open(log, "ab") as out:
            self.procs[name] = subprocess.Popen(
                argv, cwd=self.src, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def start(self, levels: list[int], extra_groups: dict[str, int] | None = None) -> dict[str, list[dict]]:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for old in self.run_dir.glob("*.log"):
            old.unlink()
        shutil.rmtree(VAR / "media", ignore_errors=True)
        (VAR / "media").mkdir(parents=True)
        compose = _load_yaml(self.src / "docker-compose.yml")
        commands = stack_commands(compose, self.port)
        self.commands = commands
        env = self.env()
        done = subprocess.run(
            ["dropdb", "-h", "127.0.0.1", "-U", "root", "--if-exists", "--force", self.database],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            _run(["dropdb", "-h", "127.0.0.1", "-U", "root", "--if-exists", self.database])
        _run(["createdb", "-h", "127.0.0.1", "-U", "root", self.database])
        for db in dict.fromkeys((CACHE_DB, BROKER_DB)):
            _run(["redis-cli", "-h", "127.0.0.1", "-n", db, "flushdb"])
        for step in commands["setup"]:
            _run(step, env=env, cwd=self.src)
        _run(["python", "manage.py", "collectstatic", "--noinput", "-v0"], env=env, cwd=self.src)
        users = self._create_users(levels, env, extra_groups or {})

        web_argv, worker_argv = commands["web"], commands["worker"]
        if self.pin is not None:
            web_argv = ["taskset", "-c", str(self.pin[0]), *web_argv]
            worker_argv = ["taskset", "-c", str(self.pin[1]), *worker_argv]
        self._spawn("web", web_argv, self.env(**commands["web_env"]))
        worker_env = self.env(LOG_LEVEL="INFO")
        self._spawn("worker", worker_argv, worker_env)
        if self.workers > 1 or self.second_host:
            argv = [*commands["worker"], "-n", "worker2@%h"]
            env2 = dict(worker_env)
            if self.second_host:
                host2 = VAR / "host2"
                shutil.rmtree(host2, ignore_errors=True)
                host2.mkdir(parents=True)
                (host2 / "media").symlink_to(VAR / "media", target_is_directory=True)
                env2.update(VAR_DIR=str(host2), MEDIA_ROOT=str(host2 / "media"), HOSTNAME="bench-host2")
                argv = [*commands["worker"], "-n", "worker@bench-host2"]
            self._spawn("worker2", argv, env2)
        return users

    def _create_users(self, levels: list[int], env: dict, extra_groups: dict[str, int]) -> dict[str, list[dict]]:
        wanted = {"warmup": 1, **{str(level): level for level in levels}, **extra_groups}
        out = self.run_dir / "users.json"
        script = f"""
import json
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
wanted = {wanted!r}
users = {{}}
for group, count in wanted.items():
    users[group] = []
    for i in range(count):
        user, _ = get_user_model().objects.get_or_create(username=f'e2e{self.tag}-{{group}}-{{i}}')
        users[group].append({{'username': user.username, 'token': Token.objects.get_or_create(user=user)[0].key}})
open({str(out)!r}, 'w').write(json.dumps(users))
"""
        _run(["python", "manage.py", "shell", "-c", script], env=env, cwd=self.src)
        return json.loads(out.read_text())

    def wait_ready(self, timeout: float) -> float:
        began = time.monotonic()
        last = ""
        while time.monotonic() - began < timeout:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{self.tag}: {name} exited ({proc.returncode}):\n{_tail(self.logs[name])}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/health/ready", timeout=5) as response:  # noqa: S310
                    if response.status == 200:
                        return time.monotonic() - began
            except urllib.error.HTTPError as error:
                last = error.read().decode(errors="replace")[:500]
            except (OSError, urllib.error.URLError) as error:
                last = str(error)
            time.sleep(1)
        logs = "\n".join(f"--- {n}\n{_tail(p)}" for n, p in self.logs.items())
        raise RuntimeError(f"{self.tag}: /health/ready not 200 after {timeout:.0f} s (last: {last})\n{logs}")

    def roots(self) -> dict[str, list[int]]:
        return {
            "web": [self.procs["web"].pid],
            "worker": [p.pid for n, p in self.procs.items() if n.startswith("worker")],
        }

    def log_offsets(self) -> dict[str, int]:
        return {n: p.stat().st_size for n, p in self.logs.items() if n.startswith("worker") and p.exists()}

    def worker_log_since(self, offsets: dict[str, int], level: str) -> list[dict]:
        batches: list[dict] = []
        for name, start in offsets.items():
            with open(self.logs[name], "rb") as handle:
                handle.seek(start)
                text = handle.read().decode(errors="replace")
            suffix = "" if name == "worker" else f"-{name}"
            (self.run_dir / f"worker-{level}{suffix}.log").write_text(text)
            batches += parse_batch_lines(text)
        return batches

    def consumer(self, action: str) -> None:
        """``cancel`` or ``add``: the worker stops / starts taking messages from its queue
        (celery control; the only worker on this scratch broker database)."""
        argv = self.commands["worker"]
        queue = argv[argv.index("-Q") + 1] if "-Q" in argv else "celery"
        out = _run(["python", "-m", "celery", "-A", "imagerec", "control", f"{action}_consumer", queue],
                   env=self.env(), cwd=self.src)  # fmt: skip
        if "OK" not in out:
            raise RuntimeError(f"{self.tag}: {action}_consumer {queue}: no worker answered OK:\n{out}")

    def drain_rows(self, ids: list[str]) -> dict[str, float | None]:
        """Counts and the first claim / last result (epoch seconds) of these predictions."""
        listed = ",".join(f"'{i}'" for i in ids if re.fullmatch(r"[0-9a-f-]{36}", i))
        columns = (
            "count(*) FILTER (WHERE status IN ('succeeded', 'failed')), "
            "count(*) FILTER (WHERE status = 'succeeded'), count(*) FILTER (WHERE status = 'failed'), "
            "extract(epoch FROM min(started_at)), extract(epoch FROM max(completed_at))"
        )
        where = f"id IN ({listed or 'NULL'})"  # UUIDs only (checked above)
        query = f"SELECT {columns} FROM predictions_prediction WHERE {where}"  # noqa: S608 - UUIDs only
        out = _run(["psql", "-h", "127.0.0.1", "-U", "root", "-d", self.database, "-AtX", "-c", query])
        values = [float(v) if v else None for v in out.strip().split("|")]
        return dict(zip(("final", "succeeded", "failed", "first_started", "last_completed"), values, strict=True))

    def stop(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group (pool children)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self.procs.clear()


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _load_yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


# --- the client -------------------------------------------------------------------------


async def run_clients(
    base: str,
    tokens: list[str],
    photos: list[tuple[str, bytes]],
    concurrency: int,
    *,
    deadline_s: float,
    submit_wait: bool = False,
    per_request: int = 1,
) -> list[dict]:
    """``concurrency`` coroutines share a queue of photos: POST each, then long-poll it final.

    With ``submit_wait`` the POST itself waits (``?wait=30``: one request per image when
    the result is ready within the wait); the long-poll only covers what it did not."""
    import aiohttp

    queue: asyncio.Queue = asyncio.Queue()
    for item in enumerate(photos):
        queue.put_nowait(item)
    records: list[dict] = []
    stop_at = time.perf_counter() + deadline_s
    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=concurrency + 4, force_close=False)

    async def one(session: aiohttp.ClientSession, index: int, name: str, content: bytes, token: str) -> dict:
        headers = {"Authorization": f"Token {token}"}
        record: dict[str, Any] = {"index": index, "name": name, "http_errors": 0, "reconnects": 0}
        record["submit_t"] = began = time.perf_counter()
        body = None
        for attempt in range(2):
            form = aiohttp.FormData()
            form.add_field("image", content, filename=name, content_type="image/jpeg")
            try:
                submit_url = f"{base}/api/v1/predictions/" + ("?wait=30" if submit_wait else "")
                async with session.post(submit_url, data=form, headers=headers) as response:
                    text = await response.text()
                    if response.status in (201, 202):
                        body = json.loads(text)
                    else:
                        record["http_errors"] += 1
                        record["error"] = f"POST {response.status}: {text[:300]}"
                break
            except aiohttp.ServerDisconnectedError:  # a kept-alive connection the server had closed
                record["reconnects"] += 1
                if attempt:
                    record["http_errors"] += 1
                    record["error"] = "POST: server disconnected twice"
            except (TimeoutError, aiohttp.ClientError) as error:
                record["http_errors"] += 1
                record["error"] = f"POST: {error!r}"
                break
        record["submit_ms"] = (time.perf_counter() - began) * 1000
        if body is None:
            return record
        record["cached"] = bool(body.get("cached"))
        url = body["url"]
        while body.get("status") not in ("succeeded", "failed") and time.perf_counter() < stop_at:
            try:
                async with session.get(f"{url}?wait=30", headers=headers) as response:
                    text = await response.text()
                    if response.status == 200:
                        body = json.loads(text)
                        record["cached"] = record["cached"] or bool(body.get("cached"))
                        continue
                    record["http_errors"] += 1
                    record["error"] = f"GET {response.status}: {text[:300]}"
            except aiohttp.ServerDisconnectedError:
                record["reconnects"] += 1
                continue
            except (TimeoutError, aiohttp.ClientError) as error:
                record["http_errors"] += 1
                record["error"] = f"GET: {error!r}"
            await asyncio.sleep(1)
        if body.get("status") in ("succeeded", "failed"):
            record["final_t"] = time.perf_counter()
            record["latency_ms"] = (record["final_t"] - began) * 1000
        record.update(
            status=body.get("status"),
            id=body.get("id"),
            label=body.get("label"),
            class_id=body.get("class_id"),
            timings=body.get("timings_ms"),
            error_message=body.get("error") or body.get("error_message"),
        )
        return record

    async def several(session: aiohttp.ClientSession, items: list, token: str) -> list[dict]:
        """``per_request`` photos in one POST to the batch endpoint with ``?wait=30``; one
        record per photo."""
        headers = {"Authorization": f"Token {token}"}
        began = time.perf_counter()
        form = aiohttp.FormData()
        for _, (name, content) in items:
            form.add_field("image", content, filename=name, content_type="image/jpeg")
        records_here = [
            {"index": index, "name": name, "http_errors": 0, "reconnects": 0, "submit_t": began}
            for index, (name, _) in items
        ]
        try:
            url = f"{base}/api/v1/predictions/batch/?wait=30"
            async with session.post(url, data=form, headers=headers) as response:
                text = await response.text()
                answer = json.loads(text) if response.status in (201, 202) else None
                bodies = None if answer is None else [r.get("prediction") or {} for r in answer["results"]]
        except (TimeoutError, aiohttp.ClientError) as error:
            bodies, text = None, repr(error)
        now = time.perf_counter()
        for record, body in zip(records_here, bodies or [{}] * len(items), strict=True):
            record["submit_ms"] = (now - began) * 1000
            if bodies is None:
                record["http_errors"] = 1
                record["error"] = f"POST: {text[:300]}"
                continue
            record["cached"] = bool(body.get("cached"))
            if body.get("status") in ("succeeded", "failed"):
                record["final_t"] = now
                record["latency_ms"] = (now - began) * 1000
            record.update(
                status=body.get("status"),
                id=body.get("id"),
                label=body.get("label"),
                class_id=body.get("class_id"),
                timings=body.get("timings_ms"),
                error_message=body.get("error"),
            )
        return records_here

    async def client(session: aiohttp.ClientSession, token: str) -> None:
        while True:
            items = []
            while len(items) < per_request:
                try:
                    items.append(queue.get_nowait())
                except asyncio.QueueEmpty:
                    break
            if not items:
                return
            if per_request > 1:
                records.extend(await several(session, items, token))
                continue
            index, (name, content) = items[0]
            records.append(await one(session, index, name, content, token))

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(client(session, tokens[i % len(tokens)]) for i in range(concurrency)))
    return sorted(records, key=lambda r: r["index"])


def run_service(
    stack: Stack, photos: list[tuple[str, bytes]], warmup: list[tuple[str, bytes]], levels: list[int], args
) -> dict:
    result: dict[str, Any] = {"tag": stack.tag, "src": str(stack.src), "git": git_revision(stack.src)}
    began = time.monotonic()
    per_request = _per_request_plan(stack, levels, args)
    extra_groups = {f"x{k}": clients for k, clients in per_request.items()}
    if stack.pin is not None:
        extra_groups["drain"] = DRAIN_USERS
    users = stack.start(levels, extra_groups)
    result["commands"] = stack.commands
    result["ready_s"] = stack.wait_ready(args.ready_timeout)
    print(f"[{stack.tag}] stack ready in {time.monotonic() - began:.0f} s; warm-up ({len(warmup)} images)", flush=True)
    warm = asyncio.run(
        run_clients(stack.base_url, [u["token"] for u in users["warmup"]], warmup, len(warmup), deadline_s=300)
    )
    if any(r.get("status") != "succeeded" for r in warm):
        bad = [r.get("error") or r.get("error_message") or r.get("status") for r in warm]
        raise RuntimeError(f"{stack.tag}: warm-up failed: {bad}\n{_tail(stack.logs['worker'])}")
    result["levels"] = {}
    result["records"] = {}
    affinity = os.sched_getaffinity(0)
    if stack.pin is not None:  # the clients share the web server's core
        os.sched_setaffinity(0, {stack.pin[0]})
    try:
        _run_levels(stack, photos, levels, users, args, result)
        _run_per_request(stack, photos, per_request, users, args, result)
        if stack.pin is not None:
            try:
                result["drain"] = measure_drain(stack, photos, [u["token"] for u in users["drain"]], args)
            except RuntimeError as error:  # the levels stand; the pinned goal falls back to the raw runner
                print(f"[{stack.tag}] drain FAILED: {error}", flush=True)
                result["drain"] = {"error": str(error)[-2000:]}
    finally:
        os.sched_setaffinity(0, affinity)
    return result


def _run_levels(stack: Stack, photos: list, levels: list[int], users: dict, args, result: dict) -> None:
    for level in levels:
        time.sleep(2)  # let the warm-up / previous level's stragglers settle
        offsets = stack.log_offsets()
        meter = CpuMeter(stack.roots())
        meter.start()
        records = asyncio.run(
            run_clients(
                stack.base_url,
                [u["token"] for u in users[str(level)]],
                photos,
                level,
                deadline_s=args.level_timeout,
                submit_wait=args.submit_wait,
                per_request=args.images_per_request[0],
            )
        )
        cpu = meter.stop(len(photos))
        time.sleep(1)  # the batch log line follows the stored result
        batches = stack.worker_log_since(offsets, str(level))
        summary = level_summary(records, n=len(photos), cpu=cpu, batches=batches)
        result["levels"][str(level)] = summary
        result["records"][str(level)] = records
        errors = [r["error"] for r in records if r.get("error")][:3]
        print(
            f"[{stack.tag}] c={level}: {_fmt(summary['images_per_min'])} images/min, "
            f"p50 {_fmt(summary['latency_ms']['p50'])} ms, {summary['succeeded']} ok, {summary['failed']} failed, "
            f"{summary['lost']} lost, {summary['http_errors']} HTTP errors, "
            f"{summary['cached']} cached" + (f"; first errors: {errors}" if errors else ""),
            flush=True,
        )


def _per_request_plan(stack: Stack, levels: list[int], args) -> dict[int, int]:
    """The extra runs of several images per request (``--images-per-request`` after its
    first value, which the levels use): images per request -> clients. The current tree
    on shared cores only, at the highest level up to 16 clients."""
    if stack.tag != "now" or not levels:
        return {}
    clients = max([level for level in levels if level <= 16] or [min(levels)])
    return {k: clients for k in args.images_per_request[1:]}


def _run_per_request(stack: Stack, photos: list, plan: dict[int, int], users: dict, args, result: dict) -> None:
    """The many-images-per-request path: the same photos, ``k`` per POST to the batch
    endpoint with ``?wait=30``, by fresh users (no result-cache hits)."""
    result["per_request"] = {}
    for k, clients in plan.items():
        time.sleep(2)
        offsets = stack.log_offsets()
        meter = CpuMeter(stack.roots())
        meter.start()
        tokens = [u["token"] for u in users[f"x{k}"]]
        records = asyncio.run(
            run_clients(stack.base_url, tokens, photos, clients, deadline_s=args.level_timeout, per_request=k)
        )
        cpu = meter.stop(len(photos))
        time.sleep(1)
        batches = stack.worker_log_since(offsets, f"x{k}")
        summary = level_summary(records, n=len(photos), cpu=cpu, batches=batches) | {"clients": clients}
        result["per_request"][str(k)] = summary
        result["records"][f"x{k}"] = records
        print(
            f"[{stack.tag}] {k} images per request, c={clients}: {_fmt(summary['images_per_min'])} images/min, "
            f"{summary['succeeded']} ok, {summary['failed']} failed, {summary['lost']} lost, "
            f"{summary['http_errors']} HTTP errors",
            flush=True,
        )


# The drain's photos come from this many users, as the levels' do: one user's photos are
# held to INFLIGHT_PER_USER (16) running at once, which would cap the drain's batches at 16.
DRAIN_USERS = 8


async def submit_only(base: str, tokens: list[str], photos: list[tuple[str, bytes]], concurrency: int) -> list[dict]:
    """POST each photo once, the users' tokens in turn, and keep the 202's answer (id,
    status); never polls."""
    import aiohttp

    queue: asyncio.Queue = asyncio.Queue()
    for item in enumerate(photos):
        queue.put_nowait(item)
    records: list[dict] = []

    async def client(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            index, (name, content) = queue.get_nowait()
            form = aiohttp.FormData()
            form.add_field("image", content, filename=name, content_type="image/jpeg")
            record: dict[str, Any] = {"index": index}
            headers = {"Authorization": f"Token {tokens[index % len(tokens)]}"}
            try:
                async with session.post(f"{base}/api/v1/predictions/", data=form, headers=headers) as response:
                    text = await response.text()
                    if response.status in (201, 202):
                        body = json.loads(text)
                        record.update(id=body.get("id"), status=body.get("status"), cached=bool(body.get("cached")))
                    else:
                        record["error"] = f"POST {response.status}: {text[:300]}"
            except (TimeoutError, aiohttp.ClientError) as error:
                record["error"] = f"POST: {error!r}"
            records.append(record)

    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=concurrency + 4)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
    return sorted(records, key=lambda r: r["index"])


def drain_summary(n: int, rows: dict[str, float | None], submitted: list[dict], batches: list[dict]) -> dict:
    """What the worker drained alone: N over first ``started_at`` to last ``completed_at``
    of the rows (the database's clock: from the first claim to the last result)."""
    first, last = rows.get("first_started"), rows.get("last_completed")
    span = last - first if first is not None and last is not None and last > first else None
    succeeded = int(rows.get("succeeded") or 0)
    sizes = [b["size"] for b in batches if "size" in b]
    return {
        "images": n,
        "accepted": sum(1 for r in submitted if r.get("id")),
        "http_errors": sum(1 for r in submitted if r.get("error")),
        "cached": sum(1 for r in submitted if r.get("cached")),
        "succeeded": succeeded,
        "failed": int(rows.get("failed") or 0),
        "lost": n - succeeded - int(rows.get("failed") or 0),
        "seconds": span,
        # only a clean drain counts: every photo classified, none cached, none failed
        "images_per_s": n / span if span and succeeded == n else None,
        "batches": len(batches),
        "mean_batch_size": statistics.fmean(sizes) if sizes else None,
    }


def measure_drain(stack: Stack, photos: list[tuple[str, bytes]], tokens: list[str], args) -> dict:
    """The worker alone on its core: N photos queued while it does not consume (warm: model
    loaded, batch shapes traced by the levels before), then it drains them with no web
    traffic. The denominator of issue 25's pinned goal ("what that worker drains alone")."""
    time.sleep(2)  # the last level's stragglers
    stack.consumer("cancel")
    try:
        submitted = asyncio.run(submit_only(stack.base_url, tokens, photos, concurrency=8))
        offsets = stack.log_offsets()
    finally:
        stack.consumer("add")
    ids = [r["id"] for r in submitted if r.get("id")]
    print(f"[{stack.tag}] drain: {len(ids)} photos queued, the worker consumes alone", flush=True)
    rows = stack.drain_rows(ids)
    deadline = time.monotonic() + args.level_timeout
    while rows["final"] < len(ids) and time.monotonic() < deadline:
        time.sleep(1)  # one small indexed query a second; no HTTP while it drains
        rows = stack.drain_rows(ids)
    time.sleep(1)  # the batch log line follows the stored result
    summary = drain_summary(len(photos), rows, submitted, stack.worker_log_since(offsets, "drain"))
    print(
        f"[{stack.tag}] drain: {_fmt(summary['images_per_s'], 1)} images/s over {_fmt(summary['seconds'], 1)} s, "
        f"{summary['succeeded']} ok, {summary['failed']} failed, {summary['lost']} lost, "
        f"{summary['http_errors']} HTTP errors, mean batch {_fmt(summary['mean_batch_size'], 1)}",
        flush=True,
    )
    return summary


# --- raw runner and model.predict() (subprocesses, never during a service level) ---------


def raw_runner(model_dir: Path, paths: list[Path]) -> dict:
    sys.path.insert(0, str(ROOT))
    from ml.runner import Classifier

    began = time.perf_counter()
    classifier = Classifier(model_dir, engine="savedmodel").load()
    classifier.warmup()
    classifier.classify(paths[:32])  # the batch-32 bucket is traced once, outside the timing
    load_s = time.perf_counter() - began
    per_image, top1 = [], []
    began = time.perf_counter()
    for path in paths:
        t = time.perf_counter()
        result = classifier.classify([path])[0]
        per_image.append((time.perf_counter() - t) * 1000)
        top1.append(result.top.class_id if result.predictions else None)
    batch1_s = time.perf_counter() - began
    batched_top1 = []
    began = time.perf_counter()
    for start in range(0, len(paths), 32):
        batched_top1 += [
            r.top.class_id if r.predictions else None for r in classifier.classify(paths[start : start + 32])
        ]
    batched_s = time.perf_counter() - began
    return {
        "engine": "savedmodel",
        "load_and_warmup_s": load_s,
        "images": len(paths),
        "batch1": {
            "images_per_s": len(paths) / batch1_s,
            **{k: v for k, v in summarize(per_image).items() if k != "count"},
        }
        | {"p50_ms": percentile(per_image, 50)},
        "batched": {"batch": 32, "images_per_s": len(paths) / batched_s},
        "batched_top1_same_as_batch1": sum(a == b for a, b in zip(top1, batched_top1, strict=True)),
        "top1": {path.name: cid for path, cid in zip(paths, top1, strict=True)},
    }


def keras_baseline(model_dir: Path, paths: list[Path]) -> dict:
    """What a demo app does: a Keras model around the SavedModel, PIL resize, predict() per image."""
    import keras
    import numpy as np
    from PIL import Image

    began = time.perf_counter()
    inputs = keras.Input(shape=(224, 224, 3))
    outputs = keras.layers.TFSMLayer(str(model_dir / "saved_model"), call_endpoint="serve")(inputs)
    if isinstance(outputs, dict):
        outputs = next(iter(outputs.values()))
    model = keras.Model(inputs, outputs)
    model.predict(np.zeros((1, 224, 224, 3), np.float32), verbose=0)
    load_s = time.perf_counter() - began
    per_image, top1 = [], {}
    began = time.perf_counter()
    for path in paths:
        t = time.perf_counter()
        x = np.asarray(Image.open(path).convert("RGB").resize((224, 224)), dtype=np.float32)
        probabilities = model.predict(x[None], verbose=0)[0]
        per_image.append((time.perf_counter() - t) * 1000)
        top1[path.name] = int(np.argmax(probabilities))
    seconds = time.perf_counter() - began
    return {
        "method": "keras.Model(TFSMLayer(saved_model, 'serve')).predict(x[None]) per image, PIL resize to 224x224",
        "load_s": load_s,
        "images": len(paths),
        "images_per_s": len(paths) / seconds,
        "p50_ms": percentile(per_image, 50),
        "top1_index": top1,
    }


def run_subprocess_mode(mode: str, model_dir: Path, paths: list[Path], *, cpu: int | None = None) -> dict:
    out = VAR / f"{mode}{'' if cpu is None else f'-cpu{cpu}'}.json"
    list_file = VAR / f"{mode}-photos.txt"
    list_file.write_text("\n".join(str(p) for p in paths))
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        f"--{mode}",
        "--model",
        str(model_dir),
        "--photos-file",
        str(list_file),
        "--result",
        str(out),
    ]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        output, _ = proc.communicate(timeout=3600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} failed ({proc.returncode}):\n{output[-3000:]}")
    return json.loads(out.read_text())


# --- main -------------------------------------------------------------------------------


def top1_agreement(service: dict, raw: dict | None) -> dict | None:
    if not raw:
        return None
    compared = same = 0
    mismatches = []
    for level, records in service.get("records", {}).items():
        for r in records:
            expected = raw["top1"].get(r["name"])
            if r.get("status") != "succeeded" or expected is None:
                continue
            compared += 1
            if r.get("class_id") == expected:
                same += 1
            elif len(mismatches) < 10:
                mismatches.append({"level": level, "photo": r["name"], "service": r.get("class_id"), "raw": expected})
    return {"compared": compared, "same": same, "mismatches": mismatches}


def ensure_baseline_tree(rev: str) -> Path:
    src = VAR / "baseline-src"
    if not (src / ".git").exists():
        _run(["git", "worktree", "prune"], check=False)
        _run(["git", "worktree", "add", "--detach", str(src), rev])
    else:
        _run(["git", "checkout", "--detach", "-q", rev], cwd=src)
    models = src / "models"
    if not models.is_symlink():
        if models.exists():
            shutil.rmtree(models)
        models.symlink_to(ROOT / "models", target_is_directory=True)
    return src


def env_default(name: str, default: str) -> str:
    return os.environ.get(name) or default


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=int(env_default("BENCH_N", "600")), help="photos per level (BENCH_N)")
    parser.add_argument(
        "--levels", default=env_default("BENCH_LEVELS", "1,16,64"), help="concurrency levels (BENCH_LEVELS)"
    )
    parser.add_argument(
        "--baseline",
        default=env_default("BENCH_BASELINE", DEFAULT_BASELINE),
        help="git revision or 'none' (BENCH_BASELINE)",
    )
    parser.add_argument(
        "--skip-now",
        action="store_true",
        default=os.environ.get("BENCH_SKIP_NOW") == "1",
        help="baseline only (BENCH_SKIP_NOW=1)",
    )
    parser.add_argument(
        "--skip-raw",
        action="store_true",
        default=os.environ.get("BENCH_SKIP_RAW") == "1",
        help="no raw runner / model.predict (BENCH_SKIP_RAW=1)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=int(env_default("BENCH_WORKERS", "1")),
        help="worker processes, 1 or 2 (BENCH_WORKERS)",
    )
    parser.add_argument(
        "--second-host",
        action="store_true",
        default=os.environ.get("BENCH_SECOND_HOST") == "1",
        help="second worker as another host (BENCH_SECOND_HOST=1)",
    )
    parser.add_argument(
        "--label", default=os.environ.get("BENCH_LABEL", ""), help="store as an extra labelled run in the JSON"
    )
    parser.add_argument(
        "--submit-wait",
        action="store_true",
        default=os.environ.get("BENCH_SUBMIT_WAIT") == "1",
        help="POST with ?wait=30: upload and result in one request (BENCH_SUBMIT_WAIT=1)",
    )
    parser.add_argument(
        "--images-per-request",
        type=lambda text: [int(k) for k in text.split(",") if k.strip()],
        default=env_default("BENCH_IMAGES_PER_REQUEST", "1,8,20"),
        help="photos per POST, comma-separated: the levels run with the first; each further K is one more run "
        "of the current tree (shared cores, the highest level up to 16 clients) with K photos per POST to the "
        "batch endpoint with ?wait=30, reported in the final table (BENCH_IMAGES_PER_REQUEST, default 1,8,20)",
    )
    parser.add_argument(
        "--pinned",
        action=argparse.BooleanOptionalAction,
        default=os.environ.get("BENCH_PINNED", "1") == "1",
        help="also run the current tree pinned: web server and clients on CPU 0, the worker on CPU 1, against "
        "what that worker drains alone (N queued photos, no web traffic) and the raw runner on CPU 1 "
        "(BENCH_PINNED, default 1; needs 2 cores and taskset)",
    )
    parser.add_argument(
        "--frontdoor",
        action=argparse.BooleanOptionalAction,
        default=os.environ.get("BENCH_FRONTDOOR", "1") == "1",
        help="also measure the web process's CPU per request by stage (bench/frontdoor.py) and print it beside "
        "the 'before' budget (BENCH_FRONTDOOR, default 1)",
    )
    parser.add_argument("--port", type=int, default=int(env_default("BENCH_PORT", "8766")))
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "efficientnet_lite0" / "1")
    parser.add_argument("--keras-images", type=int, default=200)
    parser.add_argument("--ready-timeout", type=float, default=300)
    parser.add_argument("--level-timeout", type=float, default=1800)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "e2e.json")
    parser.add_argument("--raw", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--keras", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--photos-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.raw or args.keras:
        paths = [Path(p) for p in args.photos_file.read_text().splitlines() if p]
        result = raw_runner(args.model, paths) if args.raw else keras_baseline(args.model, paths)
        args.result.write_text(json.dumps(result))
        return 0

    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    sys.path.insert(0, str(ROOT))
    from training.photoset import photoset

    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    if args.second_host:
        args.workers = max(args.workers, 2)
    VAR.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    cpu_line = f"CPU: {machine['cpu_model']}, {machine['cores']} cores, flags {' '.join(machine['flags'])}"
    print(cpu_line, flush=True)
    all_paths = photoset(args.n + WARMUP_IMAGES, ROOT / "var" / "photoset")
    paths, warm_paths = all_paths[: args.n], all_paths[args.n :]
    photos = [(p.name, p.read_bytes()) for p in paths]
    warmup = [(p.name, p.read_bytes()) for p in warm_paths]
    print(f"{len(photos)} distinct photos ({sum(len(c) for _, c in photos) / 1e6:.1f} MB), levels {levels}", flush=True)

    report: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "config": {
            "n": args.n,
            "levels": levels,
            "workers": args.workers,
            "second_host": args.second_host,
            "baseline": args.baseline,
        },
        "photos": "training.photoset: distinct JPEG crops of scikit-image photos; warm-up uses 5 more, never measured",
    }
    raw = keras = None
    if not args.skip_raw:
        print("raw runner (batch 1, batched 32) ...", flush=True)
        raw = run_subprocess_mode("raw", args.model, paths)
        print(
            f"  batch 1: {raw['batch1']['images_per_s']:.1f} images/s (p50 {raw['batch1']['p50_ms']:.1f} ms); "
            f"batched: {raw['batched']['images_per_s']:.1f} images/s",
            flush=True,
        )
        print(f"model.predict() per image on {min(args.n, args.keras_images)} photos ...", flush=True)
        keras = run_subprocess_mode("keras", args.model, paths[: args.keras_images])
        print(f"  {keras['images_per_s']:.1f} images/s (p50 {keras['p50_ms']:.1f} ms)", flush=True)
    raw_pinned = None
    pinned = args.pinned and not args.skip_now and (os.cpu_count() or 1) >= 2 and shutil.which("taskset")
    if pinned and not args.skip_raw:
        print("raw runner on CPU 1 alone (batch 1, batched 32) ...", flush=True)
        raw_pinned = run_subprocess_mode("raw", args.model, paths, cpu=1)
        print(
            f"  batch 1: {raw_pinned['batch1']['images_per_s']:.1f} images/s; "
            f"batched: {raw_pinned['batched']['images_per_s']:.1f} images/s",
            flush=True,
        )
    report["raw_runner_cpu1"] = {k: v for k, v in (raw_pinned or {}).items() if k != "top1"} or None
    report["raw_runner"] = {k: v for k, v in (raw or {}).items() if k != "top1"} or None
    report["model_predict"] = {k: v for k, v in (keras or {}).items() if k != "top1_index"} or None

    plan: list[tuple[str, Path, str]] = []
    if args.baseline.lower() != "none":
        plan.append(("baseline", ensure_baseline_tree(args.baseline), f"{DATABASE_PREFIX}_base"))
    if not args.skip_now:
        plan.append(("now", ROOT, DATABASE_PREFIX))
    if pinned:
        plan.append(("now-pinned", ROOT, DATABASE_PREFIX))
    revisions: dict[str, dict] = {}
    for tag, src, database in plan:
        stack = Stack(
            tag=tag,
            src=src,
            database=database,
            port=args.port,
            workers=1 if tag == "now-pinned" else args.workers,
            second_host=args.second_host and tag != "now-pinned",
            label=args.label,
            pin=(0, 1) if tag == "now-pinned" else None,
        )
        try:
            revisions[tag] = run_service(stack, photos, warmup, levels, args)
        except KeyboardInterrupt:
            stack.stop()
            raise
        except Exception as error:  # report it, still run the other revision
            print(f"[{tag}] FAILED: {error}", flush=True)
            revisions[tag] = {"tag": tag, "git": git_revision(src), "error": str(error)[-4000:], "levels": {}}
        finally:
            stack.stop()
        revisions[tag]["top1_agreement"] = top1_agreement(revisions[tag], raw)
        records_file = VAR / f"records-{tag}{'-' + args.label if args.label else ''}.json"
        records_file.write_text(json.dumps(revisions[tag].pop("records", {})))

    headers = []
    print()
    print(cpu_line)
    for tag, rev in revisions.items():
        dirty = ", uncommitted changes" if rev["git"]["dirty_files"] else ""
        host2 = ", second host" if args.second_host else ""
        title = f"{tag} ({rev['git']['short']}{dirty}), N={args.n}, workers={args.workers}{host2}"
        headers.append(f"{tag} ({rev['git']['short']})")
        print()
        print(level_table(title, rev["levels"]) if rev["levels"] else f"**{title}**: {rev.get('error', '')[:2000]}")
        if rev.get("drain"):
            print(f"\n{drain_line(rev['drain'], raw_pinned)}")
    rows = summary_rows(raw, keras, revisions, raw_pinned)
    print()
    print(summary_table(rows, headers))
    print(
        f"\n{cpu_line}. CPU shares are % of (wall seconds x {machine['cores']} cores); everything shares these cores."
    )
    others = [s["cpu"]["other_pct"] for rev in revisions.values() for s in rev["levels"].values() if s.get("cpu")]
    if others and max(others) > 10:
        report["warning"] = (
            f"other processes used up to {max(others):.0f} % of the machine's CPU during the run: the figures are "
            "noisy; rerun on an idle machine"
        )
        print(f"WARNING: {report['warning']}")
    goals = frontdoor_goals(raw, raw_pinned, revisions)
    if goals:
        report["frontdoor_goals"] = goals
        print()
        print(goals_table(goals, cpu_line))
    if args.frontdoor:
        report["frontdoor_budget"] = frontdoor_budget()
    report["revisions"] = revisions
    report["summary"] = [{"measure": label, **dict(zip(headers, values, strict=True))} for label, values in rows]

    previous = {}
    if args.out.exists():
        with contextlib.suppress(ValueError):
            previous = json.loads(args.out.read_text())
    if args.label:
        previous.setdefault("extra_runs", {})[args.label] = report
        final = previous
    else:
        final = report | {"extra_runs": previous.get("extra_runs", {})}
    args.out.write_text(json.dumps(final, indent=1, default=str) + "\n")
    print(f"written {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    drains = [rev["drain"] for rev in revisions.values() if rev.get("drain")]
    failed = (
        any(rev.get("error") for rev in revisions.values())
        or any(d.get("error") or d["http_errors"] or d["lost"] or d["failed"] for d in drains)
        or any(
            s["http_errors"] or s["lost"] or s["cached"]
            for rev in revisions.values()
            for s in [*rev["levels"].values(), *rev.get("per_request", {}).values()]
        )
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
