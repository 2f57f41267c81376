"""Developer tools: set-up and test script (dev.sh), packers of the shipped data files."""
