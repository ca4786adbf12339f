"""What the CLI says when there is nothing to read, and what its exit codes mean."""

import subprocess

import pytest

from factory.cli import main
from tests.cli import LOCAL, QUIET, factory_command, run_args


def no_input_message(tmp_path, capsys, videos) -> str:
    assert main(run_args(tmp_path / f"out_{videos.name}", LOCAL, QUIET, videos=videos)) == 3
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("factory: no input to read: ")
    return lines[0]


def test_missing_empty_and_videoless_inputs_are_told_apart(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    empty = tmp_path / "empty"
    empty.mkdir()
    documents = tmp_path / "documents"
    documents.mkdir()
    (documents / "notes.txt").write_text("not a video")
    assert f"{missing} does not exist" in no_input_message(tmp_path, capsys, missing)
    assert f"{empty} is an empty folder" in no_input_message(tmp_path, capsys, empty)
    said = no_input_message(tmp_path, capsys, documents)
    assert f"{documents} holds 1 file(s), none ending in .mp4" in said and "input.extensions" in said


def test_verify_of_a_folder_that_holds_no_run_is_no_input(tmp_path, capsys):
    # exit 1 means "a run's output is damaged": a folder with nothing to check is exit 3
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["verify", str(empty)]) == 3
    assert "no manifest.json in it" in capsys.readouterr().err
    assert main(["verify", str(tmp_path / "nowhere")]) == 3
    assert "no such folder" in capsys.readouterr().err


def test_help_lists_the_exit_codes():
    text = subprocess.run(factory_command("--help"), capture_output=True, text=True, check=True).stdout
    assert "exit codes:" in text
    for code in ("  0 ", "  2 ", "  3 ", "  4 ", "130"):
        assert code in text


COMMANDS = ["run", "ingest", "pairs", "refilter", "verify", "eval", "report", "train-syncnet", "train-generator",
            "train-dubber", "refine", "dub"]


def help_of(*command: str) -> str:
    return subprocess.run(factory_command(*command, "--help"), capture_output=True, text=True, check=True).stdout


def test_every_help_says_what_the_command_does_and_lists_the_exit_codes():
    top = help_of()
    assert "`factory run|" not in top and "the command-line entry point" not in top  # was the module docstring
    description = top.split("\n\n")[1]
    assert description[0].isupper() and description.rstrip().endswith(".")
    for name in COMMANDS:
        text = help_of(name)
        three = "  3  bad input" if name == "dub" else "  3  no input to read"  # dub's inputs are a video and an audio
        assert "exit codes:" in text and three in text, name
        about = " ".join(text.split("\n\n")[1].split())  # the paragraph after the usage line
        assert about[0].isupper() and about.endswith("."), (name, about)
        assert name in top


def test_refilter_says_it_does_not_build_on_an_earlier_refilter():
    from pathlib import Path

    said = " ".join(help_of("refilter").split())
    assert "does not build on an earlier refilter" in said and "run's own thresholds" in said
    readme = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text().split())
    assert "does not build on an earlier refilter" in readme


def test_a_hash_in_a_value_is_part_of_it(tmp_path):
    from pipelines.settings import load_factory_config

    cfg = load_factory_config("configs/demo.yaml", [f"input.paths=[{tmp_path}/my #1 videos, b]",
                                                    f"out={tmp_path}/a #b", 'input.speaker_map="q #r"'])
    assert cfg.input.paths == [f"{tmp_path}/my #1 videos", "b"] and cfg.out == f"{tmp_path}/a #b"
    assert cfg.input.speaker_map == "q #r"


def test_the_ingest_bar_counts_videos_and_the_clips_they_made(tmp_path):
    """Two files that are no videos: the bar reaches 2/2 videos with 0 clips (it counted each
    rejected video as a clip)."""
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "empty.mp4").write_bytes(b"")
    (videos / "noise.mp4").write_bytes(bytes(range(256)) * 20)
    result = subprocess.run(factory_command("ingest", "configs/demo.yaml", "input.demo=false",
                                            f"input.paths=[{videos}]", LOCAL, f"out={tmp_path / 'out'}"),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    final = result.stderr.split("\r")[-1]
    assert "ingest: 100%" in final and "2/2" in final and "clips=0" in final, result.stderr[-1000:]


@pytest.mark.slow
def test_a_second_refilter_starts_from_the_runs_thresholds(finished_run, tmp_path, capsys):
    import shutil

    from manifests.table import read_table

    out = tmp_path / "out"
    shutil.copytree(finished_run, out)
    kept = sorted(r["key"] for r in read_table(out / "samples.parquet") if r["fate"] == "kept")
    assert kept
    assert main(["refilter", str(out), "filters.mouth_distance.min_lmd=1000"]) == 0
    assert "0 pairs kept" in capsys.readouterr().out
    assert main(["refilter", str(out), "filters.mouth_distance.enabled=true"]) == 0  # changes nothing
    said = capsys.readouterr().out
    assert f"{len(kept)} pairs kept" in said and "not on top of an earlier refilter" in said
    assert sorted(r["key"] for r in read_table(out / "samples.parquet") if r["fate"] == "kept") == kept


def test_train_dubber_refuses_an_unknown_recipe_or_no_manifests_naming_the_key(tmp_path, capsys):
    assert main(["train-dubber", "configs/dubber_xdub_cpu.yaml", "recipe=wav2lip", f"loop.out={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "'recipe'" in err and "flashlips-refine" in err and "xdub-stage2" in err
    assert main(["train-dubber", "configs/dubber_xdub_cpu.yaml", "manifests=[]", f"loop.out={tmp_path}"]) == 2
    assert "manifests" in capsys.readouterr().err
