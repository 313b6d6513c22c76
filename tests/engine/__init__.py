"""The data plane on the wire: raw-socket tests of the engine, both directions."""
