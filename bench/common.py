"""Shared helpers for the benchmarks: a long 720p talking-face video made offline, a demo run to
read pairs from, peak memory, and the one JSON result every throughput bench ends with.

The result (`emit`) is what bench/all.py collects: `{"bench", "rows": [{"name", "throughput",
"unit", "ratio", "reference"}], "peak_rss_mb", ...}`, printed as the last stdout line and, with
`--json PATH`, written there too. A row's ratio is its throughput over the reference's, both
measured in the same process.
"""

from __future__ import annotations

import json
import re
import resource
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import soundfile as sf
from scipy.signal import resample_poly
from skimage import data

from factory.files import atomic_path
from factory.media.encode import add_aac_stream, mux_audio

ROOT = Path(__file__).resolve().parents[1]


def speech(seconds: float, tmp: Path) -> np.ndarray:
    text = ("The factory turns talking head video into pairs for training. " * 4).strip()
    wav_path = tmp / "bench_speech.wav"
    subprocess.run(["espeak-ng", "-s", "150", "-w", str(wav_path), text], check=True)
    wav, rate = sf.read(str(wav_path), dtype="float32")
    wav = resample_poly(wav, 16000, rate)
    reps = int(np.ceil(seconds * 16000 / len(wav)))
    return (np.tile(wav, reps)[: int(seconds * 16000)] * 32767).astype(np.int16)


def long_720p_video(path: Path, seconds: float) -> Path:
    """A 1280x720 25 fps H.264 + AAC file: the astronaut's face swaying on a textured background."""
    if path.exists():
        return path
    face = cv2.resize(data.astronaut()[:, 64:448], (420, 560))
    rng = np.random.default_rng(0)
    background = cv2.GaussianBlur(rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8), (0, 0), 6)
    audio = speech(seconds, path.parent)
    with atomic_path(path, suffix=".tmp.mp4") as tmp, av.open(str(tmp), "w") as out:
        vs = out.add_stream("libx264", rate=25)
        vs.width, vs.height, vs.pix_fmt = 1280, 720, "yuv420p"
        vs.options = {"preset": "ultrafast", "crf": "23"}
        aus = add_aac_stream(out)
        for i in range(int(seconds * 25)):
            frame = background.copy()
            x, y = 360 + int(20 * np.sin(i / 30)), 80 + int(10 * np.cos(i / 23))
            frame[y:y + 560, x:x + 420] = face
            for p in vs.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
        mux_audio(out, aus, audio)
    return path


def demo_run(out: Path) -> Path:
    """A finished in-process demo run (shards, manifest, clip store) at `out`; reused if there.
    Every pair has an augmentation recorded (augment.share=1.0), so the loader bench replays one
    on each sample; readers that want the clean pairs pass augment=False."""
    if not (out / "manifest.json").exists():
        subprocess.run([str(ROOT / ".venv/bin/factory"), "run", str(ROOT / "configs/demo.yaml"), f"out={out}",
                        "executor.kind=local", "augment.share=1.0", "-q"], check=True, capture_output=True)
    return out


def peak_rss_mb() -> float:
    """Peak resident memory of this process or of any child it waited for, in MiB. This process's
    from VmHWM: Linux carries ru_maxrss over from the parent across fork + exec, so a bench started
    by bench/all.py would report all.py's peak otherwise."""
    status = Path("/proc/self/status")
    own_kib = int(re.search(r"VmHWM:\s+(\d+)", status.read_text()).group(1)) if status.exists() else \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(own_kib, children_kib) / 1024, 1)


def peak_cuda_mb() -> float | None:
    """Peak torch CUDA allocation in MiB, where torch is loaded and a GPU was used; else None."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return round(torch.cuda.max_memory_allocated() / 2**20, 1)


def row(name: str, throughput: float, unit: str, reference: float | None = None, reference_name: str = "",
        **extra) -> dict:
    """One measured line: throughput, and its ratio to a reference measured in the same run."""
    out = {"name": name, "throughput": round(throughput, 3), "unit": unit,
           "ratio": round(throughput / reference, 3) if reference else None,
           "reference": f"{reference_name} ({reference:.3g} {unit})" if reference else reference_name}
    return out | extra


def add_json_flag(parser) -> None:
    parser.add_argument("--json", help="also write the result (see bench/common.py) to this file")


def emit(bench: str, rows: list[dict], json_path: str | None = None, **extra) -> dict:
    """Print the bench's result as the last stdout line (and write it to `json_path`)."""
    result = {"bench": bench, "rows": rows, "peak_rss_mb": peak_rss_mb(), **extra}
    cuda = peak_cuda_mb()
    if cuda is not None:
        result["peak_cuda_mb"] = cuda
    for r in rows:
        ratio = f"  ratio {r['ratio']:.2f} to {r['reference']}" if r["ratio"] is not None else ""
        print(f"{r['name']:<48} {r['throughput']:10.2f} {r['unit']}{ratio}")
    print(f"peak RSS {result['peak_rss_mb']:.0f} MiB")
    line = json.dumps(result)
    print(line, flush=True)
    if json_path:
        Path(json_path).write_text(line + "\n")
    return result
