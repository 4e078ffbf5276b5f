"""Time-reversal samplers for keyframe inbetweening with an image-to-video model (GI, TRF, ViBiD, MPD)."""
