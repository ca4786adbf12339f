"""Decode + RGB conversion speed on a 720p H.264 clip: the colour-correct path (swscale with the
stream's matrix, one thread) against OpenCV's BT.601-only I420 converter it replaced.

    .venv/bin/python bench/decode.py [--frames 250] [--json PATH]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import av  # noqa: E402
import cv2  # noqa: E402

from bench.common import add_json_flag, emit, long_720p_video, row  # noqa: E402
from factory.media.video import frame_to_rgb  # noqa: E402


def opencv_bt601(frame):
    return cv2.cvtColor(frame.to_ndarray(format="yuv420p"), cv2.COLOR_YUV2RGB_I420)


def frames_per_second(video: Path, convert, frames: int) -> float:
    start = time.perf_counter()
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for n, frame in enumerate(container.decode(stream), 1):
            convert(frame)
            if n == frames:
                break
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=250)
    parser.add_argument("--repeats", type=int, default=3)
    add_json_flag(parser)
    args = parser.parse_args()
    video = long_720p_video(Path(tempfile.gettempdir()) / "bench_720p_10s.mp4", 10)
    olds, news = [], []
    for _ in range(args.repeats):  # alternate, so load from other jobs hits both alike
        olds.append(frames_per_second(video, opencv_bt601, args.frames))
        news.append(frames_per_second(video, frame_to_rgb, args.frames))
        print(f"opencv BT.601: {olds[-1]:.0f} fps   swscale tagged matrix: {news[-1]:.0f} fps   ratio {news[-1] / olds[-1]:.2f}")
    emit("decode", [row("720p decode + RGB, swscale tagged matrix", max(news), "frames/s", max(olds),
                        "OpenCV BT.601 I420")], args.json)


if __name__ == "__main__":
    main()
