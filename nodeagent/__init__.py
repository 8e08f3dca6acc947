"""nodeagent: make Kubernetes nodes able to run sandboxed pods (gVisor, Kata)."""

__version__ = "0.1.0"
