"""llm-torch: build and train large language models with PyTorch Lightning."""

__version__ = "0.1.0"
