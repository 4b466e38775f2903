"""Batch scoring: candidates for every user, the ranker in an Arrow UDF, business rules, MERGE."""
