"""Raw exports → bronze → silver → gold Delta tables."""
