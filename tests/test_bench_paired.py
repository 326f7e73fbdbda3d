"""bench/assistant.py --paired and bench/paired_greedy.py: two runs compared item by item."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import assistant, paired_greedy  # noqa: E402


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


def test_several_folders_of_one_length_are_pooled_into_one_line():
    def folder(k: int, scores: list[tuple[float, float]], texts: list[str]) -> dict:
        return {**run(4096, scores, texts), "folder_index": k}

    before = [folder(0, [(0, 0.0)], ["a"]), folder(1, [(1, 1.0)], ["b"])]
    after = [folder(1, [(1, 1.0)], ["b"]), folder(0, [(1, 1.0)], ["z"])]  # matched by folder, not position
    cells = row(assistant.paired(before, after), 4096)
    # F1 differences +100 (folder 0) and 0 (folder 1): mean +50, SD 70.71, SE 50.
    assert cells[3:] == ["2", "50.0 / 50.0", "100.0 / 100.0", "+50.0 (50.0)", "+50.0 (50.0)", "1"]


def test_every_length_of_a_configuration_is_also_pooled_into_one_line():
    before = [run(4096, [(0, 0.0), (0, 0.0)], ["a", "b"]), run(16384, [(1, 1.0)], ["c"])]
    after = [run(16384, [(1, 1.0)], ["c"]), run(4096, [(1, 1.0), (0, 0.0)], ["x", "b"])]
    table = assistant.paired(before, after)
    assert row(table, 4096)[3] == "2" and row(table, 16384)[3] == "1"
    # F1 differences +100, 0 (4k) and 0 (16k): mean +33.3, SD 57.74, SE 33.3, over the 3 questions
    assert row(table, "all")[3:] == ["3", "33.3 / 33.3", "66.7 / 66.7", "+33.3 (33.3)", "+33.3 (33.3)", "1"]
    assert "| all |" not in assistant.paired(before[:1], after[1:])  # one length: its line is the pool


class _WordTokenizer:
    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": text.split()}


def test_folders_of_one_length_hold_disjoint_answers(tmp_path):
    from bench.qa_data import FAQItem

    paragraphs = [f"paragraph {i} " + "word " * 8 for i in range(12)]
    examples = [FAQItem(f"s:d:{i}", "s", "d", f"what is {i}?", p, str(i)) for i, p in enumerate(paragraphs)]
    taken: set[str] = set()
    folders = [assistant.build_folder(examples, 40, tmp_path / f"f{k}", _WordTokenizer(), 100, taken=taken)
               for k in range(3)]
    texts = [{f.read_text() for f in (tmp_path / f"f{k}").iterdir()} for k in range(3)]
    assert all(len(t) == 4 for t in texts)  # 40 words hold four 10-word answers
    assert not (texts[0] & texts[1]) and not (texts[0] & texts[2]) and not (texts[1] & texts[2])
    for k, questions in enumerate(folders):  # every question is about a paragraph in its own folder
        assert questions and all((tmp_path / f"f{k}" / q["file"]).read_text().startswith(
            f"paragraph {q['targets'][0]} ") for q in questions)
    # The first folder is the one a one-folder run builds: earlier results stay comparable.
    assert assistant.build_folder(examples, 40, tmp_path / "again", _WordTokenizer(), 100) == folders[0]


def test_two_configurations_of_one_run_pair_with_each_other(tmp_path):
    """latent:4 against latent:8 on the same folders: which ratio answers better, question by question."""
    n4 = run(4096, [(1, 1.0), (0, 0.5)], ["a", "b"])
    n8 = {**run(4096, [(0, 0.0), (0, 0.5)], ["x", "b"]), "ratio": 8}
    report = tmp_path / "both.json"
    report.write_text(json.dumps([n4, n8]))
    assert "| 4096 |" not in assistant.paired([n4], [n8])  # different configurations never pair by default
    cells = row(assistant.paired([n4], [n8], across_configs=True), 4096)
    # F1 differences -100 and 0: mean -50, SD 70.71, SE 50; the line names the after side's ratio.
    assert cells[1:] == ["latent", "8", "2", "50.0 / 75.0", "0.0 / 25.0", "-50.0 (50.0)", "-50.0 (50.0)", "1"]
    assert assistant.main(["--paired", f"{report}:latent:4", f"{report}:latent:8"]) == 0
    with pytest.raises(SystemExit, match="no latent:16 runs in the report; it holds latent:4, latent:8"):
        assistant.main(["--paired", f"{report}:latent:4", f"{report}:latent:16"])
    with pytest.raises(ValueError, match="one configuration a side"):
        assistant.paired([n4, n8], [n8], across_configs=True)


def eval_report(each: list[float], digest: str = "same-passages") -> dict:
    return {"recon_greedy_acc": sum(each) / len(each), "recon_greedy_each": each, "passages_sha256": digest}


def test_greedy_copies_pair_passage_by_passage():
    a = eval_report([0.0, 1.0, 0.5, 0.25])
    b = eval_report([0.5, 1.0, 0.5, 0.0])
    r = paired_greedy.paired(a, b)
    # differences +50, 0, 0, -25 (points): mean +6.25, sample SD 31.46, SE 15.73
    assert (r["n"], r["up"], r["down"]) == (4, 1, 1)
    assert r["a"] == pytest.approx(43.75) and r["b"] == pytest.approx(50.0)
    assert r["change"] == pytest.approx(6.25) and r["change_se"] == pytest.approx(15.73, abs=0.01)


def test_greedy_reports_of_different_passages_are_not_paired(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(eval_report([0.0, 1.0], "these")))
    (tmp_path / "b.json").write_text(json.dumps(eval_report([1.0, 1.0], "others")))
    with pytest.raises(SystemExit, match="different passages"):
        paired_greedy.main([str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    (tmp_path / "old.json").write_text(json.dumps({"recon_greedy_acc": 0.25}))
    with pytest.raises(SystemExit, match="no per-passage greedy scores"):
        paired_greedy.main([str(tmp_path / "old.json"), str(tmp_path / "b.json")])


def test_eval_qa_conditions_pair_with_rag_question_by_question():
    from bench import qa_paired

    def rec(cond, qid, f1):
        return {"measure": "faq", "condition": cond, "id": qid, "f1": f1, "em": 0.0}

    report = {"compressor": {"ratio": 8}, "records": [
        rec("rag", "a", 0.2), rec("rag", "b", 0.4), rec("latents+quotes", "a", 0.5), rec("latents+quotes", "b", 0.3),
        {"measure": "needle", "condition": "rag", "correct": 1.0}]}
    rows = {c: (n, m, d, se) for c, n, m, d, se in qa_paired.paired_rows(report)}
    # differences +30 and -10 points: mean +10, SD 28.28, SE 20
    n, m, d, se = rows["latents+quotes"]
    assert n == 2 and m == pytest.approx(40) and d == pytest.approx(10) and se == pytest.approx(20)
    assert rows["rag"][2] == 0
    assert "| r | 8 | latents+quotes | 2 | 40.0 | +10.0 | 20.0 |" in qa_paired.table([("r", report)])
    with pytest.raises(SystemExit, match="no 'none' condition"):
        qa_paired.paired_rows(report, base="none")


def test_a_configuration_spells_its_options_once_for_the_run_and_the_report():
    assert assistant.parse_config("latent:8") == ("latent", 8, "append")  # what reports have always said
    assert assistant.parse_config("latent:8:top16:x0") == ("latent", 8, "top16:x0")
    assert assistant.config_options("top16:x0") == {"latent_top": 16, "expand_k": 0}
    assert assistant.config_options("inplace") == {"expand_style": "inplace"}
    assert assistant.config_options("warm") == {}  # not a setting: the run warms the documents block first
    with pytest.raises(ValueError, match="unknown configuration option"):
        assistant.parse_config("latent:8:top")
