"""MongoDB access: one module per collection, the only code that builds queries."""
