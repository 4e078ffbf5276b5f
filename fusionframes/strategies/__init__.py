"""Lightning strategies of the framework."""
