"""What share of a run's wall time went to rendering sample columns.

    python bench/sampling_share.py RUN_DIR [--json]

Reads only `RUN_DIR/events.jsonl`. A column's time is its `sample_done` event's `seconds` (the trainer
writes `sample_started` / `sample_done` around each column). Runs written before those events existed
are estimated: from the last non-sample event before the column's first `sample` event (the
checkpoint or the start) to its last `sample` event — an upper bound, since it also counts whatever
happened in between. Wall time is from the first event to the last (`finished`/`stopped`), so the
model load before the first event is not counted; per-image time is the column seconds over its images.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def read_events(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            ev = json.loads(line)
        except json.JSONDecodeError:
            continue  # a half-written last line
        if isinstance(ev, dict) and "t" in ev and "kind" in ev:
            out.append(ev)
    return out


def column_of(ev: dict[str, Any]) -> str:
    if "column" in ev:
        return str(ev["column"])
    parts = str(ev.get("path", "")).split("/")
    return parts[1] if len(parts) >= 3 else f"e{ev.get('epoch', 0):04d}-s{ev.get('step', 0):08d}"


def sampling_share(events: list[dict[str, Any]]) -> dict[str, Any]:
    if not events:
        raise ValueError("no events")
    wall = events[-1]["t"] - events[0]["t"]
    columns: dict[str, dict[str, Any]] = {}
    last_other_t = events[0]["t"]
    for ev in events:
        kind = ev["kind"]
        if kind == "sample_done":
            col = columns.setdefault(column_of(ev), {"images": 0})
            col.update(seconds=float(ev["seconds"]), images=int(ev.get("images", col["images"])), measured=True)
        elif kind == "sample":
            col = columns.setdefault(column_of(ev), {"images": 0, "first_t": None})
            if col.get("first_t") is None:
                col["first_t"], col["from_t"] = ev["t"], last_other_t
            col["last_t"] = ev["t"]
            col["images_seen"] = col.get("images_seen", 0) + 1
        elif kind != "sample_started":
            last_other_t = ev["t"]
    rows = []
    for name, col in columns.items():
        if not col.get("measured"):
            col["seconds"] = col["last_t"] - col["from_t"]
            col["images"] = col.get("images_seen", 0)
        rows.append({"column": name, "images": col["images"], "seconds": round(col["seconds"], 3),
                     "seconds_per_image": round(col["seconds"] / col["images"], 4) if col["images"] else None,
                     "measured": bool(col.get("measured"))})
    total = sum(r["seconds"] for r in rows)
    images = sum(r["images"] for r in rows)
    return {"wall_s": round(wall, 2), "sampling_s": round(total, 2),
            "share": round(total / wall, 4) if wall > 0 else None, "images": images,
            "seconds_per_image": round(total / images, 4) if images else None,
            "columns": rows, "estimated": any(not r["measured"] for r in rows)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args(argv)
    path = args.run_dir / "events.jsonl"
    if not path.is_file():
        print(f"sampling_share: {path}: no such file", file=sys.stderr)
        return 2
    try:
        r = sampling_share(read_events(path))
    except ValueError as e:
        print(f"sampling_share: {path}: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    for c in r["columns"]:
        print(f"{c['column']:<22} {c['images']:>4} images {c['seconds']:>8.2f} s "
              f"({c['seconds_per_image'] or 0:.3f} s/image){'' if c['measured'] else '  (estimated)'}")
    print(f"sampling {r['sampling_s']:.1f} s of {r['wall_s']:.1f} s wall = {100 * (r['share'] or 0):.1f}%"
          f" ({r['images']} images, {r['seconds_per_image'] or 0:.3f} s/image)"
          + ("; some columns estimated from sample events" if r["estimated"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
