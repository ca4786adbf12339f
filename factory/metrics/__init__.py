"""Metrics: pure functions of arrays (and of models passed in), shared by filters now and by
`factory eval` later, so a threshold and a reported number are computed by the same code.

Rules: no I/O, no model loading, no global state. Import numpy and the face geometry libraries
(factory/faces) only; never filters, stages, executors, pipelines or the CLI. One file per metric
family: frames.py (which frames to look at), lmd.py (mouth landmark distance), csim.py (identity
cosine similarity), sync.py (Sync-C/D and the AV offset of a SyncNet passed in). FID/FVD, LPIPS,
PSNR/SSIM belong here when they arrive.
"""
