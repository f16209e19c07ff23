"""Planning and the lab: acquisition, the lab sheet, the measurement store and bundle updates."""
