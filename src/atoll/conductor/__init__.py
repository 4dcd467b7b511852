"""The conductor: durable workflows for every multi-step operation."""
