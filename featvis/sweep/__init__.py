"""Multirun sweeps: forward passes shared between jobs, per-job result records, and the sweep's summary.

    manifest        the sweep's own record: its id, its jobs (planned, started), whether it was stopped
    plan            which jobs of a sweep can share a model's forward passes (featvis_plan.json)
    shared_forward  the kept forward passes, taken by the other jobs of a group
    results         JobRecord: a job's featvis_result.json, written and read back
    sheets          contact sheets: an image's pictures, a row per job
    index           the summary's index.html (templates/index.html.j2)
    wandb_summary   the sweep's W&B summary run
    summary         summarize(sweep dir) and `python -m featvis.sweep.summary`
    callbacks       the Hydra callbacks OutputLock, SweepPlan and SweepSummary
    outcome         how a sweep ended: one line per job that did not end ok, and the exit code
"""
