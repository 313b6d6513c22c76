"""Example plugins (docs/plugins.md)."""
