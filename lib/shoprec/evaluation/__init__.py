"""Offline evaluation: the recommendations contract, retrieval, metrics, baselines, report."""
