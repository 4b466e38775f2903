"""Synthetic shop data: a catalog and behaviour events with labelled defects, as raw exports."""
