"""heimbuero: a self-hosted virtual office server for home-office service providers."""

__version__ = "0.1.0"
