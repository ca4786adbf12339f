"""The VLM quality filter inside a whole `factory run`, from config, with a tiny random
Qwen2.5-VL: its answers are nonsense, so every pair that reaches it must be recorded as
`vlm_malformed_answer` (asked twice, never a crash), and the output must still verify."""

import pytest

from manifests.table import read_table
from manifests.verify import verify
from tests.cli import LOCAL, SMALL, run_factory
from tests.tiny_qwen import tiny_qwen_path  # noqa: F401  (fixture)


@pytest.mark.slow
def test_pipeline_with_vlm_quality(tmp_path, talking_videos, tiny_qwen_path):  # noqa: F811
    out = tmp_path / "out"
    code = run_factory(out, *SMALL, LOCAL, "filters.vlm_quality.enabled=true",
                       f"filters.vlm_quality.model_path={tiny_qwen_path}", "filters.vlm_quality.resources.num_gpus=0",
                       "filters.vlm_quality.max_new_tokens=24", "filters.vlm_quality.resources.batch_size=2",
                       "augment.share=0", videos=talking_videos)
    assert code == 0 and verify(out)[0] == []
    pairs = [r for r in read_table(out / "samples.parquet") if r["kind"] == "pair"]
    scored = [r for r in pairs if r["score_csim"] is not None and r["reason"] != "no_alternative_clip"]
    assert scored and all(r["reason"] == "vlm_malformed_answer" and r["stage"] == "vlm_quality" for r in scored)
    assert all(r["score_lmd"] is not None for r in scored)  # earlier filters' scores are kept


def test_missing_vlm_folder_stops_the_run_with_the_key(tmp_path, capsys):
    code = run_factory(tmp_path / "out", "filters.vlm_quality.enabled=true")
    assert code == 2
    assert "filters.vlm_quality.model_path = None" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing was started
