"""Real datasets, augmentation (DSA, ZCA) and the distilled-set file format."""
