"""A/V sync on files whose streams do not start at 0 or have holes: a flash and a beep at the
same moment must land on the same 25 fps frame (within one)."""


import av
import pytest

from factory.media.audio import decode_audio, load_audio
from factory.media.video import iter_frames
from tests.media import beep_frame, flash_frame, write_av_probe


@pytest.mark.parametrize("name, kwargs, expected", [
    # no edit list: the video's first frame is presented at 0.08 s (B-frame delay), the audio
    # keeps its AAC priming; FFmpeg's MP4 muxer cannot store a later start without an edit list
    ("no_editlist.mp4", dict(options={"use_editlist": "0"}), 50),
    ("late_start.mp4", dict(video_start=1.0), 25),  # both streams start at 1.0 s (edit list)
    ("late_start.ts", dict(video_start=1.0), 25),
    ("late_start.mkv", dict(video_start=1.0), 25),
    ("audio_earlier.mkv", dict(video_start=1.0, audio_start=0.0), 25),  # sound before the picture is cut
    ("audio_gap.mp4", dict(audio_gap=(1.0, 1.5)), 50),  # no audio packets for 0.5 s before the event
    ("audio_gap.mkv", dict(audio_gap=(1.0, 1.5)), 50),
])
def test_flash_and_beep_land_on_the_same_frame(tmp_path, name, kwargs, expected):
    path = write_av_probe(tmp_path / name, event=2.0, **kwargs)
    flash = flash_frame(iter_frames(path))
    beep = beep_frame(load_audio(path))
    assert abs(flash - expected) <= 1 and abs(beep - flash) <= 1, (flash, beep)


def test_audio_gap_is_silence_of_the_gaps_length(tmp_path):
    path = write_av_probe(tmp_path / "gap.mp4", audio_gap=(1.0, 1.5), seconds=4.0)
    audio = decode_audio(path)
    assert abs(len(audio.samples) - 4 * 16000) <= 1024  # the gap is kept, not closed up
    assert audio.bad == []  # a hole in the stream is not a decode failure


def test_corrupt_audio_packet_costs_only_its_interval(tmp_path):
    path = write_av_probe(tmp_path / "bad.mp4", corrupt_audio_at=1.0)
    audio = decode_audio(path)
    assert len(audio.bad) == 1
    b0, b1 = audio.bad[0]
    assert abs(b0 - 16000) <= 1024 and 0 < b1 - b0 <= 2048
    assert not audio.is_clean(16000, 17000) and audio.is_clean(0, 15000) and audio.is_clean(20000, 60000)
    assert beep_frame(audio.samples) == 50  # what follows the broken packet stays in place
