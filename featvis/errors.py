"""Errors a user can fix. Each message is one line: what is wrong and how to fix it.

The CLI prints these without a traceback (set FEATVIS_DEBUG=1 to see one).
"""

import os


class FeatvisError(Exception):
    """Base class of every error featvis reports to the user in one line."""


class ConfigError(FeatvisError):
    """A config value is missing, unknown or out of range."""


class InputError(FeatvisError):
    """An image or ground-truth mask cannot be used."""


class ForwardError(FeatvisError, RuntimeError):
    """The model's forward pass failed on an image for a reason featvis cannot name (pipeline.forward_errors).

    A RuntimeError too, as most such failures are in torch: code that catches those still catches it.
    """


class CheckpointError(FeatvisError):
    """A checkpoint cannot be found, downloaded or loaded."""


class LayerNotFoundError(FeatvisError):
    """A requested layer name or pattern matches no module of the model."""


class SkippedImagesError(FeatvisError):
    """The job ran, but some images could not be used: their results are missing."""

    exit_code = 3  # tells "done, with images skipped" apart from a failed job (1)

    def __init__(self, message: str, result: object = None) -> None:
        super().__init__(message)
        self.result = result  # what the job did with the other images (a JobResult), for its result file


class FittedOnlyError(FeatvisError):
    """A shard fitted its slice's part of a colour scale over the whole split and drew nothing yet: the
    other shards' parts are not all in (featvis.pipeline.fits). Launching the same sweep again draws."""

    exit_code = 4  # not failed, not done: launch the same sweep again


class ReductionError(FeatvisError):
    """A reduction cannot be applied: a missing option, or a layer it does not fit."""


class BackendError(FeatvisError, RuntimeError):
    """A backend could not finish what the job logged (its W&B worker died, ...)."""


def env_number(name: str, default: float) -> float:
    """A non-negative number from environment variable `name` (`default` when unset); ConfigError otherwise."""
    text = os.environ.get(name)
    if text is None or not text.strip():
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 0 or value == float("inf"):
        raise ConfigError(f"{name}={text!r} is not a number >= 0: set it to one (default {default:g}) or unset it")
    return value
