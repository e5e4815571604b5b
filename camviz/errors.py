"""Errors camviz raises. Every one is a :class:`CamvizError` with a message that says what to do.

Example:
    >>> import camviz
    >>> try:
    ...     camviz.load_model("no-such-model")
    ... except camviz.CamvizError as err:
    ...     print(type(err).__name__)
    UnknownModel
"""

from __future__ import annotations


class CamvizError(Exception):
    """Base class of every error camviz raises on purpose."""


class NotAGapNetwork(CamvizError):
    """The model is not conv features -> global pooling -> one linear layer, so no map is exact."""


class NotExact(CamvizError):
    """A pass produced maps whose pooled value plus bias does not give the logits."""


class UnknownModel(CamvizError):
    """No model of that name is known to camviz or torchvision."""


class WeightsUnavailable(CamvizError):
    """Pretrained weights could not be found locally nor downloaded."""


class MissingExtra(CamvizError):
    """An optional dependency is not installed; the message gives the pip command."""


class ImageError(CamvizError):
    """An image file is missing, corrupt, not an image, or unusable by the network."""


class DatasetError(CamvizError):
    """A dataset folder or its metadata is missing, malformed or points outside its root."""


class UnsafePath(DatasetError):
    """A path in untrusted metadata escapes the folder it must stay under."""
