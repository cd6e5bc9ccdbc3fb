"""x402-reseller: resell an x402-paid upstream API at the operator's price."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("x402-reseller")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0+unknown"
