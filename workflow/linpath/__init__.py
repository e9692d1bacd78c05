"""linpath: loss along linear paths between network states, per model and per layer.

Its parts, each importing only those before it: `foundations` (files, layout, settings dataclasses,
devices), `engine` (models, data, training), `paths` (the evaluator, sweeps, shapes, barriers, pairs,
planes), `study` (the config as a plan of runs), `report` (tables, figures) and `cli` (the verbs the
workflow's jobs run). `bench` holds measurements that print figures; it is not part of the workflow.
"""

__version__ = "0.1.0"
