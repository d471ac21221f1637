"""Data: datasets and batches, the synthetic tasks, classification archives (UCR/UEA), series and panels."""
