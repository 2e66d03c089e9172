"""`medsam2 serve` under load, on loopback only: N clients at once against --max-sessions 4.

Each client uploads the bundled CT (retrying after 429), gives the spleen's box on its middle slice,
propagates, downloads the label map and closes its session. Checked: no 5xx, and every client's
labels equal what `medsam2 segment` writes for the same box. Printed: requests, refusals, p50/p95
latency per endpoint, the server's peak RSS, and the time to the first mask after a box on a slice
that is not encoded yet and on one that is (a second object on the same, propagated session).

    python benchmarks/serve_load.py [--clients 8] [--max-sessions 4] [--deadline 1800]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import httpx
import numpy as np
from common import REPO, machine_line  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

OUT = REPO / "benchmarks" / "results" / "serve_load.md"


class Client:
    """One annotator's requests, timed per endpoint."""

    def __init__(self, url: str, latencies: dict, counts: dict, deadline: float) -> None:
        self.url = url
        self.latencies = latencies
        self.counts = counts
        self.deadline = deadline
        self.http = httpx.Client(timeout=1800)

    def call(self, endpoint: str, method: str, path: str, **kwargs) -> httpx.Response:
        began = time.perf_counter()
        response = self.http.request(method, self.url + path, **kwargs)
        seconds = time.perf_counter() - began
        self.counts["requests"] += 1
        if response.status_code >= 500:
            self.counts["5xx"] += 1
        if response.status_code == 429:
            self.counts["429"] += 1
        else:
            self.latencies[endpoint].append(seconds)
        return response

    def run(self, ct: Path, box: dict, folder: Path) -> np.ndarray:
        from medsam2 import load_volume

        while True:
            with ct.open("rb") as handle:
                opened = self.call("POST /sessions (upload)", "POST", "/api/sessions", files={"file": (ct.name, handle)})
            if opened.status_code != 429:
                break
            if time.monotonic() > self.deadline:
                raise TimeoutError("refused until the deadline")
            time.sleep(float(opened.headers.get("retry-after", "1")))
        opened.raise_for_status()
        session = opened.json()["session"]
        base = f"/api/sessions/{session}"
        self.call("POST prompts", "POST", f"{base}/objects/1/prompts", json={"box": box, "name": "spleen"}).raise_for_status()
        streamed = self.call("POST propagate (to the end)", "POST", f"{base}/propagate")
        streamed.raise_for_status()
        if not json.loads(streamed.text.strip().splitlines()[-1]).get("finished"):
            raise RuntimeError(f"propagation did not finish: {streamed.text[-300:]}")
        labels = self.call("GET labels", "GET", f"{base}/labels")
        labels.raise_for_status()
        path = folder / f"{session}.nii.gz"
        path.write_bytes(labels.content)
        self.call("DELETE session", "DELETE", base).raise_for_status()
        return load_volume(path).array


def first_mask_seconds(url: str, ct: Path, box: dict, reference: np.ndarray) -> tuple[float, float, float, float]:
    """(uncached first line, uncached first mask, cached first line, cached first mask), seconds from
    POST propagate: a box on a session that has encoded nothing, then a second object (the left
    kidney's middle-slice box) on the same session, whose slices are all encoded."""
    from medsam2.evaluation.protocols import middle_slice_box

    def timed(http, base, label, prompt) -> tuple[float, float]:
        http.post(f"{url}{base}/objects/{label}/prompts", json={"box": prompt}).raise_for_status()
        began = time.perf_counter()
        first_line = first_mask = None
        with http.stream("POST", f"{url}{base}/propagate", json={"masks": True}) as response:
            for line in response.iter_lines():
                if not line:
                    continue
                now = time.perf_counter() - began
                first_line = first_line or now
                if "rle" in json.loads(line):
                    first_mask = first_mask or now
        return first_line, first_mask

    with httpx.Client(timeout=1800) as http, ct.open("rb") as handle:
        session = http.post(f"{url}/api/sessions", files={"file": (ct.name, handle)}).json()["session"]
        base = f"/api/sessions/{session}"
        uncached = timed(http, base, 1, box)
        kidney = middle_slice_box(reference == 3)
        cached = timed(http, base, 3, {"slice": kidney.frame, "box": [kidney.x0, kidney.y0, kidney.x1, kidney.y1]})
        http.delete(f"{url}{base}")
    return (*uncached, *cached)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--max-sessions", type=int, default=4)
    parser.add_argument("--deadline", type=float, default=1800.0, help="seconds before the run gives up")
    args = parser.parse_args()

    from medsam2 import load_volume
    from medsam2.cli.demo import sample_paths
    from medsam2.evaluation.protocols import middle_slice_box

    ct, seg = sample_paths()
    reference = load_volume(seg).array
    spleen = middle_slice_box(reference == 1)
    box = {"slice": spleen.frame, "box": [spleen.x0, spleen.y0, spleen.x1, spleen.y1]}
    work = Path(tempfile.mkdtemp(prefix="medsam2-serve-load-"))
    medsam2 = [sys.executable, "-m", "medsam2.cli"]
    expected_path = work / "segment.nii.gz"
    box_text = f"{spleen.frame}:{','.join(str(int(v)) for v in box['box'])}"
    subprocess.run([*medsam2, "segment", str(ct), "--box", box_text, "-o", str(expected_path), "--quiet"], check=True)
    expected = load_volume(expected_path).array

    server = subprocess.Popen([*medsam2, "serve", "--port", "0", "--quiet", "--max-sessions", str(args.max_sessions)],
                              stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().split()[1].rstrip("/")
        timings = first_mask_seconds(url, ct, box, reference)
        latencies: dict[str, list[float]] = defaultdict(list)
        counts: dict[str, int] = defaultdict(int)
        deadline = time.monotonic() + args.deadline
        results: dict[int, object] = {}

        def client(index: int) -> None:
            try:
                results[index] = Client(url, latencies, counts, deadline).run(ct, box, work)
            except Exception as exc:  # noqa: BLE001 (reported in the table)
                results[index] = exc

        began = time.perf_counter()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - began
        rss = peak_rss_mb(server.pid)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)

    failures = [f"client {i}: {r}" for i, r in sorted(results.items()) if isinstance(r, Exception)]
    equal = sum(1 for r in results.values() if isinstance(r, np.ndarray) and np.array_equal(r, expected))
    rows = [
        f"# medsam2 serve under load ({time.strftime('%Y-%m-%d')})",
        "",
        f"Machine: {machine_line()}",
        "",
        f"{args.clients} clients at once against `--max-sessions {args.max_sessions}`, each: upload the bundled CT "
        f"({reference.shape[0]} slices), box on the spleen's middle slice, propagate, download, close. "
        f"Reproduce: `python benchmarks/serve_load.py --clients {args.clients}`.",
        "",
        f"- wall time {wall:.1f} s; requests {counts['requests']}; refused with 429 (then retried) {counts['429']}; "
        f"5xx {counts['5xx']}; failed clients {len(failures)}",
        f"- labels equal to `medsam2 segment` with the same box: {equal} of {args.clients}",
        f"- server peak RSS {rss:.0f} MB",
        f"- time to the first streamed line / first slice mask after a box: uncached slice {timings[0]:.2f} s / {timings[1]:.2f} s; "
        f"cached slice (second object, same session) {timings[2]:.2f} s / {timings[3]:.2f} s",
        "",
        "| endpoint | requests | p50 s | p95 s |",
        "|---|---:|---:|---:|",
    ]
    for endpoint, values in latencies.items():
        ordered = sorted(values)
        p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
        rows.append(f"| {endpoint} | {len(values)} | {statistics.median(ordered):.3f} | {p95:.3f} |")
    rows.extend(["", *failures])
    text = "\n".join(rows) + "\n"
    print(text)
    OUT.write_text(text)
    for path in work.iterdir():
        path.unlink()
    work.rmdir()
    return 0 if not failures and counts["5xx"] == 0 and equal == args.clients else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
