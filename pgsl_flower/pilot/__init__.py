"""Cross-site pilots: credentials for a TLS + authenticated Flower deployment.

See ``docs/pilot.md`` for the runbook. ``python -m pgsl_flower.pilot credentials``
writes the CA, the SuperLink's certificate and one key pair per site.
"""
