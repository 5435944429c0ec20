# SPDX-License-Identifier: AGPL-3.0-or-later
"""Run every benchmark one after the other and write a markdown table of the results.

    .venv/bin/python bench/run_all.py [--out bench/results.md] [--only upload,decrypt]

Each benchmark runs as its own process (``.venv/bin/python bench/<name>.py``) and appends its
result rows to a JSON-lines file; this script prints their output as it comes and then the table.
Start PostgreSQL and Redis first (``bash .ci/services``): submissions.py needs Redis, upload.py
and case_list.py also measure PostgreSQL when it answers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH, machine  # noqa: E402

BENCHMARKS = ("submissions", "protocol_v2", "upload", "decrypt", "browser", "lowband", "case_list",
              "attacks", "casebook", "patterns", "whatsapp")


def fmt(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def table(rows: list[dict[str, object]], info: dict[str, str]) -> str:
    lines = [
        f"Run on {dt.date.today().isoformat()}: `nproc` = {info['nproc']}, CPU {info['cpu']}, "
        f"load average at the end {info['loadavg']}.",
        "",
        "| benchmark | measured | value | baseline | baseline value | ratio | target | result |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['benchmark']} | {r['metric']} | {fmt(float(r['value']))} {r['unit']} "  # type: ignore[arg-type]
            f"| {r['baseline']} | {fmt(float(r['baseline_value']))} "  # type: ignore[arg-type]
            f"| {float(r['ratio']):.3f} | {r['target']} | "  # type: ignore[arg-type]
            f"{'PASS' if r['passed'] else '**MISS**'} |")
    notes = [f"- {r['benchmark']}: {r['note']}" for r in rows if r.get("note")]
    if notes:
        lines += ["", "Notes:", "", *notes]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=BENCH / "results.md")
    ap.add_argument("--only", default="", help="comma-separated subset of " + ", ".join(BENCHMARKS))
    args = ap.parse_args()
    chosen = [b for b in BENCHMARKS if not args.only or b in args.only.split(",")]
    rows: list[dict[str, object]] = []
    failed = []
    with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as results:
        env = dict(os.environ, WHISTLE_BENCH_RESULTS=results.name, PYTHONUNBUFFERED="1")
        for name in chosen:
            print(f"\n######## {name}", flush=True)
            start = time.monotonic()
            proc = subprocess.run([sys.executable, str(BENCH / f"{name}.py")], env=env, check=False)
            print(f"######## {name}: exit {proc.returncode} after {time.monotonic() - start:.0f} s",
                  flush=True)
            if proc.returncode != 0:
                failed.append(f"{name} (exit {proc.returncode})")
        rows = [json.loads(line) for line in Path(results.name).read_text().splitlines() if line]
    text = table(rows, machine())
    if failed:
        text += "\nDid not complete: " + ", ".join(failed) + "\n"
    args.out.write_text(text, encoding="utf-8")
    print("\n" + text)
    print(f"written to {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
