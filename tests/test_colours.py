"""Colours on real encoded files: the stream's matrix and range are honoured, output MP4s are
tagged with how they were encoded, HDR is refused rather than mis-converted."""

from fractions import Fraction

import av
import numpy as np
import pytest

from factory.media.encode import mp4_bytes, read_mp4
from factory.media.video import MediaError, iter_frames

PATCHES = [(200, 140, 110), (40, 90, 200), (230, 230, 60), (20, 160, 70)]  # skin, blue, yellow, green


def rgb_to_yuv(rgb, matrix: str, full: bool) -> np.ndarray:
    """Reference RGB -> Y'CbCr (the standards' equations), for building tagged test files."""
    kr, kb = {"bt709": (0.2126, 0.0722), "bt601": (0.299, 0.114)}[matrix]
    r, g, b = np.asarray(rgb, float) / 255
    y = kr * r + (1 - kr - kb) * g + kb * b
    cb, cr = (b - y) / (2 * (1 - kb)), (r - y) / (2 * (1 - kr))
    if full:
        return np.round([255 * y, 128 + 255 * cb, 128 + 255 * cr])
    return np.round([16 + 219 * y, 128 + 224 * cb, 128 + 224 * cr])


def write_patches(path, height: int, matrix: str | None, full: bool = False, trc: int | None = None,
                  pix_fmt: str = "yuv420p") -> None:
    """Each patch a flat frame, its YUV computed here with `matrix` and written as such; tags as
    given (None: untagged)."""
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=25)
        vs.width, vs.height, vs.pix_fmt = height * 16 // 9 // 2 * 2, height, pix_fmt
        vs.options = {"crf": "0", "preset": "ultrafast"}
        cc = vs.codec_context
        if matrix:
            cc.colorspace = {"bt709": 1, "bt601": 6}[matrix]
        cc.color_range = 2 if full else 1
        if trc:
            cc.color_trc, cc.color_primaries, cc.colorspace = trc, 9, 9
        deep = pix_fmt.endswith("10le")
        for i, rgb in enumerate(PATCHES):
            y, u, v = rgb_to_yuv(rgb, matrix or ("bt709" if height >= 720 else "bt601"), full)
            frame = av.VideoFrame(vs.width, vs.height, pix_fmt)
            for plane, value in zip(frame.planes, (y, u, v)):
                dtype = np.uint16 if deep else np.uint8
                row = plane.line_size // np.dtype(dtype).itemsize
                plane.update(np.full((plane.height, row), value * (4 if deep else 1), dtype).tobytes())
            frame.pts, frame.time_base = i, Fraction(1, 25)
            for p in vs.encode(frame):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)


def decoded_patches(path) -> np.ndarray:
    return np.array([rgb[8:-8, 8:-8].reshape(-1, 3).mean(0) for _, rgb in iter_frames(path)][:len(PATCHES)])


@pytest.mark.parametrize("height, matrix, full", [
    (720, "bt709", False),  # HD, tagged
    (720, None, False),     # HD, untagged: BT.709 assumed
    (360, "bt601", False),  # SD, tagged
    (360, None, False),     # SD, untagged: BT.601 assumed
    (360, "bt709", True),   # full range, tagged
])
def test_decoded_colours_follow_the_stream_tags(tmp_path, height, matrix, full):
    path = tmp_path / "patches.mp4"
    write_patches(path, height, matrix, full)
    assert np.abs(decoded_patches(path) - np.array(PATCHES)).max() <= 2


def test_10bit_sdr_is_converted(tmp_path):
    path = tmp_path / "deep.mkv"
    write_patches(path, 360, "bt709", pix_fmt="yuv420p10le")
    assert np.abs(decoded_patches(path) - np.array(PATCHES)).max() <= 2


@pytest.mark.parametrize("trc", [16, 18])  # PQ, HLG
def test_hdr_is_rejected_not_misconverted(tmp_path, trc):
    path = tmp_path / "hdr.mkv"
    write_patches(path, 360, "bt709", trc=trc, pix_fmt="yuv420p10le")
    with pytest.raises(MediaError) as err:
        list(iter_frames(path))
    assert err.value.reason == "unsupported_hdr"


def test_output_mp4_is_tagged_as_encoded():
    frames = np.array([np.full((64, 64, 3), rgb, np.uint8) for rgb in PATCHES])
    data = mp4_bytes(frames, crf=0)
    import io
    with av.open(io.BytesIO(data)) as container:
        cc = container.streams.video[0].codec_context
        assert (cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range) == (1, 1, 1, 1)
    back = read_mp4(data)
    assert np.abs(back[:, 8:-8, 8:-8].reshape(len(PATCHES), -1, 3).mean(1) - np.array(PATCHES)).max() <= 2
