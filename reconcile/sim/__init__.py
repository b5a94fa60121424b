"""The partner-API simulator: a WSGI app over SQLite that enforces the partner API's rules.

``create_app`` builds it, ``SimTransport`` runs it in-process for httpx, ``serve`` runs it on
loopback; ``admin`` holds the ``/_sim/`` operations (sign the agreement, faults, limits, reset).
"""
