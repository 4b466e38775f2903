"""shoprec: raw shop behaviour and catalog in, per-user recommendations from a fine-tuned transformer out."""

__version__ = "0.1.0"
