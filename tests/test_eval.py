"""`factory eval` end to end on real faces and real speech: a folder of generated videos against
references (a mouth edit, another person, an identical copy), and a finished run's pairs."""

import json
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from factory.cli import EXIT_CONFIG, EXIT_NO_INPUT, main
from factory.eval.inputs import EvalItem
from factory.eval.registry import LMD
from factory.eval.settings import load_eval_config

SAID = "Peter piper picked a peck of pickled peppers."
OTHER_WORDS = "How much wood would a woodchuck chuck?"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """reference/{same,edit,other}.mp4 all say SAID with the astronaut's face; generated/same is a
    byte copy (two encodes of the same frames need not match bit for bit),
    generated/edit says other words (same face, same camera, only the mouth differs: what a
    dubber produces), generated/other is another person, generated/lonely has no reference."""
    import insightface

    from factory.demo import make_talking_video

    root = tmp_path_factory.mktemp("eval")
    hanks = cv2.imread(str(Path(insightface.__file__).parent / "data/images/Tom_Hanks_54745.png"))[..., ::-1]
    video = dict(seconds=2.0, size=192, seed=1)
    for name in ("same", "edit", "other"):
        make_talking_video(root / "reference" / f"{name}.mp4", SAID, **video)
    make_talking_video(root / "generated" / "edit.mp4", OTHER_WORDS, **video)
    shutil.copy(root / "reference" / "same.mp4", root / "generated" / "same.mp4")  # byte-identical
    make_talking_video(root / "generated" / "other.mp4", SAID, face=np.ascontiguousarray(hanks), **video)
    make_talking_video(root / "generated" / "lonely.mp4", SAID, **video)
    return root


@pytest.fixture(scope="module")
def tiny_fid_net(tmp_path_factory):
    """A small random image network saved as TorchScript: the file type eval.fid_extractor_path
    takes, so FID runs through the real loading path."""
    from tests.test_eval_metrics import TinyImageNet

    import warnings

    path = tmp_path_factory.mktemp("fid") / "tiny.pt"
    with warnings.catch_warnings():  # torch deprecates TorchScript; the real FID weights are in it
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(TinyImageNet().eval()), str(path))
    return path


@pytest.fixture(scope="module")
def folder_report(folders, tiny_fid_net, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "eval.json"
    code = main(["eval", f"eval.generated={folders / 'generated'}", f"eval.reference={folders / 'reference'}",
                 f"eval.out={out}", f"eval.fid_extractor_path={tiny_fid_net}", "eval.fid_kwargs={}",
                 "eval.fid_size=64", "eval.frames_per_item=25"])
    assert code == 0
    return json.loads(out.read_text())


def items(report):
    return {row["name"]: row for row in report["items"]}


def test_identical_videos_give_infinite_psnr_unit_ssim_zero_lmd(folder_report):
    same = items(folder_report)["same"]
    assert same["psnr"] == "inf" and same["ssim"] == pytest.approx(1.0)
    assert same["lmd"] == pytest.approx(0.0) and same["csim"] == pytest.approx(1.0, abs=1e-5)


def test_a_mouth_edit_raises_lmd_and_keeps_identity(folder_report):
    rows = items(folder_report)
    edit, same = rows["edit"], rows["same"]
    assert edit["lmd"] > 1.0 > same["lmd"]  # X-Dub's threshold: the edit is a useful pair
    assert math.isfinite(edit["psnr"]) and 20 < edit["psnr"]  # only the mouth changed
    assert edit["ssim"] < 1.0
    assert edit["csim"] > 0.95


def test_another_person_has_lower_csim_than_the_same_person(folder_report):
    rows = items(folder_report)
    assert rows["other"]["csim"] < rows["edit"]["csim"] - 0.05
    assert rows["other"]["psnr"] < rows["edit"]["psnr"]


def test_report_lists_skipped_metrics_with_the_key_to_set_and_never_a_number(folder_report):
    skipped = folder_report["skipped"]
    assert set(skipped) == {"lpips", "sync", "fvd"}
    assert "eval.lpips_backbone_path" in skipped["lpips"]
    assert "eval.syncnet_path" in skipped["sync"]
    assert "eval.fvd_extractor_path" in skipped["fvd"]
    metrics = folder_report["metrics"]
    for key in ("lpips", "sync_c", "sync_d", "fvd"):
        assert key not in metrics
        assert all(key not in row for row in folder_report["items"])


def test_report_summary_and_unmatched(folder_report):
    assert folder_report["n_items"] == 3
    assert folder_report["unmatched"] == ["lonely.mp4: no reference of that name"]
    metrics = folder_report["metrics"]
    assert metrics["lmd"]["n"] == 3 and metrics["lmd"]["better"] == "lower"
    assert metrics["lmd"]["value"] == pytest.approx(np.mean([r["lmd"] for r in folder_report["items"]]))
    assert metrics["fid"]["value"] > 0  # another person and a mouth edit are in the generated set
    assert metrics["fid_n_generated"]["value"] == metrics["fid_n_reference"]["value"] == 75


def test_fid_is_zero_when_generated_equals_reference(folders, tiny_fid_net, tmp_path, capsys):
    out = tmp_path / "e.json"
    ref = folders / "reference"
    assert main(["eval", f"eval.generated={ref}", f"eval.reference={ref}", f"eval.out={out}",
                 "eval.metrics=[psnr,fid]", f"eval.fid_extractor_path={tiny_fid_net}",
                 "eval.fid_kwargs={}", "eval.fid_size=64"]) == 0
    report = json.loads(out.read_text())
    assert report["metrics"]["fid"]["value"] == pytest.approx(0, abs=1e-6)
    assert report["metrics"]["psnr"]["value"] == "inf"
    table = capsys.readouterr().out
    assert "fid" in table and f"output: {out}" in table


def test_lmd_grows_with_the_size_of_a_mouth_edit():
    """One real face: the mouth opened wider and wider by the demo's rig; LMD follows."""
    from factory.demo import astronaut_rig

    rig = astronaut_rig()
    frames = lambda opening: np.stack([rig.render(opening)] * 3)  # noqa: E731
    closed = frames(0.0)
    lmds = []
    for opening in (0.0, 0.03, 0.06, 0.09):
        item = EvalItem("x", frames(opening * rig.face_height), closed, None)
        lmds.append(LMD(None).score(item)["lmd"])
    assert lmds[0] == pytest.approx(0.0, abs=1e-6)
    assert lmds[1] < lmds[2] < lmds[3]


def test_eval_on_a_finished_run_measures_its_pairs(finished_run, tmp_path, capsys):
    from manifests.reader import iter_pairs

    out = tmp_path / "run_eval.json"
    assert main(["eval", str(finished_run), f"eval.out={out}", "eval.metrics=[psnr,ssim,lmd,csim,sync]"]) == 0
    report = json.loads(out.read_text())
    pairs = list(iter_pairs(finished_run / "manifest.json"))
    assert report["n_items"] == len(pairs) > 0
    assert report["inputs"] == {"manifest": str(finished_run)}
    assert {row["name"] for row in report["items"]} == {p["key"] for p in pairs}
    for row in report["items"]:
        assert isinstance(row["psnr"], float) and row["ssim"] < 1.0  # syn is not real
        assert row["lmd"] > 0 and row["csim"] > 0.9  # other lips, same person
    assert "eval.syncnet_path" in report["skipped"]["sync"]
    assert "skipped" in capsys.readouterr().out


def test_config_errors_exit_with_the_config_code(folders, tmp_path, capsys):
    gen, ref = f"eval.generated={folders / 'generated'}", f"eval.reference={folders / 'reference'}"
    assert main(["eval", gen, ref, "eval.bogus=1"]) == EXIT_CONFIG
    assert main(["eval", gen, ref, "eval.metrics=[psnr,vibes]"]) == EXIT_CONFIG
    assert main(["eval", gen]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "eval.bogus" in err and "vibes" in err and "eval.reference" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["eval", f"eval.generated={empty}", ref, f"eval.out={tmp_path / 'x.json'}"]) == EXIT_NO_INPUT


def test_a_target_folder_and_overrides_build_the_config(tmp_path):
    cfg = load_eval_config(None, ["eval.metrics=[psnr]"], target=str(tmp_path))
    assert cfg.manifest == str(tmp_path) and cfg.metrics == ["psnr"]


def test_sync_entry_scores_aligned_face_crops_against_the_reference_audio(folders, tmp_path):
    """A tiny random SyncNet saved as `factory train-syncnet` saves it: the eval entry loads it
    from eval.syncnet_path and reports what factory.metrics.sync computes on every frame's
    aligned face crop and the clip's audio."""
    import torch

    from factory.eval.evaluate import evaluate
    from factory.models.syncnet import SyncNet, SyncNetConfig
    from tests.test_syncnet import TINY

    torch.manual_seed(0)
    weights = SyncNet(SyncNetConfig(loss="scaled_cosine", **TINY)).save_pretrained(tmp_path / "syncnet")
    cfg = load_eval_config(None, [f"eval.generated={folders / 'generated'}", f"eval.reference={folders / 'reference'}",
                                  "eval.metrics=[sync]", "eval.max_items=1", f"eval.syncnet_path={weights}"])
    report = evaluate(cfg)
    assert report["skipped"] == {}
    item = report["items"][0]
    assert np.isfinite(item["sync_c"]) and item["sync_c"] >= 0 and np.isfinite(item["sync_d"])
    assert report["metrics"]["sync_c"]["value"] == pytest.approx(item["sync_c"])
    assert abs(item["sync_offset"]) <= 15 and float(item["sync_offset"]).is_integer()
