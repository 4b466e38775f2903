"""Batch scoring: candidates for every user, the ranker in a pandas UDF, business rules, MERGE."""
