"""katpilot's trainer: dual-regime data (`trainer.data`, serving stack only), then the torch stages."""
