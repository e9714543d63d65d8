"""Experiments built from the library's pieces (data generation, CLIP pretraining, training, evaluation).

:mod:`.comparison` runs the framework comparison on the synthetic benchmark (``hybridtower reproduce``);
:mod:`.tuning` is its equal-budget hyper-parameter grid on the validation split; :mod:`.report` turns the
finished runs into the table, the paired statistics and the write-up files.
"""
