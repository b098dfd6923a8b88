"""bulkdm: resumable, rate-safe bulk X direct messages through hosted DM APIs."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
