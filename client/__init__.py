"""mri-classify: a command-line client of the batch classifier's public HTTP API.

It talks HTTP only (requests) and imports nothing from the service's own packages, so it can
be copied to, or installed on, any machine that reaches the service.
"""
__version__ = "0.1.0"
