"""bench/assistant.py --paired: two runs compared question by question."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import assistant  # noqa: E402


def run(length: int, scores: list[tuple[float, float]], texts: list[str]) -> dict:
    return {"length": length, "mode": "latent", "ratio": 4, "style": "append",
            "rows": [{"em": em, "f1": f1, "text": t} for (em, f1), t in zip(scores, texts)]}


def row(table: str, length: int) -> list[str]:
    line = next(x for x in table.splitlines() if x.startswith(f"| {length} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_change_and_its_standard_error_come_from_the_paired_differences():
    before = [run(4096, [(0, 0.5), (1, 1.0), (0, 0.0), (0, 0.2)], ["a", "b", "c", "d"])]
    after = [run(4096, [(1, 1.0), (1, 1.0), (0, 0.0), (0, 0.0)], ["x", "b", "c", "y"])]
    cells = row(assistant.paired(before, after), 4096)
    # F1 differences +50, 0, 0, -20 (points): mean +7.5, sample SD 29.86, SE 14.93.
    assert cells[3:] == ["4", "25.0 / 42.5", "50.0 / 50.0", "+25.0 (25.0)", "+7.5 (14.9)", "2"]


def test_runs_are_matched_by_folder_and_configuration_not_by_position(tmp_path):
    before = [run(4096, [(0, 0.0)] * 2, ["a", "a"]), run(16384, [(1, 1.0)] * 2, ["b", "b"])]
    after = [run(16384, [(0, 0.5)] * 2, ["c", "c"]), {**run(4096, [], []), "error": "ran out of memory"}]
    (tmp_path / "b.json").write_text(json.dumps(before))
    (tmp_path / "a.json").write_text(json.dumps(after))
    table = assistant.paired(before, after)
    assert "| 4096 |" not in table  # the failed run has nothing to pair with
    assert row(table, 16384)[3:] == ["2", "100.0 / 100.0", "0.0 / 50.0", "-100.0 (0.0)", "-50.0 (0.0)", "2"]
    assert assistant.main(["--paired", str(tmp_path / "b.json"), str(tmp_path / "a.json")]) == 0
