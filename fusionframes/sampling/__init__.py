"""Training-free samplers over a trained keyframe model: FVDM per-frame timestep schedules and ZeroSmooth."""
