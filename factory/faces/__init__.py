"""Faces: landmarks (MediaPipe), alignment to a canonical template, masks and compositing."""
