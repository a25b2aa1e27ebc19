"""xmodal: physics-based characterization of cross-modal bias in multimodal models (the CLI)."""

__version__ = "0.1.0"
