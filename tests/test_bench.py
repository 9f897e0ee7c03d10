"""``distillkit bench`` / ``report`` / ``--check``: suites compose, finished cells are skipped by fingerprint,
thresholds flag what regressed (and only that), and the report writes its table and plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from distillkit.bench import cells, load_suite, selected, selection
from distillkit.config import group_options
from distillkit.errors import UserError
from distillkit.report import (Row, add_gains, against_random, collect, markdown, merge_seeds, refresh_document,
                               write_report)
from distillkit.thresholds import Thresholds, check, load_thresholds
from support import ROOT, compose, distillkit


@pytest.mark.parametrize("name", group_options("bench"))
def test_every_shipped_suite_composes_every_cell(name):
    suite = load_suite(name)
    matrix = cells(suite, [])
    assert matrix and len({(c.name, c.seed) for c in matrix}) == len(matrix)
    for cell in matrix:
        OmegaConf.to_container(compose(*cell.all_overrides()), resolve=True)


def test_suite_matrix_order_exclusions_and_overrides(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("budget: smoke\ndatasets: [digits, fashion_mnist]\nipcs: [1, 10]\nseeds: 2\n"
                    "methods: {random: [], fast: [method=dm, generator.lr_img=0.5]}\noverrides: [tracker=none]\n"
                    "exclude: [{method: fast, ipc: 10}]\n")
    matrix = cells(load_suite(str(path)), ["seed=3"])
    assert [c.name for c in matrix] == ["random/digits/ipc1", "random/digits/ipc10", "random/fashion_mnist/ipc1",
                                        "random/fashion_mnist/ipc10", "fast/digits/ipc1", "fast/fashion_mnist/ipc1"]
    fast = matrix[4]
    assert fast.overrides == ("method=dm", "dataset=digits", "budget=smoke", "evaluator.num_seeds=2", "tracker=none",
                              "generator.lr_img=0.5", "seed=3")  # the command line's overrides come last
    assert fast.run_dir(tmp_path) == tmp_path / "fast" / "digits_ipc1"


def test_only_selects_a_slice_of_the_matrix_and_a_value_the_suite_lacks_is_one_line(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("budget: smoke\ndatasets: [digits, fashion_mnist]\nipcs: [1, 10]\nseeds: 1\n"
                    "methods: {random: [], dm: []}\n")
    suite = load_suite(str(path))
    chosen = selection(suite, ["dataset=digits", "method=dm,random", "ipc=10"])
    assert [c.name for c in cells(suite, []) if selected(c, chosen)] == ["random/digits/ipc10", "dm/digits/ipc10"]
    assert len([c for c in cells(suite, []) if selected(c, selection(suite, []))]) == 8
    with pytest.raises(UserError, match="suite 'mine' has no dataset 'digitz'"):
        selection(suite, ["dataset=digitz"])
    with pytest.raises(UserError, match="KEY one of method, dataset, ipc"):
        selection(suite, ["seed=1"])


def test_a_method_whose_run_is_one_measurement_runs_its_seeds_as_runs_and_the_report_joins_them(tmp_path):
    path = tmp_path / "mine.yaml"  # SSD-KD's rounds test the one student they train: evaluator seeds cannot vary it
    path.write_text("budget: cpu\ndatasets: [digits]\nipcs: [10]\nseeds: 2\nmethods: {random: [], ssdkd: []}\n")
    matrix = cells(load_suite(str(path)), [])
    assert [(c.name, c.seed) for c in matrix] == [("random/digits/ipc10", None), ("ssdkd/digits/ipc10", 0),
                                                  ("ssdkd/digits/ipc10", 1)]
    assert matrix[2].overrides[-1] == "seed=1" and matrix[2].run_dir(tmp_path) == tmp_path / "ssdkd/digits_ipc10/seed1"
    assert matrix[0].run_dir(tmp_path) == tmp_path / "random/digits_ipc10"
    for seed, value in enumerate([60.0, 64.0]):
        results_file(matrix[1 + seed].run_dir(tmp_path), "ssdkd", [value], seed=seed)
    [joined] = collect([tmp_path / "ssdkd"])
    assert joined.cell == "ssdkd/digits/ipc10" and joined.runs == [60.0, 64.0] and joined.seeds == [0, 1]


@pytest.mark.parametrize("text,message", [
    ("budget: smoke\ndatasets: [digits]\nipcs: [1]\nseeds: 0\nmethods: {random: []}\n", "seeds"),
    ("budget: smoke\ndatasets: [digits]\nipcs: [0]\nseeds: 1\nmethods: {random: []}\n", "ipcs must be ≥ 1"),
    ("budget: smoke\ndatasets: [digits]\nipcs: [1]\nseeds: 1\nmethods: {nope: []}\n", "unknown method 'nope'"),
    ("budget: smoke\ndatasets: [nope]\nipcs: [1]\nseeds: 1\nmethods: {random: []}\n", "unknown dataset 'nope'"),
    ("budget: smoke\ndatasets: [digits]\nipcs: [1]\nseeds: 1\nmethods: {random: []}\ntypo: 1\n", "typo"),
    ("budget: [smoke\n", "not a readable suite"),
])
def test_a_bad_suite_is_one_line(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        load_suite(str(path))
    with pytest.raises(UserError, match="unknown bench suite 'nope'"):
        load_suite("nope")


def row(cell="dm/digits/ipc10", mean=90.0, std=1.0, higher=True, method="dm", runs=None) -> Row:
    return Row(cell=cell, method=method, dataset="digits", ipc=10, budget="cpu", metric="accuracy" if higher else "fid",
               unit="%" if higher else "", higher_is_better=higher, mean=mean, std=std, runs=runs or [mean], published=None,
               seconds=1.0, peak_mib=None, device="cpu", run_dir=".",
               metrics={"accuracy" if higher else "fid": {"mean": mean, "std": std, "runs": runs or [mean]}})


def test_thresholds_flag_only_what_missed_by_more_than_the_tolerance():
    limits = Thresholds(tolerance_stds=2.0, min_tolerance=1.0,
                        cells={"a/digits/ipc10": 90.0, "b/digits/ipc10": 90.0, "c/digits/ipc10": 90.0,
                               "fid/digits/ipc10": 0.01, "gone/digits/ipc10": 50.0, "other/digits/ipc10": 1.0})
    rows = [row("a/digits/ipc10", 88.5, 0.2),   # misses by 1.5 > max(0.4, 1.0): regressed
            row("b/digits/ipc10", 88.5, 1.0),   # misses by 1.5 < 2 × 1.0: within the seeds' spread
            row("c/digits/ipc10", 95.0, 0.0),   # above the floor
            row("fid/digits/ipc10", 3.0, 0.1, higher=False)]  # FID 3 ≫ the ceiling 0.01 + max(0.2, 1.0)
    expected = ["a/digits/ipc10", "b/digits/ipc10", "c/digits/ipc10", "fid/digits/ipc10", "gone/digits/ipc10"]
    lines = check(rows, limits, expected)  # other/… is not part of this bench: not checked
    assert [line.split()[1].rstrip(":") for line in lines] == ["a/digits/ipc10", "fid/digits/ipc10", "gone/digits/ipc10"]
    assert "below the floor 90 by 1.5" in lines[0] and "above the ceiling" in lines[1] and "no result" in lines[2]


def test_a_bad_thresholds_file_is_one_line(tmp_path):
    with pytest.raises(UserError, match="no such thresholds file"):
        load_thresholds(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("cells: {a/digits/ipc1: 1}\ntolerance_stds: -1\n")
    with pytest.raises(UserError, match="tolerance_stds"):
        load_thresholds(bad)
    assert load_thresholds(Path("smoke")).cells  # the shipped file, by name


def test_gain_over_random_is_paired_over_seeds():
    rows = [row("random/digits/ipc10", 80.0, method="random", runs=[79.0, 80.0, 81.0]),
            row("dm/digits/ipc10", 85.0, runs=[84.0, 85.5, 85.5])]
    add_gains(rows)
    assert rows[0].gain is None and rows[1].gain == pytest.approx(5.0)
    assert rows[1].gain_ci == pytest.approx(4.303 * 0.5 / 3 ** 0.5, rel=1e-3)  # t(0.975, 2) · sd / √n


def test_a_random_row_under_another_evaluator_is_the_baseline_of_that_evaluators_metric():
    kd = row("random_kd/digits/ipc10", 70.0, method="random", runs=[69.0, 70.0, 71.0])
    ssdkd = row("ssdkd/digits/ipc10", 60.0, method="ssdkd", runs=[58.0, 60.0, 62.0])
    kd.metric = ssdkd.metric = "student_accuracy"
    plain = row("random/digits/ipc10", 90.0, method="random", runs=[90.0, 90.0, 90.0])
    broken = row("broken/digits/ipc10", 50.0, method="random", runs=[50.0, 50.0, 50.0])  # random, another name
    add_gains([kd, ssdkd, plain, broken])
    assert ssdkd.gain == pytest.approx(-10.0) and ssdkd.gain_ci is not None  # against KD, paired; not plain random
    assert kd.gain is None and plain.gain is None and broken.gain == pytest.approx(-40.0)


def test_runs_that_differ_only_in_seed_are_one_row_over_their_seeds():
    def run(seed, value, config="ssdkd", seconds=10.0):
        r = row("ssdkd/digits/ipc10", value, 0.0, method="ssdkd")
        r.seeds, r.same_but_seed, r.seconds, r.run_dir = [seed], config, seconds, f"out/ssdkd_s{seed}"
        r.metrics["teacher"] = {"mean": 90.0, "std": 0.0, "runs": [90.0]}
        return r
    rows = merge_seeds([run(2, 83.0), run(0, 81.0, seconds=20.0), run(1, 82.0), run(0, 70.0, config="other")])
    assert len(rows) == 2
    merged = next(r for r in rows if r.same_but_seed == "ssdkd")
    assert merged.runs == [81.0, 82.0, 83.0] and merged.seeds == [0, 1, 2]  # in seed order
    assert merged.mean == pytest.approx(82.0) and merged.std == pytest.approx((2 / 3) ** 0.5)  # population std
    assert merged.metrics["teacher"]["runs"] == [90.0] * 3 and merged.seconds == pytest.approx(40 / 3)
    assert merged.run_dir == "out/ssdkd_s{0,1,2}"  # its runs' folders, in seed order
    twice = merge_seeds([run(0, 81.0), run(0, 81.5)])  # one seed run twice: nothing to average, two rows
    assert [r.runs for r in twice] == [[81.0], [81.5]]


def results_file(folder: Path, method: str, runs: list[float], seed: int = 0, sampler_seed: int = 0) -> None:
    folder.mkdir(parents=True)
    payload = {"method": method, "dataset": "digits", "ipc": 10, "budget": "cpu", "seed": seed,
               "primary_metric": {"name": "accuracy", "higher_is_better": True, "unit": "%"},
               "metrics": {"accuracy": {"mean": sum(runs) / len(runs), "std": 0.0, "runs": runs}},
               "config": {"method": {"name": method}, "seed": seed, "sampler": {"seed": sampler_seed}}}
    (folder / "results.json").write_text(json.dumps(payload))


def test_seed_key_joins_runs_over_another_config_key(tmp_path, monkeypatch):
    for s, value in enumerate([70.0, 72.0, 74.0]):  # DGS's layout: the sampler's seed draws the set
        results_file(tmp_path / "runs" / f"dgs_seed{s}", "dgs", [value], sampler_seed=s)
    results_file(tmp_path / "runs" / "dgs_pool10_seed0", "dgs", [60.0], sampler_seed=0)
    (tmp_path / "runs" / "dgs_pool10_seed0" / "results.json").write_text(
        (tmp_path / "runs" / "dgs_pool10_seed0" / "results.json").read_text().replace('"dgs"}', '"dgs", "pool": 10}'))
    by_top_seed = collect([tmp_path / "runs"])
    assert sorted(len(r.runs) for r in by_top_seed) == [1, 1, 1, 1]  # top-level seed 0 everywhere: nothing joined
    rows = sorted(collect([tmp_path / "runs"], seed_key="sampler.seed"), key=lambda r: len(r.runs))
    assert [r.runs for r in rows] == [[60.0], [70.0, 72.0, 74.0]] and rows[1].seeds == [0, 1, 2]
    assert rows[1].run_dir == str(tmp_path / "runs" / "dgs_seed{0,1,2}")
    table = markdown(rows, None)
    assert "| dgs/digits/ipc10 | dgs_seed{0,1,2} | accuracy | 72.00 ± 1.63 (3) |" in table
    with pytest.raises(UserError, match="has the config key 'evaluator.seed'"):  # a key no run has: a typo
        collect([tmp_path / "runs"], seed_key="evaluator.seed")
    monkeypatch.chdir(tmp_path)
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- distillkit report --seed-key sampler.seed runs -->\n<!-- end report -->\n")
    assert refresh_document(doc) == 0 and "72.00 ± 1.63 (3)" in doc.read_text()
    printed = distillkit("report", "runs", "--seed-key", "sampler.seed", "--out", "rep", cwd=tmp_path)
    assert printed.returncode == 0 and "72.00 ± 1.63 (3)" in printed.stdout


def test_columns_show_a_results_key_per_row_in_the_printed_report_and_a_documents_block(tmp_path, monkeypatch):
    for folder, lr, learned in [("mtt_lr3_s0", 3.0, 0.012), ("mtt_lr3_s1", 3.0, 0.010), ("mtt_lr30_s0", 30.0, 0.0076)]:
        seed = int(folder[-1])
        results_file(tmp_path / "runs" / folder, "mtt", [60.0 + seed], seed=seed)
        path = tmp_path / "runs" / folder / "results.json"
        payload = json.loads(path.read_text())
        payload["config"]["generator"] = {"lr_img": lr}
        payload["eval_lr"] = learned
        if lr == 30.0:  # only this run has the key: the others show a dash
            payload["roles"] = {"experts": {"held_out_accuracy": 89.0}}
        path.write_text(json.dumps(payload))
    keys = ("config.generator.lr_img", "eval_lr", "roles.experts.held_out_accuracy")
    rows = collect([tmp_path / "runs"], columns=keys)
    joined = next(r for r in rows if len(r.runs) == 2)
    assert joined.columns == {"config.generator.lr_img": 3.0, "eval_lr": [0.012, 0.010],
                              "roles.experts.held_out_accuracy": None}
    table = markdown(rows, None, keys)
    assert ("| metric | mean ± std (seeds) | config.generator.lr_img | eval_lr | roles.experts.held_out_accuracy | "
            "published |") in table
    assert "| mtt_lr3_s{0,1} | accuracy | 60.50 ± 0.50 (2) | 3 | 0.012 / 0.01 | — | — |" in table  # seed order
    assert "| mtt_lr30_s0 | accuracy | 60.00 ± 0.00 (1) | 30 | 0.0076 | 89 | — |" in table
    with pytest.raises(UserError, match="has the key 'eval_lrr' \\(--columns\\)"):  # a key no run has: a typo
        collect([tmp_path / "runs"], columns=("eval_lrr",))
    printed = distillkit("report", "runs", "--columns", "eval_lr", "--out", "rep", cwd=tmp_path)
    assert printed.returncode == 0 and "| 0.012 / 0.01 |" in printed.stdout
    assert "| 0.012 / 0.01 |" in (tmp_path / "rep" / "report.md").read_text()
    two = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "runs").iterdir())[:2]
    assert distillkit("report", *two, cwd=tmp_path).returncode == 0  # no --out: the folder they share
    assert (tmp_path / "runs" / "report.md").is_file() and not list((tmp_path / "runs").glob("*/report.md"))
    wrong = distillkit("report", "runs", "--column", "eval_lr", cwd=tmp_path)
    assert wrong.returncode == 2 and "--column: not an option of 'distillkit report'" in wrong.stderr
    monkeypatch.chdir(tmp_path)
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- distillkit report --columns config.generator.lr_img runs -->\n<!-- end report -->\n")
    assert refresh_document(doc) == 0 and "| mtt_lr30_s0 | accuracy | 60.00 ± 0.00 (1) | 30 |" in doc.read_text()
    assert refresh_document(doc, check=True) == 0


def test_a_documents_generated_tables_are_rewritten_from_their_records_and_stale_ones_named(tmp_path, monkeypatch,
                                                                                              capsys):
    monkeypatch.chdir(tmp_path)
    results_file(tmp_path / "runs" / "ssdkd_s0", "ssdkd", [81.0])
    results_file(tmp_path / "runs" / "ssdkd_s1", "ssdkd", [83.0], seed=1)
    doc = tmp_path / "results.md"
    doc.write_text("prose kept\n<!-- distillkit report runs -->\n| typed by hand | 99.9 |\n<!-- end report -->\ntail\n")
    assert refresh_document(doc, check=True) == 1 and "STALE" in capsys.readouterr().out
    assert "99.9" in doc.read_text()  # --check rewrites nothing
    assert refresh_document(doc) == 0
    text = doc.read_text()
    assert text.startswith("prose kept\n<!-- distillkit report runs -->\n")
    assert text.endswith("<!-- end report -->\ntail\n")
    assert "| ssdkd/digits/ipc10 | accuracy | 82.00 ± 1.00 (2) |" in text and "99.9" not in text
    assert refresh_document(doc, check=True) == 0  # current now
    results_file(tmp_path / "runs" / "ssdkd_s2", "ssdkd", [85.0], seed=2)  # a new record makes the table stale
    stale = distillkit("report", "--into", "results.md", "--check", cwd=tmp_path)
    assert stale.returncode == 1 and stale.stdout.startswith("STALE results.md: the table of runs differs")
    wrong = distillkit("report", "--into", "results.md", "runs", cwd=tmp_path)
    assert wrong.returncode == 2
    assert wrong.stderr.strip() == "distillkit: error: usage: distillkit report --into DOC.md [--check]"
    doc.write_text("no block\n")
    with pytest.raises(UserError, match="no generated block"):
        refresh_document(doc)


def test_the_generated_tables_of_docs_results_md_match_the_committed_records(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # the blocks name their folders from the repository root
    assert refresh_document(ROOT / "docs" / "results.md", check=True) == 0, capsys.readouterr().out


def test_the_report_names_every_cell_not_shown_to_beat_random():
    rows = [row("random/digits/ipc10", 80.0, method="random", runs=[79.0, 80.0, 81.0]),
            row("dm/digits/ipc10", 85.0, runs=[84.0, 85.5, 85.5]),      # +5 ± 1.2: beats it
            row("kcenter/digits/ipc10", 70.0, runs=[69.0, 70.0, 71.0]),  # −10 ± 0: worse
            row("ddm/digits/ipc10", 80.5, runs=[78.0, 82.0, 81.5]),     # +0.5, an interval across 0
            row("tiny/digits/ipc10", 79.0, runs=[79.0]),                # one seed: no interval
            row("lucky/digits/ipc10", 81.0, runs=[81.0])]               # ahead on one seed: not a win
    add_gains(rows)
    assert [against_random(r) for r in rows] == [None, "beats random", "worse than random",
                                                 "not distinguishable from random", "does not beat random",
                                                 "ahead of random, untested (fewer than 2 paired seeds)"]
    fid = [row("random/digits/ipc10", 0.02, higher=False, method="random", runs=[0.020, 0.021, 0.019]),
           row("d2c/digits/ipc10", 0.01, higher=False, runs=[0.010, 0.011, 0.009])]
    add_gains(fid)
    assert against_random(fid[1]) == "beats random"  # lower is better: a negative gain beats it
    text = markdown(rows, None)
    assert "Cells not shown to beat their random row (4 of 5;" in text
    assert "* kcenter/digits/ipc10: worse than random, gain -10.00 ± 0.00" in text and "* dm/" not in text
    assert "Every cell with a random row beats it (1 cells" in markdown(fid, None)


def test_report_writes_table_json_and_plots(tmp_path):
    rows = [row("random/digits/ipc10", 80.0, method="random"), row(), row("dm/digits/ipc1", 50.0),
            row("d2c/digits/ipc10", 0.02, 0.001, higher=False)]
    rows[2].ipc = 1
    rows[3].metrics.update({"fid@500": {"mean": 0.03, "std": 0.002, "runs": [0.03]}, "copy_rate": {"mean": 0.0,
                            "std": 0.0, "runs": [0.0]}})
    text = write_report(rows, tmp_path, "title").read_text()
    assert "| dm/digits/ipc10 | accuracy | 90.00 ± 1.00 (1) |" in text and "| d2c/digits/ipc10 | fid ↓ | 0.02 ± 0.001" in text
    assert "| cell | copy_rate | fid@500 |" in text and "| d2c/digits/ipc10 | 0 ± 0 | 0.03 ± 0.002 |" in text  # fid: per length only
    figures = json.loads((tmp_path / "bench.json").read_text())["plots"]
    assert sorted(figures) == ["accuracy_vs_ipc_digits.png", "accuracy_vs_seconds.png", "fid_vs_ipc_digits.png",
                               "fid_vs_seconds.png"]
    assert all((tmp_path / f).stat().st_size > 1000 for f in figures)


SUITE = """# a tiny suite: random and a deliberately broken method (its networks never learn: lr 1e-9)
budget: cpu
datasets: [digits]
ipcs: [1]
seeds: 1
methods:
  random: []
  broken: [method=random, evaluator.lr=1e-9]
overrides: [tracker=none, dataset.test_per_class=20]
"""


def test_bench_runs_skips_finished_cells_and_the_check_names_the_broken_method(tmp_path):
    (tmp_path / "suite.yaml").write_text(SUITE)
    (tmp_path / "limits.yaml").write_text("min_tolerance: 1.0\ncells: {random/digits/ipc1: 35.0, "
                                          "broken/digits/ipc1: 35.0}\n")
    args = ["bench", str(tmp_path / "suite.yaml"), "--out", str(tmp_path / "out"), "--check", str(tmp_path / "limits.yaml")]
    first = distillkit(*args)
    assert first.returncode == 1, first.stderr[-2000:]
    regressions = [line for line in first.stderr.splitlines() if line.startswith("REGRESSION")]
    assert len(regressions) == 1 and regressions[0].startswith("REGRESSION broken/digits/ipc1: accuracy")
    rows = {r.cell: r for r in collect([tmp_path / "out"])}
    assert rows["random/digits/ipc1"].mean > 35.0 > rows["broken/digits/ipc1"].mean
    assert (tmp_path / "out" / "bench.md").is_file() and (tmp_path / "out" / "accuracy_vs_ipc_digits.png").is_file()

    again = distillkit(*args[:-2])  # rerun: every cell finished, nothing runs
    assert again.returncode == 0 and "2 cells, 2 finished, 0 to run" in again.stdout

    # a slice: only its cells are run and checked (the broken one is outside it), the report is the suite's
    part = distillkit(*args, "--only", "method=random")
    assert part.returncode == 0, part.stderr[-2000:]
    assert "1 cells (--only method=random: 1 of 2), 1 finished, 0 to run" in part.stdout
    assert "0 regression(s)" in part.stdout and "broken/digits/ipc1" in (tmp_path / "out" / "bench.md").read_text()

    changed = distillkit(*args[:-2], "seed=1", "--dry-run")  # another config: not the same cells
    assert "2 cells, 0 finished, 2 to run" in changed.stdout and changed.stdout.count(" run -m ") == 2

    report = distillkit("report", str(tmp_path / "out"), "--out", str(tmp_path / "report"))
    assert report.returncode == 0 and (tmp_path / "report" / "report.md").is_file()


def test_stopping_the_bench_stops_the_cell_it_runs():
    """SIGTERM to the bench (``kill``, a scheduler's pre-emption) must not leave its sweep running as an orphan."""
    import os
    import signal
    import subprocess
    import sys
    import time

    sleeper = "import os, time; print(os.getpid(), flush=True); time.sleep(120)"
    bench = subprocess.Popen([sys.executable, "-c", "import sys; from distillkit.bench import run_child; "
                              f"sys.exit(run_child([sys.executable, '-c', {sleeper!r}]))"],
                             stdout=subprocess.PIPE, text=True)
    child = int(bench.stdout.readline())  # the sweep shares the bench's stdout: it is running now
    bench.send_signal(signal.SIGTERM)
    assert bench.wait(timeout=30) == 128 + signal.SIGTERM
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the sweep outlived the bench")
