"""Ray Serve deployments: inference and the FastAPI ingress."""
