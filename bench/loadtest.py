"""Load test against a running imagerec: N concurrent clients for T seconds mixing
API submissions, API polls, API lists and the HTML history page.

    python bench/loadtest.py --url http://127.0.0.1:8000 --users-file var/load/users.json

Prints requests/s, p50/p95/p99 per endpoint and the error count, then waits until every
submitted prediction is final and reports how many succeeded. Writes bench/loadtest.json.
Only ever talks to the --url you give it (a local server).
"""

from __future__ import annotations

import argparse
import io
import json
import random
import re
import statistics
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import requests
import requests.adapters
from PIL import Image
from urllib3.util.retry import Retry

MIX = (("submit", 0.15), ("poll", 0.45), ("list", 0.2), ("history_page", 0.2))


def _photo(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


class Client(threading.Thread):
    def __init__(self, index: int, base: str, account: dict, stop_at: float, record) -> None:
        super().__init__(daemon=True)
        self.index, self.base, self.account, self.stop_at, self.record = index, base, account, stop_at, record
        self.api = requests.Session()
        self.api.headers["Authorization"] = f"Token {account['token']}"
        self.web = requests.Session()
        self.submitted: list[str] = []
        self.rng = random.Random(index)

    def login(self) -> None:
        page = self.web.get(f"{self.base}/accounts/login/", timeout=30)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        response = self.web.post(
            f"{self.base}/accounts/login/",
            data={"username": self.account["username"], "password": self.account["password"],
                  "csrfmiddlewaretoken": token},
            headers={"Referer": f"{self.base}/accounts/login/"}, timeout=30, allow_redirects=False,
        )  # fmt: skip
        if response.status_code != 302:
            raise RuntimeError(f"login failed for {self.account['username']}: {response.status_code}")

    def call(self, name: str, method, url: str, ok: tuple[int, ...], **kwargs) -> requests.Response | None:
        began = time.perf_counter()
        try:
            response = method(url, timeout=60, **kwargs)
            failed = response.status_code not in ok
        except requests.RequestException:
            response, failed = None, True
        self.record(name, (time.perf_counter() - began) * 1000, failed)
        return response

    def run(self) -> None:
        self.login()
        counter = 0
        while time.monotonic() < self.stop_at:
            action = self.rng.choices([m[0] for m in MIX], weights=[m[1] for m in MIX])[0]
            if action == "poll" and not self.submitted:
                action = "submit"
            if action == "submit":
                counter += 1
                files = {"image": (f"load-{self.index}-{counter}.jpg", _photo(self.index * 100_000 + counter))}
                response = self.call("POST /api/v1/predictions/", self.api.post, f"{self.base}/api/v1/predictions/",
                                     (202,), files=files)  # fmt: skip
                if response is not None and response.status_code == 202:
                    self.submitted.append(response.json()["id"])
            elif action == "poll":
                prediction_id = self.rng.choice(self.submitted[-5:])
                self.call("GET /api/v1/predictions/{id}/", self.api.get,
                          f"{self.base}/api/v1/predictions/{prediction_id}/", (200,))  # fmt: skip
            elif action == "list":
                self.call("GET /api/v1/predictions/", self.api.get, f"{self.base}/api/v1/predictions/", (200,))
            else:
                self.call("GET /history/", self.web.get, f"{self.base}/history/", (200,))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--users-file", type=Path, required=True, help="JSON list of {username, password, token}")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--drain-timeout", type=float, default=900)
    parser.add_argument("--out", type=Path, default=Path("bench/loadtest.json"))
    args = parser.parse_args()
    if not re.match(r"^https?://(127\.\d+\.\d+\.\d+|localhost|\[::1\])(:\d+)?$", args.url):
        parser.error("the load test only targets a server on this machine (127.0.0.0/8, localhost, [::1])")

    accounts = json.loads(args.users_file.read_text())
    samples: dict[str, list[float]] = defaultdict(list)
    errors: dict[str, int] = defaultdict(int)
    lock = threading.Lock()

    def record(name: str, ms: float, failed: bool) -> None:
        with lock:
            samples[name].append(ms)
            errors[name] += failed

    stop_at = time.monotonic() + args.seconds
    clients = [Client(i, args.url, accounts[i % len(accounts)], stop_at, record) for i in range(args.clients)]
    began = time.monotonic()
    for client in clients:
        client.start()
    for client in clients:
        client.join()
    elapsed = time.monotonic() - began

    submitted = [pid for client in clients for pid in client.submitted]
    drain_began = time.monotonic()
    final: dict[str, str] = {}
    checker = requests.Session()
    # Idle between rounds: a kept-alive connection the server already closed is retried.
    checker.mount("http://", requests.adapters.HTTPAdapter(max_retries=Retry(total=3, allowed_methods=["GET"])))
    owner = {pid: client.account["token"] for client in clients for pid in client.submitted}
    while len(final) < len(submitted) and time.monotonic() - drain_began < args.drain_timeout:
        for pid in submitted:
            if pid in final:
                continue
            body = checker.get(f"{args.url}/api/v1/predictions/{pid}/", timeout=60,
                               headers={"Authorization": f"Token {owner[pid]}"}).json()  # fmt: skip
            if body["status"] in ("succeeded", "failed"):
                final[pid] = body["status"]
        if len(final) < len(submitted):
            time.sleep(2)
    drain_s = time.monotonic() - drain_began

    total_requests = sum(len(v) for v in samples.values())
    report = {
        "clients": args.clients,
        "seconds": round(elapsed, 1),
        "requests": total_requests,
        "requests_per_s": round(total_requests / elapsed, 1),
        "errors": sum(errors.values()),
        "endpoints": {
            name: {
                "count": len(values),
                "errors": errors[name],
                "p50_ms": round(statistics.median(values), 1),
                "p95_ms": round(float(np.percentile(values, 95)), 1),
                "p99_ms": round(float(np.percentile(values, 99)), 1),
            }
            for name, values in sorted(samples.items())
        },
        "submitted": len(submitted),
        "succeeded": sum(status == "succeeded" for status in final.values()),
        "failed": sum(status == "failed" for status in final.values()),
        "not_final": len(submitted) - len(final),
        "drain_seconds_after_load": round(drain_s, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{args.clients} clients for {report['seconds']} s: {total_requests} requests, "
          f"{report['requests_per_s']} req/s, {report['errors']} errors")  # fmt: skip
    print("| endpoint | requests | errors | p50 ms | p95 ms | p99 ms |\n|---|---|---|---|---|---|")
    for name, row in report["endpoints"].items():
        print(f"| {name} | {row['count']} | {row['errors']} | {row['p50_ms']} | {row['p95_ms']} | {row['p99_ms']} |")
    print(f"\nsubmitted {report['submitted']}: succeeded {report['succeeded']}, failed {report['failed']}, "
          f"not final {report['not_final']} ({report['drain_seconds_after_load']} s to drain)")  # fmt: skip
    print(f"written to {args.out}")
    if report["errors"] or report["not_final"] or report["failed"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
