"""The classifier: loading, device and precision, preprocessing, optimised forward passes, results."""
