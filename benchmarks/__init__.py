"""Leaderboard, paper experiments and performance benchmarks (scripts; no library code)."""
