"""Training: the reference Trainer, run folders and checkpoints, data, plots.

* ``trainer``    Trainer.step, the one place that knows the order of a DFBST step
* ``run``        epochs, metrics.csv, checkpoints and resume
* ``config``     run settings and the reference defaults
* ``checkpoint`` atomic .npz checkpoints, read without pickles
* ``folder``     a run folder's rules: never overwritten, history never dropped
* ``lock``       one writer per run folder
* ``plots``      PNGs from metrics.csv
* ``data``       datasets, checked downloads, batching and augmentation
"""
from .trainer import StepStats, Trainer, evaluate
