"""The workflow's side of xtc, torch-free: study files -> the grid and its run keys (``grid``), each job's inputs,
command line and runtime (``jobs``), run directories and their locks (``rundir``, ``runlock``), the cluster guards
(``cluster``) and the rehearsal's stand-ins (``rehearsal``). Snakemake's rules and the report read runs through here.

Importing any module of this package never imports torch or transformers (a test checks it); the few functions
that need the training core (a rehearsal's tiny models, writing a model directory) import it when called.
"""
