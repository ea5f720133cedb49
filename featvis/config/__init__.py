"""What a job may say: the structured-config schemas (Hydra's ConfigStore), a job's names and folder.

    schema  the typed `Config` and its parts; `validate` converts a composed config once
    job     a Hydra job's folder, its W&B name, group and job_type
    data_only  every config Hydra composes is checked to be data: no key names code to run
"""
