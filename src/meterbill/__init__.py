"""meterbill: self-hosted billing for SaaS products."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("meterbill")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
