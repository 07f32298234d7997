"""rudder: a Kubernetes operator that reconciles HelmRelease resources the Helm 4 way."""

__version__ = "0.1.0"
