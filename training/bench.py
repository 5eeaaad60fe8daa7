"""Inference benchmark: every engine's load time, latency per batch size and agreement.

    python -m training.bench --model models/efficientnet_lite0/1 --out bench/results.json

For each engine (the SavedModel with and without XLA, TFLite fp32 / fp16 / int8 through
XNNPACK, ONNX Runtime) it measures, in this one run so the ratios are comparable: load
time, ms per image at batch 1 / 8 / 32 after warm-up, images/s, and the top-1 agreement
with the SavedModel on real photos (``training.convert.agreement_photos()``), plus the
mean and max |probability difference|. It prints a Markdown table headed by the CPU
(model, cores, SIMD flags) and writes the same figures to ``--out`` as JSON.

Each engine runs through ``ml.engines`` (the classes the workers use) in its own
process, as in a worker, with the runtime's default threads; only one computes at a time,
and the timings are taken in interleaved rounds so that load from other processes on a
shared machine falls on every engine alike. Files from
``training.convert`` that are missing are reported, not fatal: ``make convert`` builds them.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import os
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ml.engines import (
    CANDIDATE_ENGINES,
    ENGINES,
    MIN_TOP1_AGREEMENT,
    Engine,
    EngineLoadError,
    Probabilities,
    load_engine,
)
from training.convert import FORMATS, PHOTOSET_DIR, Agreement, agreement, agreement_photos, convert
from training.samples import photo_batch

# (label in the report, engine name, extra load_engine options)
VARIANTS: tuple[tuple[str, str, dict[str, bool]], ...] = (
    ("savedmodel", "savedmodel", {}),
    ("savedmodel-xla", "savedmodel", {"xla": True}),
    ("tflite", "tflite", {}),
    ("tflite-fp16", "tflite-fp16", {}),
    ("tflite-int8", "tflite-int8", {}),
    ("onnx", "onnx", {}),
)
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx")
AGREEMENT_BATCH = 32  # the largest bucket, as a worker would use
# XLA runs this network ~10x slower on CPU; its agreement is measured on the first photos
# only, so the whole benchmark stays within a few minutes.
XLA_AGREEMENT_PHOTOS = 96


def cpu_info() -> dict[str, Any]:
    """CPU model, core count and the SIMD flags that decide which kernels the runtimes pick."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:  # not Linux: the model and core count still say something
        pass
    present = {flag: flag in flags for flag in CPU_FLAGS}
    present["amx"] = any(flag.startswith("amx") for flag in flags)
    return {
        "model": model,
        "cores": os.cpu_count(),
        "flags": present,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_1m_at_start": round(os.getloadavg()[0], 2),
    }


def cpu_line(cpu: dict[str, Any]) -> str:
    flags = " ".join(flag for flag, present in cpu["flags"].items() if present) or "none of the listed"
    missing = " ".join(flag for flag, present in cpu["flags"].items() if not present)
    return f"{cpu['model']}, {cpu['cores']} cores, flags: {flags}" + (f" (no {missing})" if missing else "")


def probabilities(engine: Engine, images: NDArray[np.float32], batch: int = AGREEMENT_BATCH) -> Probabilities:
    """The engine's probabilities for every image, in batches padded to ``batch`` like the runner does."""
    outputs = []
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        padded = np.zeros((batch, *images.shape[1:]), np.float32)
        padded[: len(chunk)] = chunk
        outputs.append(engine.run(padded)[: len(chunk)])
    return np.concatenate(outputs)


def _serve_engine(
    conn: Connection[object, tuple[Any, ...] | None],
    name: str,
    options: dict[str, bool],
    model_dir: Path,
    images_path: Path,
) -> None:
    """Child process: load one engine, then answer the parent's requests until told to stop."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    images = np.load(images_path, mmap_mode="r")
    started = time.perf_counter()
    try:
        engine = load_engine(name, model_dir, **options)
    except EngineLoadError as error:
        conn.send({"error": str(error)})
        return
    conn.send({"load_s": time.perf_counter() - started})
    warm: set[int] = set()
    while (request := conn.recv()) is not None:
        if request[0] == "probabilities":
            conn.send(probabilities(engine, np.asarray(images[: request[1]])))
            continue
        _, batch, seconds, min_runs = request
        batch_images = np.ascontiguousarray(images[np.arange(batch) % len(images)])
        if batch not in warm:  # first call at this shape: tracing, compilation, allocation
            engine.run(batch_images)
            warm.add(batch)
        timings: list[float] = []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline or len(timings) < min_runs:
            began = time.perf_counter()
            engine.run(batch_images)
            timings.append((time.perf_counter() - began) * 1000)
        conn.send(timings)


class EngineProcess:
    """One engine in its own interpreter, as in a worker: runtimes' thread pools never share a process."""

    def __init__(self, label: str, name: str, options: dict[str, bool], model_dir: Path, images_path: Path) -> None:
        context = multiprocessing.get_context("spawn")
        self.label, self.xla = label, bool(options.get("xla"))
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve_engine, args=(child, name, options, model_dir, images_path))
        self._process.start()
        self.loaded = self._conn.recv()

    def ask(self, *request: object) -> Any:
        """Send one request to the engine's process and return its answer (timings or probabilities)."""
        self._conn.send(request)
        return self._conn.recv()

    def stop(self) -> None:
        if self._process.is_alive() and "error" not in self.loaded:
            self._conn.send(None)
        self._process.join(timeout=30)


def latency_row(batch: int, timings: list[float]) -> dict[str, float]:
    median = statistics.median(timings)
    return {
        "batch": batch,
        "runs": len(timings),
        "batch_ms_p50": round(median, 2),
        "batch_ms_p95": round(float(np.percentile(timings, 95)), 2),
        "per_image_ms": round(median / batch, 2),
        "images_per_s": round(1000 * batch / median, 1),
    }


def bench_engines(
    args: argparse.Namespace, images_path: Path, photos: int
) -> tuple[list[dict[str, Any]], dict[str, Probabilities]]:
    """Load every engine (one at a time), get its probabilities, then time them in interleaved rounds.

    Rounds alternate the engines, so load from other processes on a shared machine falls on
    all of them alike and the ratios between engines stay meaningful.
    """
    variants = [variant for variant in VARIANTS if variant[0] in args.engines]
    processes, results, probs = [], {}, {}
    try:
        for label, name, options in variants:
            print(f"loading {label}...", flush=True)
            process = EngineProcess(label, name, options, args.model, images_path)
            results[label] = {"engine": label, "offered": label in ENGINES}
            if "error" in process.loaded:
                results[label]["error"] = process.loaded["error"]
                process.stop()
                continue
            results[label]["load_s"] = round(process.loaded["load_s"], 3)
            processes.append(process)
        for process in processes:
            print(f"agreement pass: {process.label}...", flush=True)
            probs[process.label] = process.ask("probabilities", XLA_AGREEMENT_PHOTOS if process.xla else photos)
        timings: dict[tuple[str, int], list[float]] = {}
        for round_number in range(args.rounds):
            print(f"latency round {round_number + 1}/{args.rounds}...", flush=True)
            for batch in args.batch_sizes:
                for process in processes:
                    measured = process.ask("latency", batch, args.seconds, 1 if process.xla else 2)
                    timings.setdefault((process.label, batch), []).extend(measured)
        for process in processes:
            results[process.label]["batches"] = [
                latency_row(batch, timings[process.label, batch]) for batch in args.batch_sizes
            ]
    finally:
        for process in processes:
            process.stop()
    return list(results.values()), probs


def convert_missing(model_dir: Path, formats: list[str]) -> None:
    """Build converted files that are absent (``make convert`` does it once; ONNX needs tf2onnx)."""
    missing = [fmt for fmt in formats if not (model_dir / FORMATS[fmt]).exists()]
    if "onnx" in missing and importlib.util.find_spec("tf2onnx") is None:
        print("onnx: model.onnx is missing and tf2onnx is not installed: run `make convert`")
        missing.remove("onnx")
    if missing:
        print(f"converting {', '.join(missing)} first (as `make convert` would)...", flush=True)
        with multiprocessing.get_context("spawn").Pool(1) as pool:  # keep TensorFlow out of this process
            pool.apply(convert, (model_dir, missing))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("models/efficientnet_lite0/1"))
    parser.add_argument("--out", type=Path, default=Path("bench/results.json"))
    labels = [label for label, _, _ in VARIANTS]
    parser.add_argument("--engines", nargs="+", default=labels, choices=labels)
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=0.5, help="Time per engine, batch size and round")
    parser.add_argument("--rounds", type=int, default=3, help="Interleaved timing rounds over all engines")
    parser.add_argument("--photos", type=int, default=600, help="Real photos for the agreement figures")
    parser.add_argument("--photoset", type=Path, default=PHOTOSET_DIR)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    bench_started = time.perf_counter()

    metadata = json.loads((args.model / "metadata.json").read_text())
    convert_missing(args.model, [label for label in args.engines if label in FORMATS])
    cpu = cpu_info()
    images = photo_batch(agreement_photos(args.photoset, args.photos), int(metadata["input_size"]))
    scratch = tempfile.TemporaryDirectory(prefix="bench-")
    images_path = Path(scratch.name) / "images.npy"
    np.save(images_path, images)

    results, probs = bench_engines(args, images_path, len(images))
    reference = probs.get("savedmodel")
    for result in results:
        if reference is None or result["engine"] not in probs:
            continue
        candidate = probs[result["engine"]]
        measured: Agreement = agreement(reference[: len(candidate)], candidate)
        result["agreement"] = measured.as_dict()
        result["meets_threshold"] = measured.top1_agreement >= MIN_TOP1_AGREEMENT
        if result["meets_threshold"] != result["offered"] and result["engine"] in CANDIDATE_ENGINES:
            result["note"] = "offered status disagrees with this measurement: review predictions/engines.ENGINES"

    base = {row["batch"]: row["per_image_ms"] for r in results if r["engine"] == "savedmodel" for row in r["batches"]}
    for result in results:
        for row in result.get("batches", []):
            if row["batch"] in base:
                row["speedup_vs_savedmodel"] = round(base[row["batch"]] / row["per_image_ms"], 2)

    scratch.cleanup()
    cpu["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    report = {
        "model": f"{metadata['name']} v{metadata['version']}",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": cpu,
        "photos": len(images),
        "min_top1_agreement": MIN_TOP1_AGREEMENT,
        "offered_engines": list(ENGINES),
        "seconds": round(time.perf_counter() - bench_started, 1),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report, args.batch_sizes)
    print(f"\nwritten to {args.out} in {report['seconds']} s")


def print_table(report: dict[str, Any], batch_sizes: list[int]) -> None:
    cpu = report["machine"]
    load = cpu["load_average_1m_at_start"]
    print(f"\n{report['model']} on {cpu_line(cpu)} ({report['created']}, load average {load})")
    photos, threshold = report["photos"], MIN_TOP1_AGREEMENT
    print(f"top-1 agreement with the SavedModel on {photos} real photos; offered if >= {threshold:.1%}\n")
    sizes = " | ".join(f"ms/img b{size}" for size in batch_sizes)
    columns = f"img/s b{batch_sizes[-1]} | vs savedmodel | top-1 agree | mean / max abs diff | offered"
    print(f"| engine | load s | {sizes} | {columns} |")
    print("|---" * (len(batch_sizes) + 7) + "|")
    for result in report["results"]:
        if "error" in result:
            print(f"| {result['engine']} | {result['error']} |")
            continue
        rows = result["batches"]
        agree = result.get("agreement", {})
        ratios = "/".join(f"{row.get('speedup_vs_savedmodel', 0):.2f}" for row in rows)
        cells = [
            result["engine"], result["load_s"], *(row["per_image_ms"] for row in rows), rows[-1]["images_per_s"],
            f"{ratios}x", f"{agree.get('top1_agreement', 0):.2%}",
            f"{agree.get('mean_abs_prob_diff', 0):.1e} / {agree.get('max_abs_prob_diff', 0):.1e}",
            "yes" if result["offered"] else "no",
        ]  # fmt: skip
        print("| " + " | ".join(str(cell) for cell in cells) + " |")
    for result in report["results"]:
        if "note" in result:
            print(f"note: {result['engine']}: {result['note']}")


if __name__ == "__main__":
    main()
