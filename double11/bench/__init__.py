"""`double11 bench`: the festival-peak benchmark (run by hand, never by CI)."""
