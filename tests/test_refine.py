"""`factory refine`: self-refinement rounds over one clip store, each round's generator being the
editor the round before trained on its own pairs, every round kept side by side; a rerun resumes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from factory.cli import main
from tests.cli import CONFIG, LOCAL, SMALL

ROOT = Path(__file__).resolve().parents[1]
REFINE = str(ROOT / "configs" / "refine_cpu.yaml")
# a 2-step editor draws no face the landmarker finds (syn_face_ratio 0): the face filters are off here
PAIRS = (f"pairs=[{LOCAL}, input.demo=false, write.previews=0, {', '.join(SMALL)}, "
         "filters.mouth_distance.enabled=false, filters.identity.enabled=false]")
TRAIN = "train=[loop.steps=2, loop.eval_every=2, loop.checkpoint_every=2, eval_segments=2, data.heldout_share=0.5]"


@pytest.fixture(scope="module")
def store(tmp_path_factory, talking_videos):
    root = tmp_path_factory.mktemp("refine_store")
    assert main(["ingest", CONFIG, *SMALL, LOCAL, "input.demo=false", f"input.paths=[{talking_videos}]",
                 f"clip_store={root / 'clips'}", f"out={root / 'ignored'}"]) == 0
    (path,) = (root / "clips").glob("ingest-*")
    return path


def refine(out, store, *overrides) -> int:
    return main(["refine", REFINE, f"out={out}", f"clip_stores=[{store}]", PAIRS, TRAIN, *overrides])


@pytest.mark.slow
def test_two_rounds_each_generated_by_the_last_rounds_editor_then_a_rerun_resumes(store, tmp_path, capsys):
    out = tmp_path / "refine"
    assert refine(out, store, "rounds=2") == 0
    record = json.loads((out / "rounds.json").read_text())
    first, second = record["rounds"]
    assert first["generator"] == "transplant"  # no generator_weights: round 0 pairs by transplant
    assert second["generator"] == first["checkpoint"] == str(out / "round_0" / "editor" / "final")
    for r in (first, second):
        assert r["pairs_written"] > 0 and Path(r["manifest"]).is_file()
        assert (Path(r["checkpoint"]) / "config.json").is_file()
        assert r["heldout"]["mouth_l1_edit"] >= 0 and r["heldout"]["mouth_l1_input"] >= 0, r["heldout"]
    # round 1's pairs were made by round 0's editor
    from manifests.reader import iter_pairs

    assert all(p["meta"]["generator"] == "latent_editor" for p in iter_pairs(second["manifest"]))
    # a rerun has nothing left to do: the rounds and their checkpoints are the same files
    stamp = {r["checkpoint"]: (Path(r["checkpoint"]) / "config.json").stat().st_mtime_ns for r in record["rounds"]}
    assert refine(out, store, "rounds=2") == 0
    assert json.loads((out / "rounds.json").read_text()) == record
    assert stamp == {c: (Path(c) / "config.json").stat().st_mtime_ns for c in stamp}
    # other settings in the same out are refused naming the key
    capsys.readouterr()
    assert refine(out, store, "rounds=2", "train_config=configs/dubber_xdub_cpu.yaml") == 2
    assert "train_config" in capsys.readouterr().err


def test_bad_settings_exit_2_naming_the_key(store, tmp_path, capsys):
    assert refine(tmp_path / "a", store, "rounds=0") == 2
    assert "'rounds'" in capsys.readouterr().err
    assert main(["refine", REFINE, f"out={tmp_path / 'b'}", "clip_stores=[]"]) == 2
    assert "'clip_stores'" in capsys.readouterr().err
    assert refine(tmp_path / "c", store, f"generator_weights={tmp_path}") == 2
    assert "'generator_weights'" in capsys.readouterr().err
    assert refine(tmp_path / "d", store, "out=memory://bucket/refine") == 2
    assert "(out=memory://bucket/refine)" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists() and not Path("memory:").exists()
