"""featvis's visualization backends, registered in MMEngine's VISBACKENDS registry.

They implement featvis.backends.base.FeatvisBackend, MMEngine's BaseVisBackend plus what
featvis adds (`add_panel`, `start`, `close(failed)`, `picture_format`), so MMEngine's own
backends (LocalVisBackend, TensorboardVisBackend, MLflowVisBackend, ...) plug in beside
them with one config file: the visualizer wraps those (featvis.backends.adapter).

The package itself imports nothing: featvis.backends.visualizer imports (and so
registers) the backends, and the W&B worker process (featvis.backends.wandb_child; its client
wandb_worker, and wandb_pool, which worker a job uses) starts without MMEngine.
"""
