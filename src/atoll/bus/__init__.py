"""Messages between the conductor and computes over each cell's transport."""
