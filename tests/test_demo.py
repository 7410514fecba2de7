"""deepfast demo at smoke-test settings: every section runs, the report's images exist, runs are reused."""

import json
import re

import pytest
import torch

from deepfast import cli
from deepfast.demo.report import Section, write_report

Image = pytest.importorskip("PIL.Image")  # (the demo needs Pillow; importing deepfast does not)

from deepfast.demo.run import SECTIONS, run_demo  # noqa: E402


@pytest.fixture(scope="module")
def smoke_demo(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("demo")
    try:
        path, failed = run_demo(out, smoke=True, progress=False)
    finally:
        torch.set_num_threads(threads)
    return out, path, failed


def test_every_section_runs_and_every_image_loads(smoke_demo):
    out, path, failed = smoke_demo
    assert failed == []
    page = path.read_text()
    assert "this section failed" not in page
    for title, _ in SECTIONS:
        assert title in page
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) >= 10
    for src in sources:
        with Image.open(out / src) as img:
            img.verify()


def test_a_second_run_reuses_the_finished_training_runs(smoke_demo):
    out, _, _ = smoke_demo
    checkpoints = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/last.pt")}
    assert len(checkpoints) >= 6
    _, failed = run_demo(out, smoke=True, progress=False, only=["vae"])
    assert failed == []
    assert {p: p.stat().st_mtime_ns for p in checkpoints} == checkpoints


def test_a_failing_section_is_reported_not_fatal(tmp_path, monkeypatch):
    def broken(demo, section):
        raise RuntimeError("broken on purpose")

    monkeypatch.setattr("deepfast.demo.run.SECTIONS", [("Broken", broken)])
    path, failed = run_demo(tmp_path, smoke=True, progress=False)
    assert failed == ["Broken"] and "broken on purpose" in path.read_text()
    monkeypatch.setattr("deepfast.demo.run.run_demo", lambda *a, **k: (path, ["Broken"]))
    assert cli.main(["demo", "--out", str(tmp_path)]) == 1


def test_the_run_uses_the_threads_asked_for_and_restores_them(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(
        "deepfast.demo.run.SECTIONS", [("Threads", lambda demo, section: seen.append(torch.get_num_threads()))]
    )
    before = torch.get_num_threads()
    run_demo(tmp_path, smoke=True, progress=False, threads=1)
    results = json.loads((tmp_path / "results.json").read_text())
    assert seen == [1] and torch.get_num_threads() == before
    assert results["threads"] == 1 and results["threading"] == "1 torch thread (--threads)"
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="threads"):
            run_demo(tmp_path, smoke=True, progress=False, threads=bad)


def test_the_default_threads_leave_out_the_cpus_other_work_keeps_busy(monkeypatch):
    from deepfast.demo.run import thread_count

    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3})
    try:
        monkeypatch.setattr("deepfast.hardware.busy_cpus", lambda: 9.0)
        assert thread_count(None).startswith("1 torch thread (") and torch.get_num_threads() == 1
        torch.set_num_threads(4)
        monkeypatch.setattr("deepfast.hardware.busy_cpus", lambda: 1.2)
        assert thread_count(None) == "3 torch threads (torch's default 4, cut to the CPUs free with 1.2 of 4 busy)"
        monkeypatch.setattr("deepfast.hardware.busy_cpus", lambda: 0.1)
        assert thread_count(None) == "3 torch threads (torch's default 3)"
        monkeypatch.setenv("OMP_NUM_THREADS", "3")
        assert thread_count(None) == "3 torch threads (OMP_NUM_THREADS=3)"
    finally:
        torch.set_num_threads(before)


def test_report_escapes_text_and_formats_numbers(tmp_path):
    section = Section("<b>title</b>")
    section.text("a < b & c")
    section.table([{"name": "x", "value": 1 / 3}, {"name": "y", "extra": "z"}])
    page = write_report(tmp_path / "r.html", "t", ["meta"], [section]).read_text()
    assert "&lt;b&gt;title&lt;/b&gt;" in page and "a &lt; b &amp; c" in page
    assert "<td>0.3333</td>" in page and "<th>extra</th>" in page
