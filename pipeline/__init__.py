"""The batch-scoring job: options, launch checks, graph, run record and entry point."""
