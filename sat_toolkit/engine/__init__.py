"""The training engine: Hugging Face accelerate's canonical loop around SAT's inner attack."""
