from pathlib import Path

from featvis.config.job import JobInfo, swept_keys


def test_single_run_named_after_what_changes_the_pictures():
    job = JobInfo(Path("."), overrides=["backends=[local]", "model=ann", "wandb.mode=offline", "layers=backbone"])
    assert job.name == "layers=backbone,model=ann"
    assert job.job_type == "layers,model"
    assert job.group is None


def test_no_overrides_named_after_the_choices():
    job = JobInfo(Path("."), choices={"model": "demo", "layers": "decoder", "reduction": "topk"})
    assert job.name == "demo-decoder-topk" and job.job_type == "default"


def test_sweep_jobs_named_after_the_swept_keys_with_file_names_for_paths():
    job = JobInfo(Path("m/0"), overrides=["layers=decoder", "model.checkpoint=/ckpts/iter_4000.pth", "image=x.png"],
                  sweep_dir=Path("multirun/2026-11-25/10-00-00"), swept=["layers", "model.checkpoint"])
    assert job.name == "layers=decoder,model.checkpoint=iter_4000.pth"
    assert job.job_type == "layers,model.checkpoint"
    assert job.group == "sweep-multirun-2026-11-25-10-00-00"


def test_quoted_paths_lose_their_quotes():
    job = JobInfo(Path("."), overrides=["image='/data/x.png'", 'model.checkpoint="a b.pth"'])
    assert job.name == "image=x.png,model.checkpoint=a b.pth"


def test_swept_keys_read_from_multirun_yaml(tmp_path):
    (tmp_path / "multirun.yaml").write_text(
        "hydra:\n  overrides:\n    task:\n    - layers=decoder,backbone\n    - image=x.png\n"
        "    - model.checkpoint=glob(*.pth)\n    - reduction=range(1,3)\n")
    assert swept_keys(tmp_path) == ["layers", "model.checkpoint", "reduction"]
    assert swept_keys(tmp_path / "nowhere") == []
