"""Loading models from any supported URI, checksums, model introspection and the demo trainer."""
