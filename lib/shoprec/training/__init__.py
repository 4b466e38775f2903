"""Fine-tuning: Delta training data → Petastorm → PyTorch, distributed with Horovod."""
