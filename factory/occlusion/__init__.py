"""Occluders in front of the face: SAM 2 masks propagated from boxes through a clip, and the
composition that keeps those pixels real (X-Dub's M_inp = not M_face or M_occ)."""
