"""LightningModules, one per trainable stage; they own losses, optimisers and logging."""
