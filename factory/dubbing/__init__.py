"""`factory dub VIDEO AUDIO --checkpoint DIR -o OUT.mp4`: a user's video, re-dubbed with new audio.

    decode + track + align (track.py, ingest's pieces) -> segments on the dubber's 25 fps timeline,
    each bridged to the previous one by motion frames (run.py) -> the dubber (protocol.py; the
    registry keyed by the checkpoint folder's config: dubbers.py; masked.py adapts every
    mask-based generator) -> the face pasted back with the inverse alignment (paste.py) ->
    H.264 + the new audio (writer.py).
"""

from factory.dubbing.dubbers import load_dubber, register_dubber
from factory.dubbing.protocol import DubbedSegment, Dubber
from factory.dubbing.run import BadInput, DubSettings, dub
from factory.dubbing import flashlips, xdub  # noqa: F401  (register the mask-free dubbers)

__all__ = ["BadInput", "DubSettings", "DubbedSegment", "Dubber", "dub", "load_dubber", "register_dubber"]
