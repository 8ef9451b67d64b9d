"""`fastdarts search cnn --seeds N`: independent searches, one summary (tiny CPU runs).

The engine, callbacks, checkpoints and the rest of the CLI are tested in
test_search_engine.py, test_checkpoint.py and test_search_cnn.py.
"""

from __future__ import annotations

import json

from fastdarts import cli

_TINY = ["--epochs", "1", "--max_steps_per_epoch", "1", "--layers", "3", "--init_channels", "2",
         "--batch_size", "8", "--quiet"]


def test_several_seeds_run_and_are_summarised(tmp_path):
    save = tmp_path / "seeds"
    rc = cli.main(["search", "cnn", "--seeds", "2", "--seed", "5", "--save", str(save), *_TINY])
    assert rc == 0
    rows = json.loads((save / "summary.json").read_text())
    assert [r["seed"] for r in rows] == [5, 6] and all(r["ok"] for r in rows)
    assert (save / "seed-5" / "genotype.json").exists() and (save / "seed-6" / "genotype.json").exists()
    assert "| 5 | True |" in (save / "summary.md").read_text()

    # each seed's search is exactly the single search with that seed
    single = tmp_path / "single6"
    assert cli.main(["search", "cnn", "--seed", "6", "--save", str(single), *_TINY]) == 0
    assert (single / "genotype.json").read_text() == (save / "seed-6" / "genotype.json").read_text()
    a6 = [json.loads(line) for line in (save / "seed-6" / "genotypes.jsonl").read_text().splitlines()]
    s6 = [json.loads(line) for line in (single / "genotypes.jsonl").read_text().splitlines()]
    assert a6 == s6
    a5 = [json.loads(line) for line in (save / "seed-5" / "genotypes.jsonl").read_text().splitlines()]
    assert a5 != a6  # the seeds really differ
