"""Study drivers built on :func:`biomtl.train.train`.

* :mod:`~biomtl.experiments.study` — ST / MTL / MTL-FT over seeds (Peng, Chen & Lu, BioNLP 2020) → ``results.md``.
* :mod:`~biomtl.experiments.pairwise` — MTL on every pair of tasks → an n×n transfer table and heatmap.

Both drivers read one study config and share their parts:

* :mod:`~biomtl.experiments.schema` — the study config: its record, profiles, overrides, validation;
* :mod:`~biomtl.experiments.plan` — which runs, in which order, and their optimizer steps (``--plan``);
* :mod:`~biomtl.experiments.execute` — train, resume or skip each run; refuse one trained with other settings;
* :mod:`~biomtl.experiments.report` — mean ± sd tables and figures from finished runs.

Both drivers share one output layout, ``<output_dir>/seed<k>/<run>/``, so a pairwise study reuses the
``st-<task>`` runs of a study with the same config and output directory.
"""
