"""Experiments that produce committed results (CSV + PNG), one command each."""
