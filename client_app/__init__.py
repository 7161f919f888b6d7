"""The Flower ClientApp: local SSL training of the backbone on a device's own data."""
