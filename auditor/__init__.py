"""auditor: adversarial occlusion and bias auditing for PyTorch image classifiers."""

__version__ = "0.1.0"
