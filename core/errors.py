"""User-facing errors. Every error a user can cause is a `CarmorphError` with an actionable message."""

from __future__ import annotations


class CarmorphError(Exception):
    """Base class for errors caused by user input or set-up; the message is shown to the user."""


class ImageError(CarmorphError):
    """The input is not a usable image (empty, not an image, truncated, too large)."""


class BundleError(CarmorphError):
    """An artifact bundle is missing, incomplete, corrupted or from an unsupported schema."""


class WeightsNotFoundError(CarmorphError):
    """Pretrained weights are needed but not available offline."""


class BackendUnavailableError(CarmorphError):
    """A requested segmentation backend cannot be used on this installation."""
