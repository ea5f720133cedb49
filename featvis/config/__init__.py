"""What a job may say: the structured-config schemas (Hydra's ConfigStore), paths, a job's names.

    schema  the typed `Config` and its parts; `validate` converts a composed config once
    paths   `featvis::` assets and `mmseg::` configs -> files
    job     a Hydra job's folder, its W&B name, group and job_type
    data_only  every config Hydra composes is checked to be data: no key names code to run
"""
