"""Training, evaluation and data loading for the five-model brain-MRI classifier."""
