"""Compositing and registration quality on a clip store's pairs (every ordered pair of clips of one
video): alpha at the real chin, on both lower faces and on the nose, edited share of the crop,
pixels changed outside the stored mask, and nose-base registration error in landmark terms and in
pixels (phase correlation of a nose-base window). Not a test: numbers for issue 10.
Usage: PYTHONPATH=. python bench/compositing_quality.py CLIP_STORE ['{"feather_sigma": 2}']"""
import sys, glob, json
from itertools import permutations
import numpy as np, cv2
from factory.clips import load_clip
from factory.records import Record
from factory.stages.generate import GenerateConfig, GenerateStage
from factory.faces.align import umeyama, apply

JAW = [132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288, 361]
TOP = [436, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185, 61, 216]
NOSE = [1, 98, 327, 129, 358, 64, 294]   # tip and alae
NOSE_BASE = [2, 98, 327]
FIT = [195, 5, 4, 1, 2, 98, 327, 129, 358, 64, 294, 48, 278, 219, 439]

def poly(lm, S):
    m = np.zeros((S, S), np.uint8); cv2.fillPoly(m, [np.round(lm[JAW + TOP]).astype(np.int32)], 1); return m.astype(bool)

def at(img, p):
    x, y = np.round(p).astype(int); return img[y, x]

store = sys.argv[1]
clips = sorted(glob.glob(f"{store}/clips/*_c*.npz")); clips = [c for c in clips if "occlusion" not in c]
stage = GenerateStage(GenerateConfig(**json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}))
rows = []
for a, b in permutations(clips, 2):
    if a.split("_c")[0] != b.split("_c")[0]: continue
    (r,) = stage([Record("k", "pair", meta={"clip_path": a, "alt_clip_path": b})])
    m = r.media; real, alt = load_clip(a), load_clip(b)
    n = len(m.syn_frames); S = m.mask.shape[0]; al = m.alpha.astype(np.float32) / 255
    rl, bl = real.landmarks[:n], alt.landmarks[:n]
    chin = np.array([al[t][tuple(np.round(rl[t, 152]).astype(int)[::-1])] for t in range(n)])
    try:
        from factory.faces.registration import register
        reg = register(alt.frames[:n], real.frames[:n], rl)
    except ImportError:
        reg = np.repeat(np.eye(2, 3)[None], n, 0)
    blr = np.stack([apply(reg[t], bl[t]) for t in range(n)])
    union_min = min(al[t][poly(rl[t], S) | poly(blr[t], S)].min() for t in range(n))
    nose = max(al[t][tuple(np.round(rl[t, NOSE]).astype(int).T[::-1])].max() for t in range(n))
    edited = float((m.alpha > 0).any(0).mean())
    out = ~m.mask.astype(bool)
    diff = np.abs(m.syn_frames.astype(int) - m.real_frames.astype(int)).max(-1)
    leak = float((diff[:, out] > 8).mean()) if out.any() else 0.0
    err0 = np.linalg.norm(bl[:, NOSE_BASE] - rl[:, NOSE_BASE], axis=-1).ravel()
    err1 = np.linalg.norm(blr[:, NOSE_BASE] - rl[:, NOSE_BASE], axis=-1).ravel()
    win = cv2.createHanningWindow((48, 32), cv2.CV_32F); px0, px1 = [], []
    for t in range(n):
        cx, cy = np.round(rl[t, 2]).astype(int); sl = np.s_[cy-24:cy+8, cx-24:cx+24]
        g = lambda f: cv2.cvtColor(f, cv2.COLOR_RGB2GRAY)[sl].astype(np.float32)
        w = cv2.warpAffine(alt.frames[t], reg[t], (S, S), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        px0.append(np.hypot(*cv2.phaseCorrelate(g(real.frames[t]), g(alt.frames[t]), win)[0]))
        px1.append(np.hypot(*cv2.phaseCorrelate(g(real.frames[t]), g(w), win)[0]))
    rows.append(dict(px_p95_unreg=np.percentile(px0, 95), px_max_unreg=max(px0), px_p95_reg=np.percentile(px1, 95), px_max_reg=max(px1), chin_min=chin.min(), chin_below_09=int((chin < 0.9).sum()), n=n, union_min=union_min,
                     nose_max=nose, edited=edited, leak_outside_mask=leak,
                     nb_p95_unreg=np.percentile(err0, 95), nb_max_unreg=err0.max(),
                     nb_p95_reg=np.percentile(err1, 95), nb_max_reg=err1.max()))
keys = rows[0].keys()
print(len(rows), "pairs")
for k in keys:
    v = np.array([r[k] for r in rows], float); print(f"{k:18s} min {v.min():.3f} median {np.median(v):.3f} max {v.max():.3f}")
