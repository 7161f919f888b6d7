"""Data sources (Fashion-MNIST, digits, a device's own image folder) and partitioning."""
