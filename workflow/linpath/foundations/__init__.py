"""What every other part stands on: errors, ids, atomic files, the results layout, devices, the
registry of named architectures and datasets, the settings dataclasses (hparams) and a run's outcome.
Nothing here imports another part of linpath."""
