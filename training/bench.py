"""Inference benchmark: load time and latency per engine and batch size.

    python -m training.bench --model models/efficientnet_lite0/1 --out bench/results.json

Prints a Markdown table and writes the figures as JSON. Runs the same runner the
workers use (predictions.inference), on real photos, after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from predictions.inference import ENGINES, Classifier
from training.test_photos import TEST_PHOTOS


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def bench_engine(model_dir: Path, engine: str, batch_sizes: list[int], seconds: float, threads: int) -> dict:
    started = time.perf_counter()
    classifier = Classifier(model_dir, engine=engine, threads=threads).load()
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    classifier.warmup()
    warmup_s = time.perf_counter() - started

    photos = [p.path.read_bytes() for p in TEST_PHOTOS]
    preprocess_ms = []
    arrays = []
    for content in photos * 4:
        began = time.perf_counter()
        arrays.append(classifier.preprocess(content))
        preprocess_ms.append((time.perf_counter() - began) * 1000)

    rows = []
    for batch_size in batch_sizes:
        batch = np.stack([arrays[i % len(arrays)] for i in range(batch_size)])
        classifier.predict(batch)  # shape warm-up
        timings = []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline or len(timings) < 5:
            began = time.perf_counter()
            classifier.predict(batch)
            timings.append((time.perf_counter() - began) * 1000)
        rows.append(
            {
                "batch": batch_size,
                "runs": len(timings),
                "batch_ms_p50": round(statistics.median(timings), 2),
                "batch_ms_p95": round(_percentile(timings, 95), 2),
                "per_image_ms": round(statistics.median(timings) / batch_size, 2),
                "images_per_s": round(1000 * batch_size / statistics.median(timings), 1),
            }
        )
    return {
        "engine": engine,
        "load_s": round(load_s, 3),
        "warmup_s": round(warmup_s, 3),
        "preprocess_ms_p50": round(statistics.median(preprocess_ms), 2),
        "batches": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/efficientnet_lite0/1"))
    parser.add_argument("--out", type=Path, default=Path("bench/results.json"))
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=5.0, help="Time spent per batch size")
    parser.add_argument("--threads", type=int, default=0, help="Engine threads (0 = engine default)")
    args = parser.parse_args()

    results = [bench_engine(args.model, e, args.batch_sizes, args.seconds, args.threads) for e in args.engines]
    metadata = json.loads((args.model / "metadata.json").read_text())
    report = {
        "model": f"{metadata['name']} v{metadata['version']}",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")

    print(f"\n{report['model']} on {os.cpu_count()} CPUs ({report['created']})\n")
    print("| engine | load s | preprocess ms/img | batch | ms/batch p50 | ms/batch p95 | ms/image | images/s |")
    print("|---|---|---|---|---|---|---|---|")
    for result in results:
        for row in result["batches"]:
            cells = [
                result["engine"], result["load_s"], result["preprocess_ms_p50"], row["batch"],
                row["batch_ms_p50"], row["batch_ms_p95"], row["per_image_ms"], row["images_per_s"],
            ]  # fmt: skip
            print("| " + " | ".join(str(cell) for cell in cells) + " |")
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
