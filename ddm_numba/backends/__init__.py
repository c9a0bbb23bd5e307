"""Backends: the same primitives (loss+gradient, simulation) for each device. CPU: ``cpu``."""
