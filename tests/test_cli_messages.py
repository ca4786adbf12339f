"""What the CLI says when there is nothing to read, and what its exit codes mean."""

import subprocess

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


def test_help_lists_the_exit_codes():
    text = subprocess.run(factory_command("--help"), capture_output=True, text=True, check=True).stdout
    assert "exit codes:" in text
    for code in ("  0 ", "  2 ", "  3 ", "  4 ", "130"):
        assert code in text
