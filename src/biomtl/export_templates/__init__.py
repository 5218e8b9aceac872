"""Files that ``biomtl export`` copies into an exported model folder as they are (no biomtl import inside)."""
