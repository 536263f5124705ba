"""Helpers the tests share: record fixtures, process meshes, subprocess scripts, the sans-IO harness."""
