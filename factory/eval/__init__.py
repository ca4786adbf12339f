"""Evaluation: `factory eval` and `factory report`, which measure finished outputs (pairs, dubbed
videos) and summarise runs from their manifests.

Rules:
- Numbers come from factory/metrics, the same functions the filters threshold on, so a report
  and a filter never disagree on what a metric means.
- Inputs come from manifests' reader and the files it names; nothing else of the factory is
  imported (no pipelines, stages, filters, executors or trainers), and nothing is rewritten.
"""
