"""The scoring contract without Beam: the value rule, validation, prediction with the exact
failure search, reason codes, the output columns, and the decisions made once before scoring.

Plain classes and functions over Arrow record batches: the batch job's DoFns (transforms) and
the online service (service) call the same code, and its tests need no pipeline.
"""
