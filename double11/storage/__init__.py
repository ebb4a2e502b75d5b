"""Durability: the command log (group commit) and snapshots."""
