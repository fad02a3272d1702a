"""From raw text to cached token files and training windows."""
