"""Shared helpers: OmegaConf resolvers, media writers, local weight loading."""
