"""The served lists' own layer: candidates, ranker and rules, shared by scoring and evaluation."""
