"""nn.Modules of the framework (no Lightning): temporal layers and blocks, UNets, decoders, text encoders."""
