"""Per-epoch metrics of a run, appended to metrics.csv and metrics.jsonl in the run folder."""

from __future__ import annotations

import csv
import json
from pathlib import Path


class MetricsLog:
    """One row per epoch ({"epoch": int, ...: float}) in ``folder``/metrics.jsonl and metrics.csv.

    ``truncate(epoch)`` drops the rows after ``epoch`` (a resumed run rewrites those epochs). The CSV
    is rewritten with every row (a few hundred bytes per epoch), so its header covers every column.
    """

    def __init__(self, folder: str | Path) -> None:
        self.jsonl = Path(folder) / "metrics.jsonl"
        self.csv = Path(folder) / "metrics.csv"
        self.rows = self._read()

    def _read(self) -> list[dict]:
        if not self.jsonl.exists():
            return []
        return [json.loads(line) for line in self.jsonl.read_text().splitlines() if line.strip()]

    def truncate(self, epoch: int) -> None:
        self.rows = [row for row in self.rows if row["epoch"] <= epoch]
        self._rewrite()

    def append(self, row: dict) -> None:
        self.rows.append(row)
        with self.jsonl.open("a") as f:
            f.write(json.dumps(row) + "\n")
        self._write_csv()

    def _rewrite(self) -> None:
        self.jsonl.parent.mkdir(parents=True, exist_ok=True)
        self.jsonl.write_text("".join(json.dumps(row) + "\n" for row in self.rows))
        self._write_csv()

    def _write_csv(self) -> None:
        columns = list(dict.fromkeys(key for row in self.rows for key in row))
        with self.csv.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.rows)
