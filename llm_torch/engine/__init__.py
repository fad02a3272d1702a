"""The training engine: LightningModule, callbacks and CLI wiring."""
