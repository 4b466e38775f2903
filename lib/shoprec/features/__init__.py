"""Silver → gold: interactions, item features, user profiles, sequences and training examples."""
