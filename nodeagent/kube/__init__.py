"""Talking to Kubernetes: a small requests-based client, node labels, RuntimeClasses, Leases, Events."""
