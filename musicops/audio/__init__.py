"""Audio I/O and measurements shared by datasets, generation and evaluation."""
