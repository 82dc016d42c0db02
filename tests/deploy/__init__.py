"""Deployment tests: static checks of Dockerfile, compose.yaml and deploy/k8s, and real containers.

compose_spec.json is the Compose specification's JSON schema (Apache-2.0), as shipped in the
docker-compose 1.29.2 package on PyPI (compose/config/compose_spec.json); Docker Compose v2
reads a superset of it, so a file valid here is valid for both.
"""
